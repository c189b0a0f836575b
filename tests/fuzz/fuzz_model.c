/* fuzz_model.c - libFuzzer target: any bytes, written to a file, must load
 * as a model or fail with an error, never crash or read out of bounds.
 * Covers the GGUF parser (and the GGUF model and tokenizer readers above
 * it) and both llama2.c loaders, chosen by the first bytes as in real use.
 * Build and run: scripts/fuzz.sh [seconds] */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "context.h"
#include "kv_error.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/kvbench-fuzz-%d.bin", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    kv_model_params p = kv_model_default_params();
    p.tokenizer_path = "/dev/null"; /* llama2.c inputs: an empty tokenizer file is an error too */
    kv_model *m = NULL;
    if (kv_model_load(path, &p, &m) == KV_OK) {
        /* a model that loads must also run one token */
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
