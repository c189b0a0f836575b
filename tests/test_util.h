/* test_util.h - small helpers shared by the C tests: where the shared
 * models are, temporary folders and files. Header-only on purpose: each
 * test is one executable. */
#ifndef KV_TEST_UTIL_H
#define KV_TEST_UTIL_H

#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* $KVBENCH_MODELS/rel, or NULL (and the caller skips) when absent. */
static inline const char *tu_model_path(const char *rel, char *buf, size_t cap) {
    const char *dir = getenv("KVBENCH_MODELS");
    if (!dir || !*dir) dir = "../shared/models";
    snprintf(buf, cap, "%s/%s", dir, rel);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

static inline char *tu_read(const char *path, size_t *len) {
    if (len) *len = 0;
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0;
    if (len) *len = (size_t)n;
    return b;
}

static inline int tu_write(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

/* A fresh folder under /tmp; tu_rmdir removes it and its files. */
static inline char *tu_mkdtemp(char *buf, size_t cap) {
    snprintf(buf, cap, "/tmp/kvbench-test-XXXXXX");
    return mkdtemp(buf);
}

static inline void tu_rmdir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

#endif
