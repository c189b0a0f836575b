/* rouge.c - ROUGE-1/2/L/Lsum as rouge-score computes them (see rouge.h).
 *
 * Both texts are tokenized into one vocabulary (token -> dense id), so
 * n-grams are compared as ids. The LCS is the bit-parallel one (Allison and
 * Dix; Hyyro): for a sequence `a` of n tokens held as bits and each token t
 * of the other sequence in turn, the column vector V (bit i-1 clear where
 * LCS(a[..i], b[..j]) - LCS(a[..i-1], b[..j]) = 1) is updated by
 *     U = V & M[t];  V = (V + U) | (V & ~M[t])
 * where M[t] has bit i set where a[i] = t; the LCS is the number of clear
 * bits. Those vertical differences are exactly what rouge-score's backtrack
 * asks at a mismatch ("left if table[i][j-1] > table[i-1][j]" is "the
 * vertical difference at (i, j) is 1"), so ROUGE-Lsum replays it from the
 * columns, held a block at a time from checkpoints when they are many. */
#include "rouge.h"

#include <stdlib.h>
#include <string.h>

#include "../base/buf.h"
#include "../base/hash.h"
#include "../base/kv_error.h"
#include "porter.h"

#define NONE UINT32_MAX
#define FULL_TABLE_WORDS ((size_t)1 << 21) /* 16 MiB of columns are held whole */

static int oom(void) { return kv_errorf(KV_ENOMEM, "rouge: out of memory"); }


/* ------------------------------------------------------------ vocabulary */

typedef struct vocab {
    uint32_t *slot; /* [nslot] id + 1; 0 = empty; nslot a power of two */
    size_t nslot;
    size_t *off;    /* [nid] token bytes in arena */
    uint32_t *len;
    uint64_t *hash;
    size_t nid, capid, cap_len, cap_hash;
    char *arena;
    size_t an, acap;
} vocab;

static void vocab_free(vocab *v) {
    free(v->slot);
    free(v->off);
    free(v->len);
    free(v->hash);
    free(v->arena);
    memset(v, 0, sizeof *v);
}

static int vocab_rehash(vocab *v, size_t nslot) {
    uint32_t *s = calloc(nslot, sizeof *s);
    if (!s) return oom();
    for (size_t id = 0; id < v->nid; id++) {
        size_t i = (size_t)v->hash[id] & (nslot - 1);
        while (s[i]) i = (i + 1) & (nslot - 1);
        s[i] = (uint32_t)id + 1;
    }
    free(v->slot);
    v->slot = s;
    v->nslot = nslot;
    return KV_OK;
}

static int vocab_intern(vocab *v, const char *tok, size_t n, uint32_t *id) {
    if (n > UINT32_MAX) return kv_errorf(KV_EINVAL, "rouge: a token of %zu bytes", n);
    if ((v->nid + 1) * 2 > v->nslot) {
        int rc = vocab_rehash(v, v->nslot ? v->nslot * 2 : 64);
        if (rc) return rc;
    }
    uint64_t h = kv_fnv1a64(KV_FNV1A64_INIT, tok, n);
    size_t i = (size_t)h & (v->nslot - 1);
    while (v->slot[i]) {
        uint32_t k = v->slot[i] - 1;
        if (v->hash[k] == h && v->len[k] == n && memcmp(v->arena + v->off[k], tok, n) == 0) {
            *id = k;
            return KV_OK;
        }
        i = (i + 1) & (v->nslot - 1);
    }
    if (v->nid >= NONE - 1) return kv_errorf(KV_EINVAL, "rouge: too many distinct tokens");
    int rc;
    if ((rc = KV_RESERVE(v->off, v->capid, v->nid + 1)) || (rc = KV_RESERVE(v->len, v->cap_len, v->nid + 1)) ||
        (rc = KV_RESERVE(v->hash, v->cap_hash, v->nid + 1)) || (rc = KV_RESERVE(v->arena, v->acap, v->an + n)))
        return rc;
    memcpy(v->arena + v->an, tok, n);
    v->off[v->nid] = v->an;
    v->len[v->nid] = (uint32_t)n;
    v->hash[v->nid] = h;
    v->an += n;
    v->slot[i] = (uint32_t)v->nid + 1;
    *id = (uint32_t)v->nid++;
    return KV_OK;
}

