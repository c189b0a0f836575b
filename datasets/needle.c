/* needle.c - needle in a haystack over a folder of essays, in two
 * protocols:
 *
 *   kvbench: the essays (sorted, joined by blank lines) cut in characters
 *     so that context + question fit the length in tokens (a binary
 *     search), each needle placed after the last sentence end at or before
 *     its depth.
 *   kvcache-factory: gkamradt's LLMNeedleHaystackTester as KVCache-Factory's
 *     run_needle_in_haystack.py adapts it (commit 485af3c), in tokens: the
 *     essays read whole and concatenated with nothing between them, the
 *     list repeated until it holds the length; encoded without special
 *     tokens and cut to the length (decoded back to text); the needle's
 *     tokens inserted, after the length is reduced by
 *     final_context_length_buffer and the context cut to leave room, at
 *     int(len * depth / 100), moved back to just after the last period
 *     token (the ids of encode(".") and of the piece "."); depth 100
 *     appends. Several needles follow the multi-needle tester: the first at
 *     the depth, the next (100 - depth) / k percent further each.
 *
 * Depths are percentages that may be fractional (the tester's sigmoid
 * spacing). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/file.h"
#include "../base/kv_error.h"
#include "internal.h"

static const char NEEDLE[] = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.";
static const char NEEDLE_Q[] = "What is the best thing to do in San Francisco?";
/* KVCache-Factory's: the same needle between newlines, its own question */
static const char FACTORY_NEEDLE[] =
    "\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n";
static const char FACTORY_Q[] = "The best thing to do in San Francisco is: ";

const char *ds_needle_default(int protocol) { return protocol == DS_NEEDLE_FACTORY ? FACTORY_NEEDLE : NEEDLE; }
static const char NEEDLE_A[] = "eat a sandwich and sit in Dolores Park on a sunny day";

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The names of dir's .txt files, sorted. */
static int list_txt(const char *dir, char ***names, size_t *n) {
    DIR *d = opendir(dir);
    if (!d) return kv_errorf(KV_EIO, "%s: cannot open the haystack folder", dir);
    size_t cap = 0;
    *names = NULL;
    *n = 0;
    int rc = KV_OK;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".txt") != 0) continue;
        if (*n == cap) {
            char **b = realloc(*names, (cap = cap ? cap * 2 : 64) * sizeof *b);
            if (!b) { rc = KV_ENOMEM; break; }
            *names = b;
        }
        if (!((*names)[*n] = strdup(e->d_name))) { rc = KV_ENOMEM; break; }
        (*n)++;
    }
    closedir(d);
    if (!rc) qsort(*names, *n, sizeof **names, cmp_str);
    if (!rc && !*n) rc = kv_errorf(KV_EFORMAT, "%s: no .txt files", dir);
    if (rc == KV_ENOMEM) kv_errorf(KV_ENOMEM, "out of memory");
    return rc;
}

/* The files in order, each appended with `sep` between them. */
static int append_files(const char *dir, char **names, size_t n, const char *sep, ds_str *out) {
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        size_t len;
        char *t;
        int rc = kv_read_file(path, &t, &len);
        if (!rc && !ds_utf8_valid(t, len)) rc = kv_errorf(KV_EFORMAT, "%s: not valid UTF-8", path);
        else if (!rc && ((out->n && sep[0] && ds_str_adds(out, sep)) || ds_str_add(out, t, len)))
            rc = kv_errorf(KV_ENOMEM, "out of memory");
        free(t);
        if (rc) return rc;
    }
    return KV_OK;
}

