/* fuzz_model.c - any bytes, as a model file, load or fail with an error,
 * never crash or read out of bounds. Covers the GGUF parser with the GGUF
 * model and tokenizer readers above it, and both llama2.c loaders (legacy
 * fp32 and "ak42" Q8), chosen by the first bytes as in real use. A model
 * that loads must also evaluate one token.
 * Corpus: tests/fuzz/corpus/fuzz_model/ (tiny synthetic models of each
 * format and weight type, plus truncated and inconsistent headers). */
#define _DEFAULT_SOURCE
#include <string.h>
#include <unistd.h>

#include "context.h"
#include "fuzz_util.h"
#include "kv_error.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[4200];
    fz_path(path, sizeof path, "model.bin");
    if (fz_write(path, data, size)) return 0;
    kv_model_params p = kv_model_default_params();
    /* A llama2.c checkpoint's tokenizer is a separate file (fuzz_vocab
     * covers those); a GGUF file's own vocabulary is read with it. */
    p.no_tokenizer = !(size >= 4 && memcmp(data, "GGUF", 4) == 0);
    /* Mapped, not copied into huge pages: the same validation, faster runs. */
    p.weights_mmap = 1;
    kv_model *m = NULL;
    if (kv_model_load(path, &p, &m) == KV_OK) {
        kv_ctx_params cp = kv_ctx_default_params();
        cp.n_threads = 1;
        kv_ctx *c;
        if (kv_ctx_new(m, &cp, &c) == KV_OK) {
            int32_t t = 0;
            kv_ctx_eval(c, &t, 1, NULL, 0);
            kv_ctx_free(c);
        }
        kv_model_free(m);
    }
    unlink(path);
    return 0;
}