/* ------------------------------------------------------------ tokenizer */

typedef struct tokseq {
    uint32_t *id; /* [n] token ids */
    size_t n, cap;
    size_t *sent; /* [ns + 1] first token of each sentence, then n */
    size_t ns, scap;
} tokseq;

static void tokseq_free(tokseq *s) {
    free(s->id);
    free(s->sent);
    memset(s, 0, sizeof *s);
}

typedef struct tokenizer {
    vocab *v;
    tokseq *s;
    int stem;
    char *buf; /* the token being read */
    size_t bn, bcap;
    size_t line, last_line; /* last_line: the line of the last token (SIZE_MAX: none yet) */
} tokenizer;

static int tk_push(tokenizer *t, char c) {
    int rc;
    if ((rc = KV_RESERVE(t->buf, t->bcap, t->bn + 2))) return rc; /* + 1 for the stemmer's NUL */
    t->buf[t->bn++] = c;
    return KV_OK;
}

static int tk_flush(tokenizer *t) {
    if (!t->bn) return KV_OK;
    size_t n = t->bn;
    t->bn = 0;
    if (t->stem && n > 3) n = kv_porter_stem(t->buf, n, t->buf);
    uint32_t id = 0;
    int rc = vocab_intern(t->v, t->buf, n, &id);
    if (rc) return rc;
    tokseq *s = t->s;
    if (s->n >= NONE - 1) return kv_errorf(KV_EINVAL, "rouge: too many tokens");
    if (t->line != t->last_line) { /* the first token of a sentence */
        if ((rc = KV_RESERVE(s->sent, s->scap, s->ns + 2))) return rc;
        s->sent[s->ns++] = s->n;
        t->last_line = t->line;
    }
    if ((rc = KV_RESERVE(s->id, s->cap, s->n + 1))) return rc;
    s->id[s->n++] = id;
    s->sent[s->ns] = s->n;
    return KV_OK;
}

/* rouge-score's tokenize(): str.lower(), [^a-z0-9]+ -> " ", split, stem
 * tokens longer than 3. Sentences are the "\n"-separated lines. */
static int tokenize(const char *text, size_t len, int stem, vocab *v, tokseq *s) {
    tokenizer t = {.v = v, .s = s, .stem = stem, .last_line = SIZE_MAX};
    int rc = KV_OK;
    const unsigned char *p = (const unsigned char *)text;
    size_t i = 0;
    while (i < len && rc == KV_OK) {
        unsigned char c = p[i];
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
            rc = tk_push(&t, (char)c);
            i++;
        } else if (c >= 'A' && c <= 'Z') {
            rc = tk_push(&t, (char)(c - 'A' + 'a'));
            i++;
        } else if (c == 0xE2 && i + 2 < len && p[i + 1] == 0x84 && p[i + 2] == 0xAA) {
            rc = tk_push(&t, 'k'); /* U+212A KELVIN SIGN -> k */
            i += 3;
        } else if (c == 0xC4 && i + 1 < len && p[i + 1] == 0xB0) {
            rc = tk_push(&t, 'i'); /* U+0130 -> i + U+0307, which separates */
            if (rc == KV_OK) rc = tk_flush(&t);
            i += 2;
        } else {
            rc = tk_flush(&t);
            if (c == '\n') t.line++;
            i++;
        }
    }
    if (rc == KV_OK) rc = tk_flush(&t);
    free(t.buf);
    return rc;
}

