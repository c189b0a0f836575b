/* buf.c - see buf.h. */
#include "buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"

int kv_buf_reserve(void *pptr, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return KV_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / size) return kv_errorf(KV_ENOMEM, "out of memory: %zu elements of %zu bytes", need, size);
        c *= 2;
    }
    /* The caller's pointer is copied out and back as bytes: it may be any
     * T *, and reading it through a void ** would break aliasing rules. */
    void *p;
    memcpy(&p, pptr, sizeof p);
    void *q = realloc(p, c * size);
    if (!q) return kv_errorf(KV_ENOMEM, "out of memory for %zu elements of %zu bytes", c, size);
    memcpy(pptr, &q, sizeof q);
    *cap = c;
    return KV_OK;
}
