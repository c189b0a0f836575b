/* fuzz_vocab.c - any bytes, as tokenizer files, load or fail with an
 * error, never crash or read out of bounds; a vocabulary that loads must
 * encode a fixed text of every kind of character and give every token a
 * piece. The first byte chooses the format:
 *   byte % 2 == 0: one file, the rest of the input, read by
 *                  kv_tokenizer_load as in real use: a GGUF vocabulary (by
 *                  its magic) or a llama2.c tokenizer .bin whose vocabulary
 *                  size is the second byte + 1;
 *   byte % 2 == 1: GPT-2's encoder.json and vocab.bpe, the rest of the input
 *                  cut at its first NUL byte (JSON holds none).
 * tokenizer.json is not read by the engine yet: no target for it.
 * Corpus: tests/fuzz/corpus/fuzz_vocab/ (tiny vocabularies of each kind). */
#define _DEFAULT_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "kv_error.h"
#include "tokenizer.h"

/* ASCII, spaces and digits, a control token's spelling, two- to four-byte
 * UTF-8, and bytes that are not UTF-8. */
static const char fz_text[] = "Hello world,  it's 2024!\n\t<|endoftext|><s> caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac "
                              "\xf0\x9f\x98\x80 \xff\xc0\x80 end";

static void fz_exercise(const kv_tokenizer *t) {
    int32_t nv = kv_tokenizer_n_vocab(t), ids[256];
    size_t n, len;
    if (nv < 1) abort();
    int32_t bos = kv_tokenizer_bos(t), eos = kv_tokenizer_eos(t);
    if (bos >= nv || eos >= nv) abort();
    if (kv_tokenizer_encode(t, fz_text, sizeof fz_text - 1, 1, ids, 256, &n) == KV_OK)
        for (size_t i = 0; i < n && i < 256; i++) {
            if (ids[i] < 0 || ids[i] >= nv) abort();
            kv_tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i], &len);
        }
    for (int32_t i = 0; i < nv; i++) {
        size_t plen;
        const char *s = kv_tokenizer_token_text(t, i, &len);
        if (!kv_tokenizer_piece(t, bos, i, &plen)) abort();
        kv_tokenizer_token_score(t, i);
        /* an entry is found by its text (an entry of the same text may answer) */
        if (s && strlen(s) == len) {
            int32_t f = kv_tokenizer_find(t, s);
            size_t flen;
            const char *fs = f >= 0 && f < nv ? kv_tokenizer_token_text(t, f, &flen) : NULL;
            if (!fs || flen != len || memcmp(fs, s, len) != 0) abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    char a[4300], b[4300], dir[4200];
    kv_tokenizer *t = NULL;
    int rc;
    if (data[0] % 2 == 0) {
        fz_path(a, sizeof a, "vocab.bin");
        if (fz_write(a, data + 2, size - 2)) return 0;
        rc = kv_tokenizer_load(a, (int32_t)data[1] + 1, &t);
        unlink(a);
    } else {
        const uint8_t *body = data + 1, *nul = memchr(body, 0, size - 1);
        size_t n_json = nul ? (size_t)(nul - body) : size - 1;
        fz_path(dir, sizeof dir, "gpt2");
        mkdir(dir, 0700);
        snprintf(a, sizeof a, "%s/encoder.json", dir);
        snprintf(b, sizeof b, "%s/vocab.bpe", dir);
        if (fz_write(a, body, n_json) || fz_write(b, nul ? nul + 1 : body, nul ? size - 2 - n_json : 0)) return 0;
        rc = kv_tokenizer_load(dir, 0, &t);
        unlink(a);
        unlink(b);
        rmdir(dir);
    }
    if (rc == KV_OK) fz_exercise(t);
    kv_tokenizer_free(t);
    return 0;
}