int kv_rouge_tokens(const char *text, size_t len, int use_stemmer, char **out, size_t *n_tokens) {
    if (out) *out = NULL;
    if (n_tokens) *n_tokens = 0;
    if (!out) return kv_errorf(KV_EINVAL, "rouge: no output pointer");
    if (!text) len = 0;
    vocab v = {0};
    tokseq s = {0};
    int rc = tokenize(text, len, use_stemmer, &v, &s);
    size_t bytes = 1;
    for (size_t i = 0; rc == KV_OK && i < s.n; i++) bytes += v.len[s.id[i]] + 1;
    char *o = rc == KV_OK ? malloc(bytes) : NULL;
    if (rc == KV_OK && !o) rc = oom();
    if (rc == KV_OK) {
        size_t w = 0, k = 0;
        for (size_t i = 0; i < s.n; i++) {
            if (i > 0) {
                int new_sent = (k + 1 < s.ns && s.sent[k + 1] == i);
                if (new_sent) k++;
                o[w++] = new_sent ? '\n' : ' ';
            }
            memcpy(o + w, v.arena + v.off[s.id[i]], v.len[s.id[i]]);
            w += v.len[s.id[i]];
        }
        o[w] = 0;
        *out = o;
        if (n_tokens) *n_tokens = s.n;
    }
    vocab_free(&v);
    tokseq_free(&s);
    return rc;
}

/* ------------------------------------------------------------ LCS */

/* Postings of the sequence held as bits (head/next), the match mask and the
 * DP columns, reused across calls. */
typedef struct lcs_ws {
    uint32_t *head; /* [n_ids] first position of each id, NONE if absent */
    uint32_t n_ids;
    uint32_t *next; /* [n] next position of the same id */
    size_t next_cap;
    uint64_t *mask; /* [W], all zero between columns */
    size_t mask_cap;
    uint64_t *cols; /* checkpoints, then a block of columns */
    size_t cols_cap;
} lcs_ws;

static int ws_init(lcs_ws *ws, uint32_t n_ids) {
    memset(ws, 0, sizeof *ws);
    ws->head = malloc((n_ids ? n_ids : 1) * sizeof *ws->head);
    if (!ws->head) return oom();
    for (uint32_t i = 0; i < n_ids; i++) ws->head[i] = NONE;
    ws->n_ids = n_ids;
    return KV_OK;
}

static void ws_free(lcs_ws *ws) {
    free(ws->head);
    free(ws->next);
    free(ws->mask);
    free(ws->cols);
    memset(ws, 0, sizeof *ws);
}

/* Makes a[0..n) the bit sequence: its postings and a zero mask of W words. */
static int ws_post(lcs_ws *ws, const uint32_t *a, size_t n) {
    if (n >= NONE) return kv_errorf(KV_EINVAL, "rouge: sequence of %zu tokens", n);
    size_t W = (n + 63) / 64, old = ws->mask_cap;
    int rc;
    if ((rc = KV_RESERVE(ws->next, ws->next_cap, n))) return rc;
    if ((rc = KV_RESERVE(ws->mask, ws->mask_cap, W))) return rc;
    if (ws->mask_cap > old) memset(ws->mask + old, 0, (ws->mask_cap - old) * sizeof *ws->mask);
    for (size_t i = n; i-- > 0;) {
        ws->next[i] = ws->head[a[i]];
        ws->head[a[i]] = (uint32_t)i;
    }
    return KV_OK;
}

static void ws_unpost(lcs_ws *ws, const uint32_t *a, size_t n) {
    for (size_t i = 0; i < n; i++) ws->head[a[i]] = NONE;
}

/* dst = the column after token t, from src (W words; dst may be src). */
static void col_step(lcs_ws *ws, uint64_t *dst, const uint64_t *src, uint32_t t, size_t W) {
    uint32_t p = ws->head[t];
    if (p == NONE) { /* no match: the column does not change */
        if (dst != src) memcpy(dst, src, W * sizeof *dst);
        return;
    }
    uint64_t *mk = ws->mask;
    for (uint32_t q = p; q != NONE; q = ws->next[q]) mk[q >> 6] |= (uint64_t)1 << (q & 63);
    uint64_t carry = 0;
    for (size_t w = 0; w < W; w++) {
        uint64_t x = src[w], u = x & mk[w];
        uint64_t s = x + u, c1 = s < x;
        uint64_t s2 = s + carry, c2 = s2 < s;
        dst[w] = s2 | (x & ~mk[w]);
        carry = c1 | c2;
    }
    for (uint32_t q = p; q != NONE; q = ws->next[q]) mk[q >> 6] = 0;
}

