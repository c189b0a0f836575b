/* rouge.h - ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum exactly as Google's
 * rouge-score package computes them (docs METRICS.md), the numbers the
 * papers report.
 *
 * Tokens: the text is lowercased as Python's str.lower would, every run of
 * characters outside [a-z0-9] becomes a separator, and with use_stemmer each
 * token longer than 3 characters is replaced by its Porter stem (NLTK's
 * default mode, porter.h). Texts are UTF-8; every non-ASCII character is a
 * separator except the two whose lowercase is ASCII: U+212A KELVIN SIGN
 * lowercases to "k" (so "\u212Aelvin" is the token "kelvin") and U+0130
 * (capital I with a dot) lowercases to "i" followed by a combining dot,
 * which separates ("\u0130stanbul" gives "i" and "stanbul"). Bytes that are
 * not valid UTF-8 are separators.
 *
 * Scores, each a precision (against the prediction), recall (against the
 * reference) and F = 2PR/(P+R) (0 when P+R is 0), all zero when either text
 * has no tokens:
 * - ROUGE-1/2: n-gram overlap, each n-gram counted min(count in prediction,
 *   count in reference) times; P = overlap / prediction n-grams, R = overlap
 *   / reference n-grams.
 * - ROUGE-L: the longest common subsequence of the two token sequences;
 *   O(n*m/64) time (bit-parallel); memory beyond the tokens: min(n, m) bits
 *   and words, and one word per distinct token.
 * - ROUGE-Lsum: both texts are split into sentences on "\n" only (lines
 *   without tokens drop out). For each reference sentence, the union of the
 *   reference positions in its LCS with every prediction sentence (the LCS
 *   that rouge-score's backtrack picks, ties and all) is taken, and its
 *   tokens are hits while the token is still unused on both sides (counts
 *   over the whole texts). P = hits / prediction tokens, R = hits /
 *   reference tokens. Time O(sum of sentence-pair products / 64); memory
 *   for one sentence pair is their product in bits when that is under
 *   16 MiB, else about 2*sqrt(columns) columns with recomputation.
 * Reported numbers are usually the mean F over samples, times 100. */
#ifndef KV_ROUGE_H
#define KV_ROUGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct kv_rouge_prf {
    double p, r, f; /* precision, recall, F1, each in [0, 1] */
} kv_rouge_prf;

typedef struct kv_rouge_scores {
    kv_rouge_prf r1, r2, rl, rlsum;
} kv_rouge_scores;

/* Scores the prediction (candidate) pred against the reference ref, both
 * NUL-terminated UTF-8; NULL counts as "". Returns KV_OK, or KV_ENOMEM (out
 * is then all zeros) with the message set. */
int kv_rouge_score(const char *pred, const char *ref, int use_stemmer, kv_rouge_scores *out);

/* The same on texts given by length (they may hold NUL bytes, which
 * separate tokens). */
int kv_rouge_score_n(const char *pred, size_t pred_len, const char *ref, size_t ref_len, int use_stemmer,
                     kv_rouge_scores *out);

/* The tokens rouge-score sees in text[0..len), written to *out (malloc'd,
 * NUL-terminated, the caller frees): tokens separated by ' ', sentences by
 * '\n' (only sentences with tokens, no trailing separator). *n_tokens (if
 * not NULL) gets the token count. For checks and debugging. */
int kv_rouge_tokens(const char *text, size_t len, int use_stemmer, char **out, size_t *n_tokens);

/* ---- the LCS machinery, exposed for tests. Token ids must be < n_ids. */

/* Length of the longest common subsequence of a[0..n) and b[0..m). */
int kv_rouge_lcs_length(const uint32_t *a, size_t n, const uint32_t *b, size_t m, uint32_t n_ids, size_t *len);

/* Sets mark[i] = 1 (leaving other entries as they are) for each reference
 * position i of the LCS of ref[0..n) and can[0..m) that rouge-score's
 * _backtrack_norec picks: from the end, a match goes diagonally; otherwise
 * left (drop a candidate token) if LCS(ref[..i], can[..j-1]) > LCS(ref[..i-1],
 * can[..j]), else up. `block` is how many DP columns are held at once
 * (0 = choose: all of them when they fit in 16 MiB); any value gives the same
 * marks. Returns the LCS length in *len if len is not NULL. */
int kv_rouge_lcs_mark(const uint32_t *ref, size_t n, const uint32_t *can, size_t m, uint32_t n_ids, size_t block,
                      unsigned char *mark, size_t *len);

#endif
