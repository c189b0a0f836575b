/* fuzz_tokenizer.c - libFuzzer target: any bytes encode with the byte-level
 * BPE vocabularies (GPT-2's, which has every byte, must decode them back
 * exactly; MPT's, with its added tokens, must encode without error) and
 * with the SentencePiece one, never crashing or reading out of bounds.
 * The vocabularies come from $KVBENCH_MODELS (default ../shared/models).
 * Build and run: scripts/fuzz.sh [seconds] */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "kv_error.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static kv_tokenizer *vocab(const char *name) {
    const char *dir = getenv("KVBENCH_MODELS");
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizers/gguf-vocab/ggml-vocab-%s.gguf", dir && *dir ? dir : "../shared/models", name);
    kv_tokenizer *t;
    if (kv_tokenizer_load(p, 0, &t)) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", kv_last_error());
        abort();
    }
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static kv_tokenizer *gpt2, *mpt, *spm;
    if (!gpt2) {
        gpt2 = vocab("gpt-2");
        mpt = vocab("mpt");
        spm = vocab("llama-spm");
    }
    size_t cap = 2 * size + 8, n;
    int32_t *ids = malloc(cap * sizeof *ids);
    char *back = malloc(size + 1);
    if (!ids || !back) abort();
    if (kv_tokenizer_encode(gpt2, (const char *)data, size, 0, ids, cap, &n) || n > size) abort();
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t pl;
        const char *p = kv_tokenizer_piece(gpt2, i ? ids[i - 1] : -1, ids[i], &pl);
        if (k + pl > size) abort();
        memcpy(back + k, p, pl);
        k += pl;
    }
    /* <|endoftext|> in the input is a control token, which prints as nothing */
    int has_eot = size >= 13 && memmem(data, size, "<|endoftext|>", 13) != NULL;
    if (!has_eot && (k != size || memcmp(back, data, size) != 0)) abort();
    if (kv_tokenizer_encode(mpt, (const char *)data, size, 1, ids, cap, &n)) abort();
    if (kv_tokenizer_encode(spm, (const char *)data, size, 1, ids, cap, &n)) abort();
    free(ids);
    free(back);
    return 0;
}