static void free_names(char **names, size_t n) {
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* ------------------------------------------------- kvbench: characters */

/* The haystack's first n characters with the needles after the last
 * sentence end at or before their depths (see the file comment). */
static int char_context(const ds_str *hay, size_t n, double depth, const char *const *needles, int k, ds_str *out) {
    out->n = 0;
    size_t done = 0;
    double step = (100.0 - depth) / k;
    for (int i = 0; i < k; i++, depth += step) {
        size_t at = (size_t)((double)n * depth / 100.0);
        if (at > n) at = n;
        while (at > done && !(hay->p[at - 1] == '.' && (at == n || hay->p[at] == ' ' || hay->p[at] == '\n'))) at--;
        if (at < done) at = done;
        if (ds_str_add(out, hay->p + done, at - done) || ds_str_adds(out, at ? " " : "") || ds_str_adds(out, needles[i]))
            return kv_errorf(KV_ENOMEM, "out of memory");
        done = at;
    }
    if (ds_str_add(out, hay->p + done, n - done)) return kv_errorf(KV_ENOMEM, "out of memory");
    return KV_OK;
}

/* The characters of the haystack such that context + question fit
 * `length` tokens. */
static int char_fit(const ds_needle_params *p, const ds_str *hay, int32_t length, int64_t q_tokens, ds_str *ctx,
                    size_t *out) {
    /* no tokenizer needs more than 16 characters a token: search below that */
    size_t lo = 0, hi = (size_t)length * 16 < hay->n ? (size_t)length * 16 : hay->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        int rc = char_context(hay, mid, 50, p->needles, p->n_needles, ctx);
        if (rc) return rc;
        int64_t nt = p->count(p->user, ctx->p, ctx->n);
        if (nt < 0) return (int)nt;
        if (nt + q_tokens <= length) lo = mid;
        else hi = mid - 1;
    }
    if (lo == hay->n)
        fprintf(stderr, "kvbench: needle: the haystack (%zu characters) is shorter than %d tokens; using all of it\n",
                hay->n, length);
    *out = lo;
    return KV_OK;
}

/* ------------------------------------------ kvcache-factory: tokens */

typedef struct ids { int32_t *p; int64_t n; } ids;

static int encode(const ds_needle_params *p, const char *text, size_t len, ids *out) {
    free(out->p);
    out->p = NULL;
    out->n = p->tok.encode(p->tok.user, text, len, &out->p);
    return out->n < 0 ? (int)out->n : KV_OK;
}

/* Whether id is a period token: encode(".")'s ids or the piece ".". */
static int is_period(const ids *periods, int32_t id) {
    for (int64_t i = 0; i < periods->n; i++)
        if (periods->p[i] == id) return 1;
    return 0;
}

/* The context of one (length, depth) cell from the haystack's tokens:
 * tokens of hay cut as the tester cuts them, the needles inserted, decoded. */
