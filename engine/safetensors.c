/* safetensors.c - see safetensors.h. */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "filemap.h"
#include "kv_error.h"

/* Integers JSON carries exactly (doubles up to 2^53). */
#define ST_MAX_INT 9007199254740992.0

struct kv_safetensors {
    int n_files;
    char **paths;       /* [n_files] */
    kv_filemap *maps;   /* [n_files] */
    kv_st_tensor *t;    /* [n] sorted by name */
    int64_t n;
};

const char *kv_st_dtype_name(kv_dtype t) {
    return t == KV_F32 ? "F32" : t == KV_F16 ? "F16" : t == KV_BF16 ? "BF16" : "?";
}

/* The dtypes safetensors defines that kvbench does not convert, so that
 * they are named as unsupported rather than unknown. */
static int st_known_other_dtype(const char *s) {
    static const char *const other[] = {"F64", "I64", "U64", "I32", "U32", "I16", "U16", "I8", "U8",
                                        "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        if (!strcmp(s, other[i])) return 1;
    return 0;
}

static int st_dtype(const char *path, const char *name, const cJSON *v, kv_dtype *t) {
    if (!cJSON_IsString(v))
        return kv_errorf(KV_EFORMAT, "%s: tensor '%.200s': expected \"dtype\" to be a string", path, name);
    const char *s = v->valuestring;
    if (!strcmp(s, "F32")) *t = KV_F32;
    else if (!strcmp(s, "F16")) *t = KV_F16;
    else if (!strcmp(s, "BF16")) *t = KV_BF16;
    else if (st_known_other_dtype(s))
        return kv_errorf(KV_EUNSUPPORTED, "%s: tensor '%.200s': dtype %s is not supported (expected F32, F16 or BF16)",
                         path, name, s);
    else
        return kv_errorf(KV_EFORMAT, "%s: tensor '%.200s': unknown dtype '%.40s' (expected F32, F16 or BF16)", path,
                         name, s);
    return KV_OK;
}

/* A JSON number that is a whole number in [0, 2^53]. */
static int st_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= ST_MAX_INT) || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

/* "shape": dimensions, and their product without overflow. */
static int st_shape(const char *path, const char *name, const cJSON *v, kv_st_tensor *t) {
    int nd = cJSON_GetArraySize(v);
    if (!cJSON_IsArray(v) || nd > KV_ST_MAX_DIMS)
        return kv_errorf(KV_EFORMAT, "%s: tensor '%.200s': expected \"shape\" to be an array of at most %d sizes",
                         path, name, KV_ST_MAX_DIMS);
    t->n_dims = nd;
    t->n_elems = 1;
    int d = 0;
    for (const cJSON *e = v->child; e; e = e->next, d++) {
        uint64_t s;
        if (!st_uint(e, &s) || s > (uint64_t)INT64_MAX)
            return kv_errorf(KV_EFORMAT, "%s: tensor '%.200s': shape[%d]: expected a size >= 0", path, name, d);
        if (s && (uint64_t)t->n_elems > (uint64_t)INT64_MAX / 4 / s)
            return kv_errorf(KV_EFORMAT, "%s: tensor '%.200s': shape overflows 64 bits", path, name);
        t->shape[d] = (int64_t)s;
        t->n_elems *= (int64_t)s;
    }
    return KV_OK;
}

/* "data_offsets": [begin, end] within the data, holding exactly the shape. */
static int st_offsets(const char *path, const char *name, const cJSON *v, uint64_t data_size, kv_st_tensor *t) {
    uint64_t b, e;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || !st_uint(v->child, &b) || !st_uint(v->child->next, &e))
        return kv_errorf(KV_EFORMAT, "%s: tensor '%.200s': expected \"data_offsets\" to be [begin, end]", path, name);
    if (b > e || e > data_size)
        return kv_errorf(KV_EFORMAT,
                         "%s: tensor '%.200s': data_offsets [%llu, %llu] out of range: expected begin <= end <= %llu "
                         "(the data's size)",
                         path, name, (unsigned long long)b, (unsigned long long)e, (unsigned long long)data_size);
    uint64_t want = (uint64_t)t->n_elems * (t->type == KV_F32 ? 4u : 2u);
    if (e - b != want)
        return kv_errorf(KV_EFORMAT,
                         "%s: tensor '%.200s': data_offsets [%llu, %llu] hold %llu bytes, but %s of %lld values needs "
                         "%llu",
                         path, name, (unsigned long long)b, (unsigned long long)e, (unsigned long long)(e - b),
                         kv_st_dtype_name(t->type), (long long)t->n_elems, (unsigned long long)want);
    t->offset = b;
    t->n_bytes = e - b;
    return KV_OK;
}