static size_t popcount64(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (size_t)((x * 0x0101010101010101ull) >> 56);
}

/* LCS length of a[0..n) (posted in ws) and b[0..m). */
static int ws_length(lcs_ws *ws, size_t n, const uint32_t *b, size_t m, size_t *len) {
    *len = 0;
    if (!n || !m) return KV_OK;
    size_t W = (n + 63) / 64;
    int rc;
    if ((rc = KV_RESERVE(ws->cols, ws->cols_cap, W))) return rc;
    uint64_t *v = ws->cols;
    memset(v, 0xff, W * sizeof *v);
    for (size_t j = 0; j < m; j++) col_step(ws, v, v, b[j], W);
    size_t ones = 0;
    for (size_t w = 0; w + 1 < W; w++) ones += popcount64(v[w]);
    uint64_t last = v[W - 1];
    if (n % 64) last &= ((uint64_t)1 << (n % 64)) - 1;
    ones += popcount64(last);
    *len = n - ones;
    return KV_OK;
}

/* rouge-score's backtrack over LCS(ref, can), ref posted in ws: marks the
 * ref positions it takes. Columns j = 0..m of the DP; column b*k is kept
 * for each block b, and a block's columns are recomputed from it when the
 * backtrack (which only moves left and up) reaches it. */
static int ws_mark(lcs_ws *ws, const uint32_t *ref, size_t n, const uint32_t *can, size_t m, size_t block,
                   unsigned char *mark, size_t *len) {
    size_t found = 0;
    if (len) *len = 0;
    if (!n || !m) return KV_OK;
    int any = 0; /* no common token: nothing to mark */
    for (size_t j = 0; j < m && !any; j++) any = ws->head[can[j]] != NONE;
    if (!any) return KV_OK;
    size_t W = (n + 63) / 64, k = block;
    if (!k) {
        if (m <= FULL_TABLE_WORDS / W) {
            k = m;
        } else {
            k = 1;
            while (k * k < m) k++;
        }
    }
    if (k > m) k = m;
    size_t nb = (m + k - 1) / k;
    if (nb + k > SIZE_MAX / sizeof(uint64_t) / W) return oom();
    int rc;
    if ((rc = KV_RESERVE(ws->cols, ws->cols_cap, (nb + k) * W))) return rc;
    uint64_t *ck = ws->cols, *blk = ws->cols + nb * W; /* ck: [nb][W], blk: [k][W] */
    memset(ck, 0xff, W * sizeof *ck);                 /* column 0: all differences 0 */
    for (size_t b = 1; b < nb; b++) {
        uint64_t *c = ck + b * W;
        memcpy(c, c - W, W * sizeof *c);
        for (size_t j = (b - 1) * k; j < b * k; j++) col_step(ws, c, c, can[j], W);
    }
    size_t i = n, j = m;
    for (size_t b = nb; b-- > 0 && i > 0 && j > 0;) {
        size_t lo = b * k; /* this block holds columns lo+1 .. j */
        for (size_t c = lo; c < j; c++)
            col_step(ws, blk + (c - lo) * W, c == lo ? ck + b * W : blk + (c - lo - 1) * W, can[c], W);
        while (i > 0 && j > lo) {
            if (ref[i - 1] == can[j - 1]) {
                mark[i - 1] = 1;
                found++;
                i--;
                j--;
            } else {
                const uint64_t *col = blk + (j - lo - 1) * W;
                int same = (int)((col[(i - 1) >> 6] >> ((i - 1) & 63)) & 1); /* LCS(i-1, j) == LCS(i, j) */
                if (same) i--;
                else j--;
            }
        }
    }
    if (len) *len = found;
    return KV_OK;
}

static int check_ids(const uint32_t *a, size_t n, uint32_t n_ids) {
    for (size_t i = 0; i < n; i++)
        if (a[i] >= n_ids) return kv_errorf(KV_EINVAL, "rouge: token id %u at %zu is not below %u", a[i], i, n_ids);
    return KV_OK;
}

