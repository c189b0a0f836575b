/* fuzz_tokenizer.c - any bytes, as text, encode with every tokenizer kind
 * the engine has, never crashing or reading out of bounds:
 *   - byte-level BPE from a GGUF vocabulary: GPT-2's (every byte has a
 *     token, so any text must decode back exactly), MPT's (added tokens,
 *     the "mpt" pre-tokenizer) and GPT-NeoX's (lacks some bytes: U+FFFD);
 *   - byte-level BPE from GPT-2's encoder.json + vocab.bpe, which must give
 *     the very ids the GGUF copy of the same vocabulary gives;
 *   - SentencePiece-style BPE from a GGUF vocabulary (Llama's) and from a
 *     llama2.c tokenizer .bin (stories260K's tok512.bin).
 * Every id must be in the vocabulary and have a piece. The vocabularies
 * come from $KVBENCH_MODELS (default ../shared/models).
 * Corpus: tests/fuzz/corpus/fuzz_tokenizer/ (llama.cpp's conformance
 * strings and hand-made tricky texts). */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "kv_error.h"
#include "tokenizer.h"

enum { FZ_GPT2, FZ_GPT2_FILES, FZ_MPT, FZ_NEOX, FZ_SPM, FZ_L2C, FZ_N_TOK };

static kv_tokenizer *fz_tok[FZ_N_TOK];

static kv_tokenizer *fz_load(const char *rel, int32_t vocab_size) {
    const char *dir = getenv("KVBENCH_MODELS");
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir && *dir ? dir : "../shared/models", rel);
    kv_tokenizer *t;
    if (kv_tokenizer_load(p, vocab_size, &t)) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", kv_last_error());
        abort();
    }
    return t;
}

static void fz_load_all(void) {
    fz_tok[FZ_GPT2] = fz_load("tokenizers/gguf-vocab/ggml-vocab-gpt-2.gguf", 0);
    fz_tok[FZ_GPT2_FILES] = fz_load("tokenizers/gpt2", 0);
    fz_tok[FZ_MPT] = fz_load("tokenizers/gguf-vocab/ggml-vocab-mpt.gguf", 0);
    fz_tok[FZ_NEOX] = fz_load("tokenizers/gguf-vocab/ggml-vocab-gpt-neox.gguf", 0);
    fz_tok[FZ_SPM] = fz_load("tokenizers/gguf-vocab/ggml-vocab-llama-spm.gguf", 0);
    fz_tok[FZ_L2C] = fz_load("stories260K/tok512.bin", 512);
}

/* Encodes text with t (growing the buffer if the first is short) and checks
 * every id; returns the ids (caller frees) and their count. */
static int32_t *fz_encode(const kv_tokenizer *t, const uint8_t *text, size_t size, int add_bos, size_t *n) {
    size_t cap = size + 8;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids || kv_tokenizer_encode(t, (const char *)text, size, add_bos, ids, cap, n)) abort();
    if (*n > cap) {
        free(ids);
        cap = *n;
        ids = malloc(cap * sizeof *ids);
        size_t again;
        if (!ids || kv_tokenizer_encode(t, (const char *)text, size, add_bos, ids, cap, &again) || again != *n) abort();
    }
    for (size_t i = 0; i < *n; i++) {
        size_t len;
        if (ids[i] < 0 || ids[i] >= kv_tokenizer_n_vocab(t)) abort();
        if (!kv_tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i], &len)) abort();
    }
    return ids;
}

/* 1 if the pieces of ids[0..n) spell text[0..size) exactly. */
static int fz_decodes_to(const kv_tokenizer *t, const int32_t *ids, size_t n, const uint8_t *text, size_t size) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = kv_tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i], &len);
        if (k + len > size || memcmp(text + k, p, len) != 0) return 0;
        k += len;
    }
    return k == size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fz_tok[0]) fz_load_all();
    size_t n, n_files;
    int32_t *ids = fz_encode(fz_tok[FZ_GPT2], data, size, 0, &n);
    /* Byte-level BPE never makes more tokens than bytes. */
    if (n > size) abort();
    /* <|endoftext|> in the text is a control token, which prints as nothing. */
    int has_eot = size >= 13 && memmem(data, size, "<|endoftext|>", 13) != NULL;
    if (!has_eot && !fz_decodes_to(fz_tok[FZ_GPT2], ids, n, data, size)) abort();
    int32_t *ids2 = fz_encode(fz_tok[FZ_GPT2_FILES], data, size, 0, &n_files);
    if (n_files != n || memcmp(ids, ids2, n * sizeof *ids) != 0) abort();
    free(ids2);
    free(ids);
    for (int k = FZ_MPT; k < FZ_N_TOK; k++) {
        ids = fz_encode(fz_tok[k], data, size, 1, &n);
        free(ids);
    }
    return 0;
}