static int st_entry(const char *path, const cJSON *e, uint64_t data_size, kv_st_tensor *t) {
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return kv_errorf(KV_EFORMAT, "%s: tensor '%.200s': expected an object {dtype, shape, data_offsets}", path, name);
    int rc;
    if ((rc = st_dtype(path, name, cJSON_GetObjectItemCaseSensitive(e, "dtype"), &t->type)) ||
        (rc = st_shape(path, name, cJSON_GetObjectItemCaseSensitive(e, "shape"), t)) ||
        (rc = st_offsets(path, name, cJSON_GetObjectItemCaseSensitive(e, "data_offsets"), data_size, t)))
        return rc;
    if (!(t->name = strdup(name))) return kv_errorf(KV_ENOMEM, "out of memory");
    return KV_OK;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const kv_st_tensor *)a)->name, ((const kv_st_tensor *)b)->name);
}

static int by_offset(const void *a, const void *b) {
    const kv_st_tensor *x = *(const kv_st_tensor *const *)a, *y = *(const kv_st_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->n_bytes < y->n_bytes ? -1 : x->n_bytes > y->n_bytes;
}

/* The reference implementation's rule: the tensors tile the data exactly,
 * so no byte is shared or left over (no polyglot files). */
static int st_coverage(const char *path, kv_st_tensor *t, int64_t n, uint64_t data_size) {
    kv_st_tensor **o = malloc(((size_t)n + 1) * sizeof *o);
    if (!o) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) o[i] = &t[i];
    qsort(o, (size_t)n, sizeof *o, by_offset);
    uint64_t at = 0;
    int rc = KV_OK;
    for (int64_t i = 0; i < n && !rc; i++) {
        if (o[i]->offset < at)
            rc = kv_errorf(KV_EFORMAT, "%s: tensor '%.200s': data_offsets begin at %llu, inside tensor '%.200s' (which "
                                       "ends at %llu): expected tensors not to overlap",
                           path, o[i]->name, (unsigned long long)o[i]->offset, o[i - 1]->name, (unsigned long long)at);
        else if (o[i]->offset > at)
            rc = kv_errorf(KV_EFORMAT, "%s: tensor '%.200s': data_offsets begin at %llu, leaving bytes %llu..%llu of the "
                                       "data unused: expected tensors to follow one another",
                           path, o[i]->name, (unsigned long long)o[i]->offset, (unsigned long long)at,
                           (unsigned long long)o[i]->offset);
        at = o[i]->offset + o[i]->n_bytes;
    }
    if (!rc && at != data_size)
        rc = kv_errorf(KV_EFORMAT, "%s: the tensors end at data byte %llu but the data holds %llu bytes", path,
                       (unsigned long long)at, (unsigned long long)data_size);
    free(o);
    return rc;
}

void kv_st_tensors_free(kv_st_tensor *t, int64_t n) {
    for (int64_t i = 0; t && i < n; i++) free(t[i].name);
    free(t);
}

/* The header: an 8-byte length, then that many bytes of one JSON object
 * (spaces may pad it, nothing else may follow). */
