/* paths.c - see paths.h. */
#define _POSIX_C_SOURCE 200809L
#include "paths.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../base/kv_error.h"
#include "../engine/filemap.h"

#ifndef KVBENCH_DEFAULT_MODELS
#define KVBENCH_DEFAULT_MODELS "../shared/models"
#endif
#ifndef KVBENCH_DEFAULT_DATA
#define KVBENCH_DEFAULT_DATA "../shared/data"
#endif

const char *hx_models_dir(void) {
    const char *e = getenv("KVBENCH_MODELS");
    return e && *e ? e : KVBENCH_DEFAULT_MODELS;
}

const char *hx_data_dir(void) {
    const char *e = getenv("KVBENCH_DATA");
    return e && *e ? e : KVBENCH_DEFAULT_DATA;
}

static const char *resolve(const char *path, const char *dir, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", path);
    if (access(path, F_OK) == 0 || path[0] == '/') return buf;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/%s", dir, path);
    if (access(tmp, F_OK) == 0) snprintf(buf, cap, "%s", tmp);
    return buf;
}

const char *hx_resolve_model(const char *path, char *buf, size_t cap) {
    return resolve(path, hx_models_dir(), buf, cap);
}

const char *hx_resolve_data(const char *path, char *buf, size_t cap) {
    return resolve(path, hx_data_dir(), buf, cap);
}

int hx_weights_mmap(int *weights_mmap) {
    const char *e = getenv("KVBENCH_WEIGHTS");
    kv_filemap_mode mode = KV_FILEMAP_COPY;
    if (e && *e && kv_filemap_mode_parse(e, &mode))
        return kv_errorf(KV_EINVAL, "KVBENCH_WEIGHTS: expected mmap or copy, got '%s'", e);
    *weights_mmap = mode == KV_FILEMAP_MMAP;
    return KV_OK;
}
