/* fuzz_safetensors.c - any bytes, as a Hugging Face safetensors file or
 * shard index, parse or fail with an error, never crash or read out of
 * bounds; what parses must keep the parser's promises (every tensor inside
 * the data, its bytes its shape's, names sorted and distinct). The first
 * byte chooses the input:
 *   byte % 2 == 0: the rest is a .safetensors file, parsed from memory
 *                  (an exact-size copy, so any overread shows) and opened
 *                  from a folder as model.safetensors;
 *   byte % 2 == 1: the rest is a folder's model.safetensors.index.json,
 *                  beside two small valid shards a.safetensors (tensors
 *                  "a.w", "a.b") and b.safetensors ("b.w").
 * Corpus: tests/fuzz/corpus/fuzz_safetensors/ (valid files of each dtype,
 * truncated and inconsistent headers, indexes right and wrong). */
#define _DEFAULT_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "kv_error.h"
#include "safetensors.h"

static void fz_check(const kv_st_tensor *t, int64_t n, const uint8_t *buf, size_t size) {
    for (int64_t i = 0; i < n; i++) {
        const size_t es = t[i].type == KV_F32 ? 4 : 2;
        if (t[i].type != KV_F32 && t[i].type != KV_F16 && t[i].type != KV_BF16) abort();
        if (t[i].n_bytes != (uint64_t)t[i].n_elems * es) abort();
        if (buf && (t[i].data < buf || t[i].offset > size || t[i].n_bytes > size - t[i].offset ||
                    t[i].data != buf + t[i].offset))
            abort();
        if (i > 0 && strcmp(t[i - 1].name, t[i].name) >= 0) abort();
    }
}

/* Two valid shards, written once per process. */
static void fz_shards(const char *dir) {
    static int done;
    if (done) return;
    static const char ha[] = "{\"a.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                             "\"a.b\":{\"dtype\":\"BF16\",\"shape\":[1,1],\"data_offsets\":[8,10]}}      ";
    static const char hb[] = "{\"b.w\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]}}    ";
    uint8_t f[256] = {0};
    char p[4400];
    for (int k = 0; k < 2; k++) {
        const char *h = k ? hb : ha;
        const size_t hl = strlen(h), dl = k ? 6 : 10;
        for (int i = 0; i < 8; i++) f[i] = (uint8_t)((uint64_t)hl >> (8 * i));
        memcpy(f + 8, h, hl);
        memset(f + 8 + hl, 0x3c, dl);
        snprintf(p, sizeof p, "%s/%s", dir, k ? "b.safetensors" : "a.safetensors");
        if (fz_write(p, f, 8 + hl + dl)) abort();
    }
    done = 1;
}

static void fz_open(const char *dir) {
    kv_safetensors *s = NULL;
    if (kv_safetensors_open(dir, &s) == KV_OK) {
        const int64_t n = kv_safetensors_n_tensors(s);
        for (int64_t i = 0; i < n; i++) {
            const kv_st_tensor *t = kv_safetensors_at(s, i);
            fz_check(t, 1, NULL, 0);
            if (kv_safetensors_find(s, t->name) != t) abort();
        }
        kv_safetensors_close(s);
    } else if (s) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char dir[4200], p[4300];
    fz_path(dir, sizeof dir, "."); /* the target's own folder: fz_util removes flat names only */
    const uint8_t *rest = data + 1;
    const size_t n = size - 1;
    if (data[0] % 2 == 0) {
        uint8_t *buf = malloc(n ? n : 1);
        if (!buf) return 0;
        memcpy(buf, rest, n);
        kv_st_tensor *t = NULL;
        int64_t nt = 0;
        if (kv_st_parse("fuzz.safetensors", buf, n, &t, &nt) == KV_OK) fz_check(t, nt, buf, n);
        else if (t || nt) abort();
        kv_st_tensors_free(t, nt);
        free(buf);
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        if (fz_write(p, rest, n)) return 0;
        fz_open(dir);
        unlink(p);
        return 0;
    }
    fz_shards(dir);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    if (fz_write(p, rest, n)) return 0;
    fz_open(dir);
    unlink(p);
    return 0;
}