static int st_header(const char *path, const uint8_t *buf, size_t size, cJSON **root, uint64_t *hlen) {
    if (size < 8)
        return kv_errorf(KV_EFORMAT, "%s: %zu bytes: expected at least the 8-byte header length", path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
    if (n < 2 || n > KV_ST_MAX_HEADER || n > size - 8)
        return kv_errorf(KV_EFORMAT, "%s: offset 0: header length %llu: expected 2..%llu and at most the %zu bytes "
                                     "after it",
                         path, (unsigned long long)n, KV_ST_MAX_HEADER, size - 8);
    const char *js = (const char *)buf + 8, *end = NULL;
    cJSON *r = cJSON_ParseWithLengthOpts(js, (size_t)n, &end, 0);
    if (!r || !cJSON_IsObject(r)) {
        const char *at = r ? js : cJSON_GetErrorPtr();
        size_t off = at && at >= js && at <= js + n ? (size_t)(at - js) : 0;
        cJSON_Delete(r);
        return kv_errorf(KV_EFORMAT, "%s: offset %zu: expected the header to be a JSON object", path, 8 + off);
    }
    for (const char *p = end; p && p < js + n; p++)
        if (*p != ' ' && *p != '\0') {
            cJSON_Delete(r);
            return kv_errorf(KV_EFORMAT, "%s: offset %zu: expected only padding after the header's JSON object", path,
                             (size_t)(8 + (p - js)));
        }
    *root = r;
    *hlen = n;
    return KV_OK;
}

int kv_st_parse(const char *path, const uint8_t *buf, size_t size, kv_st_tensor **out, int64_t *n_out) {
    *out = NULL;
    *n_out = 0;
    cJSON *root = NULL;
    uint64_t hlen = 0;
    int rc = st_header(path, buf, size, &root, &hlen);
    if (rc) return rc;
    const uint64_t data_size = size - 8 - hlen;
    int n = cJSON_GetArraySize(root);
    kv_st_tensor *t = calloc((size_t)n + 1, sizeof *t);
    int64_t k = 0;
    if (!t) rc = kv_errorf(KV_ENOMEM, "out of memory");
    for (const cJSON *e = root->child; e && !rc; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) continue; /* free-form strings: nothing a converter needs */
        if (!(rc = st_entry(path, e, data_size, &t[k]))) {
            t[k].data = buf + 8 + hlen + t[k].offset;
            t[k].file = path;
            k++;
        }
    }
    cJSON_Delete(root);
    if (!rc) {
        qsort(t, (size_t)k, sizeof *t, by_name);
        for (int64_t i = 1; i < k && !rc; i++)
            if (!strcmp(t[i].name, t[i - 1].name))
                rc = kv_errorf(KV_EFORMAT, "%s: tensor '%.200s' appears twice in the header", path, t[i].name);
    }
    if (!rc) rc = st_coverage(path, t, k, data_size);
    for (int64_t i = 0; i < k; i++) t[i].offset += 8 + hlen; /* data-relative until now */
    if (rc) {
        kv_st_tensors_free(t, k);
        return rc;
    }
    *out = t;
    *n_out = k;
    return KV_OK;
}

/* ------------------------------------------------------------ open */

void kv_safetensors_close(kv_safetensors *s) {
    if (!s) return;
    for (int i = 0; i < s->n_files; i++) {
        kv_filemap_close(&s->maps[i]);
        free(s->paths[i]);
    }
    free(s->paths);
    free(s->maps);
    kv_st_tensors_free(s->t, s->n);
    free(s);
}

