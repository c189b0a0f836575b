/* porter.h - the Porter stemmer, as NLTK's PorterStemmer computes it in its
 * default mode (NLTK_EXTENSIONS), which is what Google's rouge-score package
 * uses with use_stemmer=True (docs METRICS.md).
 *
 * That mode is Porter's 1980 algorithm with these departures, all kept here:
 * - a table of irregular forms checked first: skies, sky -> sky; dying -> die;
 *   lying -> lie; tying -> tie; news -> news; innings, inning -> inning;
 *   outings, outing -> outing; cannings, canning -> canning; howe, proceed,
 *   exceed, succeed -> themselves;
 * - words of one or two characters are returned unchanged;
 * - step 1a: a four-letter word in -ies loses only the s (ties -> tie);
 * - step 1b: -ied becomes -ie in a four-letter word (died -> die), else -i
 *   (spied -> spi), and nothing more is done in step 1b;
 * - *o (consonant-vowel-consonant, last not w, x, y) also holds for a
 *   two-letter stem vowel-consonant (ones -> one, owed -> owe);
 * - step 1c: y -> i only after a consonant that is not the first letter
 *   (happy -> happi, enjoy -> enjoy, spy -> spi);
 * - step 2: -alli -> -al is tried first and step 2 then runs again on the
 *   result; bli -> ble replaces abli -> able; -fulli -> -ful and
 *   -logi -> -log (the l kept in the stem for the measure) are added.
 * Every other rule, its order and its "first suffix that matches decides"
 * behaviour are the paper's. */
#ifndef KV_PORTER_H
#define KV_PORTER_H

#include <stddef.h>

/* Stems word[0..len) into out, which has room for len + 1 bytes; writes a
 * NUL after the stem and returns its length (never more than len). The word
 * is ASCII: A-Z are lowercased first; a-z other than a, e, i, o, u and y, and
 * every other byte, are consonants (digits included), as in NLTK. out may be
 * word itself. */
size_t kv_porter_stem(const char *word, size_t len, char *out);

#endif