static int token_context(const ds_needle_params *p, const ids *hay, const ids *needles, const ids *periods,
                         int32_t length, double depth, ds_str *out) {
    int64_t total = 0;
    for (int i = 0; i < p->n_needles; i++) total += needles[i].n;
    int64_t room = (int64_t)length - p->buffer, n = hay->n < length ? hay->n : length;
    if (n + total > room) n = room - total > 0 ? room - total : 0;
    int32_t *t = malloc((size_t)(n + total + 1) * sizeof *t);
    if (!t) return kv_errorf(KV_ENOMEM, "out of memory");
    memcpy(t, hay->p, (size_t)n * sizeof *t);
    double step = (100.0 - depth) / p->n_needles;
    for (int i = 0; i < p->n_needles; i++, depth += step) {
        int64_t at = n;
        if (depth < 100) {
            at = (int64_t)((double)n * (depth / 100.0));
            while (at > 0 && !is_period(periods, t[at - 1])) at--;
        }
        memmove(t + at + needles[i].n, t + at, (size_t)(n - at) * sizeof *t);
        memcpy(t + at, needles[i].p, (size_t)needles[i].n * sizeof *t);
        n += needles[i].n;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = p->tok.decode(p->tok.user, t, n, &text, &len);
    free(t);
    out->n = 0;
    if (!rc && ds_str_add(out, text, len)) rc = kv_errorf(KV_ENOMEM, "out of memory");
    free(text);
    return rc;
}

/* The tester's haystack: the files concatenated as read, the list repeated
 * until it holds the longest length in tokens, then cut to `length` tokens
 * and decoded and encoded again (its encode_and_trim, then insert_needle's
 * encode). */
static int token_haystack(const ds_needle_params *p, char **names, size_t n_names, int32_t length, ids *out) {
    ds_str hay = {0};
    ids all = {0};
    int rc = KV_OK;
    int64_t max_len = 0;
    for (int i = 0; i < p->n_lengths; i++) max_len = p->lengths[i] > max_len ? p->lengths[i] : max_len;
    for (int round = 0; !rc; round++) {
        if ((rc = encode(p, hay.p ? hay.p : "", hay.n, &all)) || all.n >= max_len) break;
        if (round > 1000) { rc = kv_errorf(KV_EFORMAT, "%s: the haystack holds no tokens", p->haystack_dir); break; }
        rc = append_files(p->haystack_dir, names, n_names, "", &hay);
    }
    char *text = NULL;
    size_t len = 0;
    if (!rc && all.n > length) {
        rc = p->tok.decode(p->tok.user, all.p, length, &text, &len);
        if (!rc) rc = encode(p, text, len, out);
    } else if (!rc) {
        rc = encode(p, hay.p ? hay.p : "", hay.n, out);
    }
    free(text);
    free(all.p);
    free(hay.p);
    return rc;
}

/* ------------------------------------------------------------- entry */

static int add_cell(ds_set *out, int32_t length, double depth, const ds_str *ctx, const char *question,
                    const char *answer) {
    char id[64];
    if (depth == floor(depth)) snprintf(id, sizeof id, "len%d-depth%d", length, (int)depth);
    else snprintf(id, sizeof id, "len%d-depth%.3f", length, depth);
    const char *names[] = {"context", "question"};
    const char *values[] = {ctx->p ? ctx->p : "", question};
    int rc = ds_set_add(out, id, names, values, 2, answer);
    if (rc) return rc;
    out->s[out->n - 1].length = length;
    out->s[out->n - 1].depth_pct = (int32_t)lround(depth);
    return KV_OK;
}

static int make_chars(const ds_needle_params *p, const char *question, const char *answer, char **names, size_t nn,
                      ds_set *out) {
    ds_str hay = {0}, ctx = {0};
    int rc = append_files(p->haystack_dir, names, nn, "\n\n", &hay);
    int64_t q_tokens = rc ? 0 : p->count(p->user, question, strlen(question));
    if (q_tokens < 0) rc = (int)q_tokens;
    for (int li = 0; li < p->n_lengths && !rc; li++) {
        size_t n = 0;
        if ((rc = char_fit(p, &hay, p->lengths[li], q_tokens, &ctx, &n))) break;
        for (int di = 0; di < p->n_depths && !rc; di++)
            if (!(rc = char_context(&hay, n, p->depths[di], p->needles, p->n_needles, &ctx)))
                rc = add_cell(out, p->lengths[li], p->depths[di], &ctx, question, answer);
    }
    free(hay.p);
    free(ctx.p);
    return rc;
}

static int make_tokens(const ds_needle_params *p, const char *question, const char *answer, char **names, size_t nn,
                       ds_set *out) {
    if (!p->tok.encode || !p->tok.decode) return kv_errorf(KV_EINVAL, "needle: the kvcache-factory protocol needs a tokenizer");
    ids needles[DS_MAX_NEEDLES] = {{0}}, periods = {0}, hay = {0};
    ds_str ctx = {0};
    int rc = encode(p, ".", 1, &periods);
    if (!rc && p->period_piece >= 0) {
        int32_t *b = realloc(periods.p, (size_t)(periods.n + 1) * sizeof *b);
        if (!b) rc = kv_errorf(KV_ENOMEM, "out of memory");
        else (periods.p = b)[periods.n++] = p->period_piece;
    }
    for (int i = 0; i < p->n_needles && !rc; i++) rc = encode(p, p->needles[i], strlen(p->needles[i]), &needles[i]);
    for (int li = 0; li < p->n_lengths && !rc; li++) {
        if ((rc = token_haystack(p, names, nn, p->lengths[li], &hay))) break;
        for (int di = 0; di < p->n_depths && !rc; di++)
            if (!(rc = token_context(p, &hay, needles, &periods, p->lengths[li], p->depths[di], &ctx)))
                rc = add_cell(out, p->lengths[li], p->depths[di], &ctx, question, answer);
    }
    for (int i = 0; i < p->n_needles; i++) free(needles[i].p);
    free(periods.p);
    free(hay.p);
    free(ctx.p);
    return rc;
}

int ds_make_needle_ext(const ds_needle_params *p, ds_set *out) {
    memset(out, 0, sizeof *out);
    const char *dflt[1] = {ds_needle_default(p->protocol)};
    ds_needle_params q = *p;
    if (q.n_needles <= 0) {
        q.needles = dflt;
        q.n_needles = 1;
    }
    if (q.n_needles > DS_MAX_NEEDLES)
        return kv_errorf(KV_EINVAL, "needle: at most %d needles, got %d", DS_MAX_NEEDLES, q.n_needles);
    const char *question = q.question ? q.question : q.protocol == DS_NEEDLE_FACTORY ? FACTORY_Q : NEEDLE_Q, *answer = q.answer ? q.answer : NEEDLE_A;
    char **names = NULL;
    size_t nn = 0;
    int rc = list_txt(q.haystack_dir, &names, &nn);
    if (!rc) rc = q.protocol == DS_NEEDLE_FACTORY ? make_tokens(&q, question, answer, names, nn, out)
                                                  : make_chars(&q, question, answer, names, nn, out);
    free_names(names, nn);
    if (rc) ds_set_free(out);
    return rc;
}

int ds_make_needle(const char *haystack_dir, const int32_t *lengths, int n_lengths, const int32_t *depths, int n_depths,
                   const char *needle, const char *question, const char *answer, ds_count_tokens_fn count, void *user,
                   ds_set *out) {
    double d[DS_MAX_DEPTHS];
    if (n_depths > DS_MAX_DEPTHS) return kv_errorf(KV_EINVAL, "needle: at most %d depths", DS_MAX_DEPTHS);
    for (int i = 0; i < n_depths; i++) d[i] = depths[i];
    const char *nd[1] = {needle};
    ds_needle_params p = {.haystack_dir = haystack_dir, .lengths = lengths, .n_lengths = n_lengths, .depths = d,
                          .n_depths = n_depths, .needles = nd, .n_needles = needle ? 1 : 0, .question = question,
                          .answer = answer, .protocol = DS_NEEDLE_KVBENCH, .count = count, .user = user,
                          .period_piece = -1};
    return ds_make_needle_ext(&p, out);
}

/* The tester's sigmoid depth spacing: L / (1 + exp(-k (x - x0))) with
 * L = 100, x0 = 50, k = 0.1, rounded to 3 decimals, 0 and 100 kept. */
double ds_needle_sigmoid(double x) {
    if (x == 0 || x == 100) return x;
    return round(100.0 / (1.0 + exp(-0.1 * (x - 50.0))) * 1000.0) / 1000.0;
}

int ds_needle_depths(int intervals, int sigmoid, double *out, int cap) {
    if (intervals < 1 || intervals > cap) return kv_errorf(KV_EINVAL, "needle: depth_intervals: expected 1..%d, got %d", cap, intervals);
    for (int i = 0; i < intervals; i++) {
        /* numpy's linspace(0, 100, n): i * step, the last exactly 100 */
        double x = intervals == 1 ? 0.0 : i == intervals - 1 ? 100.0 : i * (100.0 / (intervals - 1));
        out[i] = sigmoid ? ds_needle_sigmoid(x) : nearbyint(x); /* np.round: halves to even */
    }
    return KV_OK;
}