/* Maps one more file and appends its tensors. */
static int st_add_file(kv_safetensors *s, const char *path) {
    char **p = realloc(s->paths, (size_t)(s->n_files + 1) * sizeof *p);
    if (p) s->paths = p;
    kv_filemap *m = realloc(s->maps, (size_t)(s->n_files + 1) * sizeof *m);
    if (m) s->maps = m;
    if (!p || !m) return kv_errorf(KV_ENOMEM, "out of memory");
    char *own = strdup(path);
    if (!own) return kv_errorf(KV_ENOMEM, "out of memory");
    int rc = kv_filemap_open(own, KV_FILEMAP_MMAP, "a safetensors header length", &s->maps[s->n_files]);
    if (rc) {
        free(own);
        return rc;
    }
    s->paths[s->n_files++] = own;
    kv_st_tensor *t;
    int64_t n;
    const kv_filemap *fm = &s->maps[s->n_files - 1];
    if ((rc = kv_st_parse(own, fm->data, fm->size, &t, &n))) return rc;
    kv_st_tensor *all = realloc(s->t, (size_t)(s->n + n + 1) * sizeof *all);
    if (!all) {
        kv_st_tensors_free(t, n);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    memcpy(all + s->n, t, (size_t)n * sizeof *t);
    free(t); /* the names moved into all */
    s->t = all;
    s->n += n;
    return KV_OK;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* A shard name the index may give: a plain file name in the folder. */
static int shard_name_ok(const char *s) {
    return *s && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static int st_parse_index(const char *ipath, cJSON **root, const cJSON **wm) {
    kv_filemap f;
    int rc = kv_filemap_open(ipath, KV_FILEMAP_MMAP, "a JSON object", &f);
    if (rc) return rc;
    *root = cJSON_ParseWithLength((const char *)f.data, f.size);
    kv_filemap_close(&f);
    *wm = cJSON_GetObjectItemCaseSensitive(*root, "weight_map");
    if (!cJSON_IsObject(*wm) || !(*wm)->child)
        return kv_errorf(KV_EFORMAT, "%s: expected a JSON object with a non-empty \"weight_map\" of tensor -> file",
                         ipath);
    for (const cJSON *e = (*wm)->child; e; e = e->next)
        if (!cJSON_IsString(e) || !shard_name_ok(e->valuestring))
            return kv_errorf(KV_EFORMAT, "%s: weight_map \"%.200s\": expected a file name in this folder", ipath,
                             e->string);
    return KV_OK;
}

/* Opens every shard the weight map names, once each, in order of first mention. */
static int st_open_shards(kv_safetensors *s, const char *dir, const cJSON *wm) {
    char path[4096];
    for (const cJSON *e = wm->child; e; e = e->next) {
        int seen = 0;
        for (const cJSON *p = wm->child; p != e && !seen; p = p->next) seen = !strcmp(p->valuestring, e->valuestring);
        if (seen) continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->valuestring) >= (int)sizeof path)
            return kv_errorf(KV_EINVAL, "%s: path too long", dir);
        int rc = st_add_file(s, path);
        if (rc) return rc;
    }
    return KV_OK;
}

/* Every tensor in the shard the map names, and nothing the map lacks. */
static int st_check_map(const kv_safetensors *s, const char *ipath, const cJSON *wm) {
    for (int64_t i = 0; i < s->n; i++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(wm, s->t[i].name);
        const char *base = strrchr(s->t[i].file, '/');
        base = base ? base + 1 : s->t[i].file;
        if (!f)
            return kv_errorf(KV_EFORMAT, "%s: tensor '%.200s' is not in the weight_map of %s", s->t[i].file,
                             s->t[i].name, ipath);
        if (strcmp(f->valuestring, base))
            return kv_errorf(KV_EFORMAT, "%s: tensor '%.200s' is in %s, but the weight_map of %s puts it in %s",
                             s->t[i].file, s->t[i].name, base, ipath, f->valuestring);
        if (i > 0 && !strcmp(s->t[i].name, s->t[i - 1].name))
            return kv_errorf(KV_EFORMAT, "%s: tensor '%.200s' is also in %s", s->t[i].file, s->t[i].name,
                             s->t[i - 1].file);
    }
    for (const cJSON *e = wm->child; e; e = e->next)
        if (!kv_safetensors_find(s, e->string))
            return kv_errorf(KV_EFORMAT, "%s: the weight_map puts tensor '%.200s' in %s, which lacks it", ipath,
                             e->string, e->valuestring);
    return KV_OK;
}

static int st_open_sharded(kv_safetensors *s, const char *dir, const char *ipath) {
    cJSON *root = NULL;
    const cJSON *wm;
    int rc = st_parse_index(ipath, &root, &wm);
    if (!rc) rc = st_open_shards(s, dir, wm);
    if (!rc) {
        qsort(s->t, (size_t)s->n, sizeof *s->t, by_name);
        rc = st_check_map(s, ipath, wm);
    }
    cJSON_Delete(root);
    return rc;
}

int kv_safetensors_open(const char *path, kv_safetensors **out) {
    *out = NULL;
    kv_safetensors *s = calloc(1, sizeof *s);
    if (!s) return kv_errorf(KV_ENOMEM, "out of memory");
    char p[4096];
    int rc;
    if (!is_dir(path)) {
        rc = st_add_file(s, path);
    } else if (snprintf(p, sizeof p, "%s/model.safetensors.index.json", path) < (int)sizeof p && file_exists(p)) {
        rc = st_open_sharded(s, path, p);
    } else {
        snprintf(p, sizeof p, "%s/model.safetensors", path);
        rc = file_exists(p) ? st_add_file(s, p)
                            : kv_errorf(KV_ENOTFOUND, "%s: expected model.safetensors or model.safetensors.index.json "
                                                      "in this folder",
                                        path);
    }
    if (rc) {
        kv_safetensors_close(s);
        return rc;
    }
    *out = s;
    return KV_OK;
}

int64_t kv_safetensors_n_tensors(const kv_safetensors *s) { return s->n; }

const kv_st_tensor *kv_safetensors_at(const kv_safetensors *s, int64_t i) {
    return i >= 0 && i < s->n ? &s->t[i] : NULL;
}

const kv_st_tensor *kv_safetensors_find(const kv_safetensors *s, const char *name) {
    kv_st_tensor key = {.name = (char *)name};
    if (s->n == 0) return NULL;
    return bsearch(&key, s->t, (size_t)s->n, sizeof *s->t, by_name);
}
