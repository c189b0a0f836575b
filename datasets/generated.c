/* generated.c - synthetic retrieval prompts: passkey retrieval (the wording
 * of landmark-attention / LongLoRA, ../shared/data/passkey/TEMPLATE.md) and
 * (needle in a haystack: needle.c). Lengths are in tokens of the model's
 * tokenizer, met by a binary search over the filler's length. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/kv_error.h"
#include "../base/rng.h"
#include "internal.h"

/* ------------------------------------------------------------- passkey */

static const char PK_TASK[] = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
                              "them. I will quiz you about the important information there.";
static const char PK_GARBAGE[] = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
static const char PK_QUESTION[] = "What is the pass key? The pass key is";

/* The prompt with n_garbage characters of filler, the key line after
 * `prefix` of them (the source's character slices of the repeated filler). */
static int passkey_prompt(const char *filler, size_t n_garbage, size_t prefix, int key, ds_str *out) {
    char info[128];
    snprintf(info, sizeof info, "The pass key is %d. Remember it. %d is the pass key.", key, key);
    out->n = 0;
    if (ds_str_adds(out, PK_TASK) || ds_str_adds(out, "\n") || ds_str_add(out, filler, prefix) ||
        ds_str_adds(out, "\n") || ds_str_adds(out, info) || ds_str_adds(out, "\n") ||
        ds_str_add(out, filler, n_garbage - prefix) || ds_str_adds(out, "\n") || ds_str_adds(out, PK_QUESTION))
        return KV_ENOMEM;
    return KV_OK;
}

int ds_make_passkey(const int32_t *lengths, int n_lengths, const int32_t *depths, int n_depths, int n_per_cell,
                    uint64_t seed, ds_count_tokens_fn count, void *user, ds_set *out) {
    memset(out, 0, sizeof *out);
    int rc = KV_OK;
    ds_str filler = {0}, prompt = {0};
    /* Long enough for any length asked: about 4 characters per token is
     * generous for every tokenizer, so grow to 8 per token. */
    int32_t max_len = 0;
    for (int i = 0; i < n_lengths; i++) max_len = lengths[i] > max_len ? lengths[i] : max_len;
    while (rc == KV_OK && filler.n < (size_t)max_len * 8 + 256) {
        if (filler.n) rc = ds_str_adds(&filler, " ");
        if (!rc) rc = ds_str_adds(&filler, PK_GARBAGE);
    }
    uint64_t rng = seed;
    for (int li = 0; li < n_lengths && rc == KV_OK; li++) {
        /* Largest filler (in characters) whose prompt fits the length; the
         * key's digits barely change the count, so measure with key 25000. */
        size_t lo = 0, hi = filler.n;
        while (lo < hi && rc == KV_OK) {
            size_t mid = lo + (hi - lo + 1) / 2;
            if ((rc = passkey_prompt(filler.p, mid, mid / 2, 25000, &prompt))) break;
            int64_t nt = count(user, prompt.p, prompt.n);
            if (nt < 0) { rc = (int)nt; break; }
            if (nt <= lengths[li]) lo = mid;
            else hi = mid - 1;
        }
        for (int di = 0; di < n_depths && rc == KV_OK; di++)
            for (int k = 0; k < n_per_cell && rc == KV_OK; k++) {
                int key = (int)(kv_splitmix64(&rng) % 50000) + 1;
                size_t prefix = lo * (size_t)depths[di] / 100;
                if ((rc = passkey_prompt(filler.p, lo, prefix, key, &prompt))) break;
                char id[64], ref[16];
                snprintf(id, sizeof id, "len%d-depth%d-%d", lengths[li], depths[di], k);
                snprintf(ref, sizeof ref, "%d", key);
                /* the question apart, so that it can be asked after the
                 * context is compressed (template passkey@2 joins them) */
                prompt.n -= strlen(PK_QUESTION);
                prompt.p[prompt.n] = 0;
                const char *names[] = {"context", "question"};
                const char *values[] = {prompt.p, PK_QUESTION};
                if ((rc = ds_set_add(out, id, names, values, 2, ref))) break;
                out->s[out->n - 1].length = lengths[li];
                out->s[out->n - 1].depth_pct = depths[di];
            }
    }
    free(filler.p);
    free(prompt.p);
    if (rc) ds_set_free(out);
    return rc;
}