int kv_rouge_lcs_length(const uint32_t *a, size_t n, const uint32_t *b, size_t m, uint32_t n_ids, size_t *len) {
    if (!len) return kv_errorf(KV_EINVAL, "rouge: no output pointer");
    *len = 0;
    int rc;
    if ((rc = check_ids(a, n, n_ids)) || (rc = check_ids(b, m, n_ids))) return rc;
    if (n > m) { /* hold the shorter one as bits */
        const uint32_t *t = a;
        a = b;
        b = t;
        size_t u = n;
        n = m;
        m = u;
    }
    if (!n) return KV_OK;
    lcs_ws ws;
    if ((rc = ws_init(&ws, n_ids)) == KV_OK && (rc = ws_post(&ws, a, n)) == KV_OK) rc = ws_length(&ws, n, b, m, len);
    ws_free(&ws);
    return rc;
}

int kv_rouge_lcs_mark(const uint32_t *ref, size_t n, const uint32_t *can, size_t m, uint32_t n_ids, size_t block,
                      unsigned char *mark, size_t *len) {
    if (len) *len = 0;
    int rc;
    if ((rc = check_ids(ref, n, n_ids)) || (rc = check_ids(can, m, n_ids))) return rc;
    if (!n || !m) return KV_OK;
    if (!mark) return kv_errorf(KV_EINVAL, "rouge: no mark array");
    lcs_ws ws;
    if ((rc = ws_init(&ws, n_ids)) == KV_OK && (rc = ws_post(&ws, ref, n)) == KV_OK)
        rc = ws_mark(&ws, ref, n, can, m, block, mark, len);
    ws_free(&ws);
    return rc;
}

/* ------------------------------------------------------------ scores */

