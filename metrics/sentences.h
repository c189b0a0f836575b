/* sentences.h - a rule-based English sentence splitter, for the lead-N
 * baseline (the first N sentences of an article as its summary) and for
 * putting one sentence per line before ROUGE-Lsum. A sentence ends at '.',
 * '!' or '?' (with any closing quotes or brackets after it) followed by
 * whitespace and then an uppercase letter, a digit or an opening quote;
 * not after a single capital ("J. Smith"), a common abbreviation (Mr., Dr.,
 * St., Jan., U.S., ...) or inside a number. Line breaks in the text are
 * treated as spaces, except blank lines, which always end a sentence. It is
 * close to, not identical with, NLTK's Punkt that the papers used. */
#ifndef MET_SENTENCES_H
#define MET_SENTENCES_H

#include <stddef.h>

/* Calls fn(user, start, len) for each sentence of text (trimmed, never
 * empty); stops early when fn returns non-zero. Returns the count. */
size_t met_sentences(const char *text, int (*fn)(void *user, const char *s, size_t len), void *user);

#endif
