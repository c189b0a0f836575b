/* file.c - see file.h. */
#include "file.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_error.h"

/* Reads f to its end into *buf (capacity *cap, one byte kept for the NUL),
 * doubling as it fills, so a file of unknown size (a pipe) reads too. */
static int read_to_end(FILE *f, const char *path, char **buf, size_t *cap, size_t *n) {
    for (;;) {
        *n += fread(*buf + *n, 1, *cap - 1 - *n, f);
        if (ferror(f)) return kv_errorf(KV_EIO, "%s: read failed after %zu bytes: %s", path, *n, strerror(errno));
        if (*n < *cap - 1) return KV_OK; /* a short read without an error is the end */
        if (*cap > SIZE_MAX / 2) return kv_errorf(KV_ENOMEM, "%s: too large to hold in memory", path);
        char *b = realloc(*buf, *cap * 2);
        if (!b) return kv_errorf(KV_ENOMEM, "%s: out of memory after %zu bytes", path, *n);
        *buf = b;
        *cap *= 2;
    }
}

int kv_read_file(const char *path, char **out, size_t *len) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kv_errorf(KV_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = (size_t)1 << 16, n = 0;
    char *buf = malloc(cap);
    int rc = buf ? read_to_end(f, path, &buf, &cap, &n) : kv_errorf(KV_ENOMEM, "%s: out of memory", path);
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    if (len) *len = n;
    *out = buf;
    return KV_OK;
}