static kv_rouge_prf prf(size_t hits, size_t n_pred, size_t n_ref) {
    kv_rouge_prf s;
    s.p = (double)hits / (double)(n_pred ? n_pred : 1);
    s.r = (double)hits / (double)(n_ref ? n_ref : 1);
    s.f = (s.p + s.r > 0) ? 2.0 * s.p * s.r / (s.p + s.r) : 0.0;
    return s;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Clipped overlap of the bigram multisets. */
static int bigram_overlap(const tokseq *p, const tokseq *r, size_t *overlap) {
    *overlap = 0;
    if (p->n < 2 || r->n < 2) return KV_OK;
    size_t np = p->n - 1, nr = r->n - 1;
    uint64_t *kp = malloc(np * sizeof *kp), *kr = malloc(nr * sizeof *kr);
    if (!kp || !kr) {
        free(kp);
        free(kr);
        return oom();
    }
    for (size_t i = 0; i < np; i++) kp[i] = ((uint64_t)p->id[i] << 32) | p->id[i + 1];
    for (size_t i = 0; i < nr; i++) kr[i] = ((uint64_t)r->id[i] << 32) | r->id[i + 1];
    qsort(kp, np, sizeof *kp, cmp_u64);
    qsort(kr, nr, sizeof *kr, cmp_u64);
    size_t i = 0, j = 0, ov = 0;
    while (i < np && j < nr) {
        if (kp[i] < kr[j]) {
            i++;
        } else if (kp[i] > kr[j]) {
            j++;
        } else {
            uint64_t key = kp[i];
            size_t ci = 0, cj = 0;
            while (i < np && kp[i] == key) i++, ci++;
            while (j < nr && kr[j] == key) j++, cj++;
            ov += ci < cj ? ci : cj;
        }
    }
    free(kp);
    free(kr);
    *overlap = ov;
    return KV_OK;
}

/* ROUGE-Lsum's hits: cnt_p and cnt_r are the token counts of the whole
 * texts, used up as hits are counted. */
static int lsum_hits(const tokseq *p, const tokseq *r, uint32_t n_ids, uint32_t *cnt_p, uint32_t *cnt_r,
                     size_t *hits) {
    *hits = 0;
    size_t longest = 0;
    for (size_t a = 0; a < r->ns; a++)
        if (r->sent[a + 1] - r->sent[a] > longest) longest = r->sent[a + 1] - r->sent[a];
    unsigned char *mark = malloc(longest ? longest : 1);
    if (!mark) return oom();
    lcs_ws ws;
    int rc = ws_init(&ws, n_ids);
    size_t h = 0;
    for (size_t a = 0; rc == KV_OK && a < r->ns; a++) {
        const uint32_t *rs = r->id + r->sent[a];
        size_t rn = r->sent[a + 1] - r->sent[a];
        if ((rc = ws_post(&ws, rs, rn))) break;
        memset(mark, 0, rn);
        for (size_t b = 0; rc == KV_OK && b < p->ns; b++)
            rc = ws_mark(&ws, rs, rn, p->id + p->sent[b], p->sent[b + 1] - p->sent[b], 0, mark, NULL);
        ws_unpost(&ws, rs, rn);
        for (size_t i = 0; rc == KV_OK && i < rn; i++) {
            uint32_t t = rs[i];
            if (mark[i] && cnt_p[t] > 0 && cnt_r[t] > 0) {
                h++;
                cnt_p[t]--;
                cnt_r[t]--;
            }
        }
    }
    ws_free(&ws);
    free(mark);
    *hits = h;
    return rc;
}

static int score(const tokseq *p, const tokseq *r, uint32_t n_ids, kv_rouge_scores *out) {
    if (!p->n || !r->n) return KV_OK; /* all zeros */
    uint32_t *cp = calloc(n_ids, sizeof *cp), *cr = calloc(n_ids, sizeof *cr);
    if (!cp || !cr) {
        free(cp);
        free(cr);
        return oom();
    }
    for (size_t i = 0; i < p->n; i++) cp[p->id[i]]++;
    for (size_t i = 0; i < r->n; i++) cr[r->id[i]]++;
    size_t ov = 0;
    for (uint32_t t = 0; t < n_ids; t++) ov += cp[t] < cr[t] ? cp[t] : cr[t];
    out->r1 = prf(ov, p->n, r->n);

    int rc = bigram_overlap(p, r, &ov);
    if (rc == KV_OK) out->r2 = prf(ov, p->n - 1, r->n - 1);

    if (rc == KV_OK) {
        const tokseq *a = p->n <= r->n ? p : r, *b = p->n <= r->n ? r : p; /* a: the shorter, as bits */
        lcs_ws ws;
        size_t lcs = 0;
        if ((rc = ws_init(&ws, n_ids)) == KV_OK && (rc = ws_post(&ws, a->id, a->n)) == KV_OK)
            rc = ws_length(&ws, a->n, b->id, b->n, &lcs);
        ws_free(&ws);
        if (rc == KV_OK) out->rl = prf(lcs, p->n, r->n);
    }

    size_t hits = 0;
    if (rc == KV_OK) rc = lsum_hits(p, r, n_ids, cp, cr, &hits);
    if (rc == KV_OK) out->rlsum = prf(hits, p->n, r->n);
    free(cp);
    free(cr);
    return rc;
}

int kv_rouge_score_n(const char *pred, size_t pred_len, const char *ref, size_t ref_len, int use_stemmer,
                     kv_rouge_scores *out) {
    if (!out) return kv_errorf(KV_EINVAL, "rouge: no output pointer");
    memset(out, 0, sizeof *out);
    if (!pred) pred_len = 0;
    if (!ref) ref_len = 0;
    vocab v = {0};
    tokseq p = {0}, r = {0};
    int rc = tokenize(pred, pred_len, use_stemmer, &v, &p);
    if (rc == KV_OK) rc = tokenize(ref, ref_len, use_stemmer, &v, &r);
    if (rc == KV_OK) rc = score(&p, &r, (uint32_t)v.nid, out);
    if (rc != KV_OK) memset(out, 0, sizeof *out);
    vocab_free(&v);
    tokseq_free(&p);
    tokseq_free(&r);
    return rc;
}

int kv_rouge_score(const char *pred, const char *ref, int use_stemmer, kv_rouge_scores *out) {
    return kv_rouge_score_n(pred, pred ? strlen(pred) : 0, ref, ref ? strlen(ref) : 0, use_stemmer, out);
}
