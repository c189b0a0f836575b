/* gguf.c - GGUF v3 (and v2) reader and writer. See gguf.h.
 *
 * The reader walks the file with a cursor that checks every length against
 * the bytes left before reading, with counts checked against the smallest
 * size their elements can have (so an absurd count fails at once instead
 * of driving a long loop or an overflowing multiplication). */
#define _POSIX_C_SOURCE 200809L
#include "gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filemap.h"
#include "kv_error.h"

#define GGUF_MAX_NAME 64       /* tensor names, per the spec */
#define GGUF_MAX_DEPTH 4       /* nested arrays */
#define GGUF_DEFAULT_ALIGN 32

typedef struct gguf_kv {
    const char *key;      /* into the arena */
    kv_gguf_type type;
    size_t off;           /* file offset of the value (after the type field) */
    kv_gguf_type elem;    /* arrays: element type */
    uint64_t n;           /* arrays: element count */
    size_t data_off;      /* arrays: file offset of the first element */
    uint64_t *str_offs;   /* arrays of strings: offset of each element */
} gguf_kv;

struct kv_gguf {
    char *path;
    kv_filemap fm;      /* the file's bytes (mapped or copied): fm.data [fm.size] */
    uint32_t version;
    uint32_t alignment;
    int64_t n_kv;
    gguf_kv *kvs;
    int64_t n_tensors;
    kv_gguf_tensor *tensors;
    kv_gguf_tensor **by_name; /* sorted by name, for lookup and duplicate checks */
    char *arena;              /* keys and tensor names, NUL-terminated */
    size_t arena_used, arena_cap;
};

/* ------------------------------------------------------------- cursor */

typedef struct cursor {
    const kv_gguf *g;
    size_t off;
} cursor;

static size_t left(const cursor *c) { return c->g->fm.size - c->off; }

static int need(cursor *c, uint64_t n, const char *what) {
    if (n > left(c))
        return kv_errorf(KV_EFORMAT, "%s: offset %zu: expected %s (%llu bytes), but the file ends at offset %zu",
                         c->g->path, c->off, what, (unsigned long long)n, c->g->fm.size);
    return KV_OK;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    int rc = need(c, 4, what);
    if (rc) return rc;
    memcpy(v, c->g->fm.data + c->off, 4);
    c->off += 4;
    return KV_OK;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    int rc = need(c, 8, what);
    if (rc) return rc;
    memcpy(v, c->g->fm.data + c->off, 8);
    c->off += 8;
    return KV_OK;
}

/* A string: u64 length then bytes. */
static int rd_str(cursor *c, size_t *s_off, uint64_t *len, const char *what) {
    size_t at = c->off;
    int rc = rd_u64(c, len, what);
    if (rc) return rc;
    if (*len > left(c))
        return kv_errorf(KV_EFORMAT, "%s: offset %zu: %s has length %llu, but only %zu bytes remain", c->g->path, at,
                         what, (unsigned long long)*len, left(c));
    *s_off = c->off;
    c->off += (size_t)*len;
    return KV_OK;
}

static size_t type_size(kv_gguf_type t) {
    switch (t) {
    case KV_GGUF_U8: case KV_GGUF_I8: case KV_GGUF_BOOL: return 1;
    case KV_GGUF_U16: case KV_GGUF_I16: return 2;
    case KV_GGUF_U32: case KV_GGUF_I32: case KV_GGUF_F32: return 4;
    case KV_GGUF_U64: case KV_GGUF_I64: case KV_GGUF_F64: return 8;
    default: return 0;
    }
}

static int valid_type(uint32_t t) { return t <= KV_GGUF_F64; }

static char *arena_add(kv_gguf *g, const uint8_t *s, size_t n) {
    if (g->arena_used + n + 1 > g->arena_cap) return NULL; /* sized up front */
    char *p = g->arena + g->arena_used;
    memcpy(p, s, n);
    p[n] = 0;
    g->arena_used += n + 1;
    return p;
}

/* Skips (and validates) one value of type t. */
static int skip_value(cursor *c, uint32_t t, int depth, const char *key) {
    size_t at = c->off;
    if (!valid_type(t))
        return kv_errorf(KV_EFORMAT, "%s: offset %zu: key '%s': expected a value type 0..12, got %u", c->g->path,
                         at, key, t);
    if (t == KV_GGUF_STRING) {
        size_t so;
        uint64_t n;
        return rd_str(c, &so, &n, "a string value");
    }
    if (t != KV_GGUF_ARRAY) {
        int rc = need(c, type_size((kv_gguf_type)t), "a scalar value");
        if (rc) return rc;
        c->off += type_size((kv_gguf_type)t);
        return KV_OK;
    }
    if (depth >= GGUF_MAX_DEPTH)
        return kv_errorf(KV_EFORMAT, "%s: offset %zu: key '%s': arrays nested deeper than %d", c->g->path, at, key,
                         GGUF_MAX_DEPTH);
    uint32_t et;
    uint64_t n;
    int rc;
    if ((rc = rd_u32(c, &et, "an array element type")) || (rc = rd_u64(c, &n, "an array length"))) return rc;
    if (!valid_type(et))
        return kv_errorf(KV_EFORMAT, "%s: offset %zu: key '%s': expected an array element type 0..12, got %u",
                         c->g->path, at + 8, key, et);
    size_t min = et == KV_GGUF_STRING ? 8 : et == KV_GGUF_ARRAY ? 12 : type_size((kv_gguf_type)et);
    if (n > left(c) / min)
        return kv_errorf(KV_EFORMAT, "%s: offset %zu: key '%s': array of %llu elements cannot fit in the %zu bytes left",
                         c->g->path, at + 4, key, (unsigned long long)n, left(c));
    if (et != KV_GGUF_STRING && et != KV_GGUF_ARRAY) {
        c->off += (size_t)n * min;
        return KV_OK;
    }
    for (uint64_t i = 0; i < n; i++)
        if ((rc = skip_value(c, et, depth + 1, key))) return rc;
    return KV_OK;
}

/* ------------------------------------------------------------- reader */

void kv_gguf_close(kv_gguf *g) {
    if (!g) return;
    if (g->kvs)
        for (int64_t i = 0; i < g->n_kv; i++) free(g->kvs[i].str_offs);
    free(g->kvs);
    free(g->tensors);
    free(g->by_name);
    free(g->arena);
    kv_filemap_close(&g->fm);
    free(g->path);
    free(g);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(kv_gguf_tensor *const *)a)->name, (*(kv_gguf_tensor *const *)b)->name);
}

static int parse_kvs(kv_gguf *g, cursor *c) {
    for (int64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kvs[i];
        size_t at = c->off, ko;
        uint64_t klen;
        uint32_t t;
        int rc = rd_str(c, &ko, &klen, "a metadata key");
        if (rc) return rc;
        if (klen == 0 || klen > 65535)
            return kv_errorf(KV_EFORMAT, "%s: offset %zu: expected a metadata key of 1..65535 bytes, got %llu", g->path,
                             at, (unsigned long long)klen);
        if (memchr(g->fm.data + ko, 0, (size_t)klen))
            return kv_errorf(KV_EFORMAT, "%s: offset %zu: metadata key contains a NUL byte", g->path, at);
        kv->key = arena_add(g, g->fm.data + ko, (size_t)klen);
        if (!kv->key) return kv_errorf(KV_ENOMEM, "out of memory");
        for (int64_t j = 0; j < i; j++)
            if (strcmp(g->kvs[j].key, kv->key) == 0)
                return kv_errorf(KV_EFORMAT, "%s: offset %zu: duplicate metadata key '%s'", g->path, at, kv->key);
        if ((rc = rd_u32(c, &t, "a metadata value type"))) return rc;
        kv->type = (kv_gguf_type)t;
        kv->off = c->off;
        if (t == KV_GGUF_ARRAY && c->off + 12 <= g->fm.size) {
            memcpy(&kv->elem, g->fm.data + c->off, 4);
            memcpy(&kv->n, g->fm.data + c->off + 4, 8);
            kv->data_off = c->off + 12;
        }
        if ((rc = skip_value(c, t, 0, kv->key))) return rc;
        if (t == KV_GGUF_ARRAY && kv->elem == KV_GGUF_STRING) {
            /* index the strings: element access is O(1) afterwards */
            kv->str_offs = malloc((size_t)(kv->n ? kv->n : 1) * sizeof *kv->str_offs);
            if (!kv->str_offs) return kv_errorf(KV_ENOMEM, "out of memory");
            size_t p = kv->data_off;
            for (uint64_t e = 0; e < kv->n; e++) {
                uint64_t len;
                kv->str_offs[e] = p;
                memcpy(&len, g->fm.data + p, 8);
                p += 8 + (size_t)len;
            }
        }
    }
    return KV_OK;
}

static int parse_tensors(kv_gguf *g, cursor *c) {
    for (int64_t i = 0; i < g->n_tensors; i++) {
        kv_gguf_tensor *t = &g->tensors[i];
        size_t at = c->off, no;
        uint64_t nlen;
        uint32_t nd, type;
        int rc = rd_str(c, &no, &nlen, "a tensor name");
        if (rc) return rc;
        if (nlen == 0 || nlen > GGUF_MAX_NAME || memchr(g->fm.data + no, 0, (size_t)nlen))
            return kv_errorf(KV_EFORMAT, "%s: offset %zu: expected a tensor name of 1..%d bytes, got %llu", g->path, at,
                             GGUF_MAX_NAME, (unsigned long long)nlen);
        t->name = arena_add(g, g->fm.data + no, (size_t)nlen);
        if (!t->name) return kv_errorf(KV_ENOMEM, "out of memory");
        size_t nd_at = c->off;
        if ((rc = rd_u32(c, &nd, "a tensor's dimension count"))) return rc;
        if (nd < 1 || nd > 4)
            return kv_errorf(KV_EFORMAT, "%s: offset %zu: tensor '%s': expected 1..4 dimensions, got %u", g->path,
                             nd_at, t->name, nd);
        t->n_dims = nd;
        uint64_t nel = 1;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            size_t ne_at = c->off;
            if ((rc = rd_u64(c, &t->ne[d], "a tensor dimension"))) return rc;
            if (t->ne[d] == 0 || t->ne[d] > ((uint64_t)1 << 40) || nel > ((uint64_t)1 << 50) / t->ne[d])
                return kv_errorf(KV_EFORMAT, "%s: offset %zu: tensor '%s': dimension %u is %llu (expected 1..2^40, "
                                 "and at most 2^50 elements in all)", g->path, ne_at, t->name, d,
                                 (unsigned long long)t->ne[d]);
            nel *= t->ne[d];
        }
        size_t ty_at = c->off;
        if ((rc = rd_u32(c, &type, "a tensor type"))) return rc;
        if (type != KV_F32 && type != KV_F16 && type != KV_BF16 && type != KV_Q8_0 && type != KV_Q4_0 &&
            !kv_dtype_is_kquant((kv_dtype)type))
            return kv_errorf(KV_EUNSUPPORTED, "%s: offset %zu: tensor '%s': type %u is not supported (supported: F32 0, "
                             "F16 1, Q4_0 2, Q8_0 8, Q2_K 10 .. Q6_K 14, BF16 30)", g->path, ty_at, t->name, type);
        t->type = (kv_dtype)type;
        if (t->ne[0] % (uint64_t)kv_dtype_block_elems(t->type) != 0)
            return kv_errorf(KV_EFORMAT, "%s: offset %zu: tensor '%s': first dimension %llu is not a multiple of "
                             "the %s block size %lld", g->path, ty_at, t->name, (unsigned long long)t->ne[0],
                             kv_dtype_name(t->type), (long long)kv_dtype_block_elems(t->type));
        t->nbytes = kv_dtype_bytes(t->type, (int64_t)nel);
        size_t off_at = c->off;
        if ((rc = rd_u64(c, &t->offset, "a tensor data offset"))) return rc;
        if (t->offset % g->alignment != 0)
            return kv_errorf(KV_EFORMAT, "%s: offset %zu: tensor '%s': data offset %llu is not a multiple of the "
                             "alignment %u", g->path, off_at, t->name, (unsigned long long)t->offset, g->alignment);
    }
    return KV_OK;
}

int kv_gguf_open(const char *path, kv_gguf **out) { return kv_gguf_open_ext(path, KV_FILEMAP_MMAP, out); }

int kv_gguf_open_ext(const char *path, kv_filemap_mode mode, kv_gguf **out) {
    *out = NULL;
    kv_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    int rc = kv_filemap_open(path, mode, "a 24-byte GGUF header", &g->fm);
    if (rc) goto fail;
    if (g->fm.size < 24) {
        rc = kv_errorf(KV_EFORMAT, "%s: offset 0: expected a 24-byte GGUF header, the file has %zu bytes", path,
                       g->fm.size);
        goto fail;
    }

    cursor c = {g, 0};
    uint32_t magic;
    uint64_t nt = 0, nkv = 0;
    rd_u32(&c, &magic, "the magic");
    if (memcmp(g->fm.data, "GGUF", 4) != 0) {
        rc = kv_errorf(KV_EFORMAT, "%s: offset 0: expected the magic \"GGUF\"", path);
        goto fail;
    }
    rd_u32(&c, &g->version, "the version");
    if (g->version != 2 && g->version != 3) {
        rc = kv_errorf(KV_EUNSUPPORTED, "%s: offset 4: expected GGUF version 2 or 3, got %u", path, g->version);
        goto fail;
    }
    rd_u64(&c, &nt, "the tensor count");
    rd_u64(&c, &nkv, "the metadata count");
    /* each entry takes at least 13 (metadata) or 32 (tensor info) bytes */
    if (nkv > left(&c) / 13) {
        rc = kv_errorf(KV_EFORMAT, "%s: offset 16: %llu metadata entries cannot fit in a %zu-byte file", path,
                       (unsigned long long)nkv, g->fm.size);
        goto fail;
    }
    if (nt > left(&c) / 32) {
        rc = kv_errorf(KV_EFORMAT, "%s: offset 8: %llu tensors cannot fit in a %zu-byte file", path,
                       (unsigned long long)nt, g->fm.size);
        goto fail;
    }
    g->n_kv = (int64_t)nkv;
    g->n_tensors = (int64_t)nt;
    g->kvs = calloc((size_t)(nkv ? nkv : 1), sizeof *g->kvs);
    g->tensors = calloc((size_t)(nt ? nt : 1), sizeof *g->tensors);
    g->by_name = calloc((size_t)(nt ? nt : 1), sizeof *g->by_name);
    g->arena_cap = g->fm.size + 2 * (size_t)(nkv + nt) + 1; /* names are copied from the file, plus NULs */
    g->arena = malloc(g->arena_cap);
    if (!g->kvs || !g->tensors || !g->by_name || !g->arena) {
        rc = kv_errorf(KV_ENOMEM, "out of memory");
        goto fail;
    }
    g->alignment = GGUF_DEFAULT_ALIGN;
    if ((rc = parse_kvs(g, &c))) goto fail;
    int64_t ai = kv_gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        int64_t a;
        if ((rc = kv_gguf_get_int(g, "general.alignment", &a))) goto fail;
        if (a <= 0 || a > (1 << 24) || (a & (a - 1)) != 0) {
            rc = kv_errorf(KV_EFORMAT, "%s: offset %zu: general.alignment must be a power of two, got %lld", path,
                           g->kvs[ai].off, (long long)a);
            goto fail;
        }
        g->alignment = (uint32_t)a;
    }
    if ((rc = parse_tensors(g, &c))) goto fail;

    size_t data = (c.off + g->alignment - 1) / g->alignment * g->alignment;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        kv_gguf_tensor *t = &g->tensors[i];
        if (data > g->fm.size || t->offset > g->fm.size - data || t->nbytes > g->fm.size - data - t->offset) {
            rc = kv_errorf(KV_EFORMAT, "%s: offset %zu: tensor '%s': data [%llu, +%zu) past the end of the file "
                           "(%zu bytes)", path, data + (size_t)(t->offset > g->fm.size ? 0 : t->offset), t->name,
                           (unsigned long long)(data + t->offset), t->nbytes, g->fm.size);
            goto fail;
        }
        t->data = g->fm.data + data + t->offset;
        g->by_name[i] = t;
    }
    qsort(g->by_name, (size_t)g->n_tensors, sizeof *g->by_name, cmp_tensor_name);
    for (int64_t i = 1; i < g->n_tensors; i++)
        if (strcmp(g->by_name[i - 1]->name, g->by_name[i]->name) == 0) {
            rc = kv_errorf(KV_EFORMAT, "%s: offset %zu: duplicate tensor name '%s'", path, data, g->by_name[i]->name);
            goto fail;
        }
    *out = g;
    return KV_OK;
fail:
    kv_gguf_close(g);
    return rc;
}

const kv_filemap *kv_gguf_filemap(const kv_gguf *g) { return &g->fm; }
const char *kv_gguf_path(const kv_gguf *g) { return g->path; }
uint32_t kv_gguf_version(const kv_gguf *g) { return g->version; }
uint32_t kv_gguf_alignment(const kv_gguf *g) { return g->alignment; }
size_t kv_gguf_file_size(const kv_gguf *g) { return g->fm.size; }
int64_t kv_gguf_n_kv(const kv_gguf *g) { return g->n_kv; }
const char *kv_gguf_key(const kv_gguf *g, int64_t i) { return g->kvs[i].key; }
kv_gguf_type kv_gguf_kv_type(const kv_gguf *g, int64_t i) { return g->kvs[i].type; }
int64_t kv_gguf_n_tensors(const kv_gguf *g) { return g->n_tensors; }
const kv_gguf_tensor *kv_gguf_tensor_at(const kv_gguf *g, int64_t i) { return &g->tensors[i]; }

int64_t kv_gguf_find_key(const kv_gguf *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kvs[i].key, key) == 0) return i;
    return -1;
}

const kv_gguf_tensor *kv_gguf_find_tensor(const kv_gguf *g, const char *name) {
    int64_t lo = 0, hi = g->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->by_name[mid]->name, name);
        if (c == 0) return g->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

static const gguf_kv *lookup(const kv_gguf *g, const char *key, int *rc) {
    int64_t i = kv_gguf_find_key(g, key);
    if (i < 0) {
        *rc = kv_errorf(KV_ENOTFOUND, "%s: metadata key '%s' is absent", g->path, key);
        return NULL;
    }
    *rc = KV_OK;
    return &g->kvs[i];
}

static int wrong_type(const kv_gguf *g, const gguf_kv *kv, const char *expected) {
    return kv_errorf(KV_ETYPE, "%s: offset %zu: metadata key '%s': expected %s, got type %d", g->path, kv->off,
                     kv->key, expected, (int)kv->type);
}

/* Reads an integer of type t at file offset off. */
static int read_int(const uint8_t *p, kv_gguf_type t, int64_t *out) {
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; uint64_t u64; int64_t i64; } v;
    memcpy(&v, p, type_size(t));
    switch (t) {
    case KV_GGUF_U8: case KV_GGUF_BOOL: *out = v.u8; return 0;
    case KV_GGUF_I8: *out = v.i8; return 0;
    case KV_GGUF_U16: *out = v.u16; return 0;
    case KV_GGUF_I16: *out = v.i16; return 0;
    case KV_GGUF_U32: *out = v.u32; return 0;
    case KV_GGUF_I32: *out = v.i32; return 0;
    case KV_GGUF_U64: if (v.u64 > INT64_MAX) return -1; *out = (int64_t)v.u64; return 0;
    case KV_GGUF_I64: *out = v.i64; return 0;
    default: return -1;
    }
}

int kv_gguf_get_int(const kv_gguf *g, const char *key, int64_t *out) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (read_int(g->fm.data + kv->off, kv->type, out) != 0) return wrong_type(g, kv, "an integer");
    return KV_OK;
}

int kv_gguf_get_float(const kv_gguf *g, const char *key, double *out) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (kv->type == KV_GGUF_F32) {
        float f;
        memcpy(&f, g->fm.data + kv->off, 4);
        *out = f;
    } else if (kv->type == KV_GGUF_F64) {
        memcpy(out, g->fm.data + kv->off, 8);
    } else {
        int64_t i;
        if (read_int(g->fm.data + kv->off, kv->type, &i) != 0) return wrong_type(g, kv, "a number");
        *out = (double)i;
    }
    return KV_OK;
}

int kv_gguf_get_bool(const kv_gguf *g, const char *key, int *out) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    int64_t i;
    if (read_int(g->fm.data + kv->off, kv->type, &i) != 0) return wrong_type(g, kv, "a bool");
    *out = i != 0;
    return KV_OK;
}

int kv_gguf_get_str(const kv_gguf *g, const char *key, const char **s, size_t *len) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != KV_GGUF_STRING) return wrong_type(g, kv, "a string");
    uint64_t n;
    memcpy(&n, g->fm.data + kv->off, 8);
    *s = (const char *)g->fm.data + kv->off + 8;
    *len = (size_t)n;
    return KV_OK;
}

int kv_gguf_get_arr_info(const kv_gguf *g, const char *key, kv_gguf_type *elem, uint64_t *n) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != KV_GGUF_ARRAY) return wrong_type(g, kv, "an array");
    *elem = kv->elem;
    *n = kv->n;
    return KV_OK;
}

int kv_gguf_get_arr_data(const kv_gguf *g, const char *key, const void **data) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != KV_GGUF_ARRAY || type_size(kv->elem) == 0)
        return wrong_type(g, kv, "an array of fixed-size elements");
    *data = g->fm.data + kv->data_off;
    return KV_OK;
}

int kv_gguf_get_arr_str(const kv_gguf *g, const char *key, uint64_t i, const char **s, size_t *len) {
    int rc;
    const gguf_kv *kv = lookup(g, key, &rc);
    if (!kv) return rc;
    if (kv->type != KV_GGUF_ARRAY || kv->elem != KV_GGUF_STRING) return wrong_type(g, kv, "an array of strings");
    if (i >= kv->n)
        return kv_errorf(KV_EINVAL, "%s: metadata key '%s': element %llu of %llu", g->path, key,
                         (unsigned long long)i, (unsigned long long)kv->n);
    uint64_t n;
    memcpy(&n, g->fm.data + kv->str_offs[i], 8);
    *s = (const char *)g->fm.data + kv->str_offs[i] + 8;
    *len = (size_t)n;
    return KV_OK;
}

/* ------------------------------------------------------------- writer */

typedef struct wbuf { uint8_t *p; size_t n, cap; } wbuf;

static int wb_put(wbuf *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) return kv_errorf(KV_ENOMEM, "out of memory");
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
    return KV_OK;
}

static int wb_str(wbuf *b, const char *s, size_t n) {
    uint64_t len = n;
    int rc = wb_put(b, &len, 8);
    return rc ? rc : wb_put(b, s, n);
}

typedef struct wkv { char *key; uint32_t type; wbuf val; } wkv;
typedef struct wtensor { char *name; kv_dtype type; uint32_t n_dims; uint64_t ne[4]; void *data; size_t nbytes; } wtensor;

struct kv_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
};

kv_gguf_writer *kv_gguf_writer_new(void) { return calloc(1, sizeof(kv_gguf_writer)); }

void kv_gguf_writer_free(kv_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val.p);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->kv);
    free(w->t);
    free(w);
}

/* The entry for key, emptied (replacing a previous value) or appended. */
static wkv *w_entry(kv_gguf_writer *w, const char *key, uint32_t type) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            w->kv[i].val.n = 0;
            w->kv[i].type = type;
            return &w->kv[i];
        }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        wkv *k = realloc(w->kv, cap * sizeof *k);
        if (!k) return NULL;
        w->kv = k;
        w->cap_kv = cap;
    }
    wkv *e = &w->kv[w->n_kv];
    memset(e, 0, sizeof *e);
    if (!(e->key = strdup(key))) return NULL;
    e->type = type;
    w->n_kv++;
    return e;
}

static int w_scalar(kv_gguf_writer *w, const char *key, uint32_t type, const void *v, size_t n) {
    wkv *e = w_entry(w, key, type);
    if (!e) return kv_errorf(KV_ENOMEM, "out of memory");
    return wb_put(&e->val, v, n);
}

int kv_gguf_writer_set_u32(kv_gguf_writer *w, const char *key, uint32_t v) { return w_scalar(w, key, KV_GGUF_U32, &v, 4); }
int kv_gguf_writer_set_i32(kv_gguf_writer *w, const char *key, int32_t v) { return w_scalar(w, key, KV_GGUF_I32, &v, 4); }
int kv_gguf_writer_set_f32(kv_gguf_writer *w, const char *key, float v) { return w_scalar(w, key, KV_GGUF_F32, &v, 4); }
int kv_gguf_writer_set_bool(kv_gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    return w_scalar(w, key, KV_GGUF_BOOL, &b, 1);
}

int kv_gguf_writer_set_str(kv_gguf_writer *w, const char *key, const char *s) {
    wkv *e = w_entry(w, key, KV_GGUF_STRING);
    if (!e) return kv_errorf(KV_ENOMEM, "out of memory");
    return wb_str(&e->val, s, strlen(s));
}

static int w_array(kv_gguf_writer *w, const char *key, uint32_t elem, const void *v, size_t esize, uint64_t n) {
    wkv *e = w_entry(w, key, KV_GGUF_ARRAY);
    if (!e) return kv_errorf(KV_ENOMEM, "out of memory");
    int rc;
    if ((rc = wb_put(&e->val, &elem, 4)) || (rc = wb_put(&e->val, &n, 8))) return rc;
    return wb_put(&e->val, v, esize * (size_t)n);
}

int kv_gguf_writer_set_arr_f32(kv_gguf_writer *w, const char *key, const float *v, uint64_t n) {
    return w_array(w, key, KV_GGUF_F32, v, 4, n);
}

int kv_gguf_writer_set_arr_i32(kv_gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    return w_array(w, key, KV_GGUF_I32, v, 4, n);
}

int kv_gguf_writer_set_arr_str(kv_gguf_writer *w, const char *key, const char *const *s, const size_t *lens,
                               uint64_t n) {
    wkv *e = w_entry(w, key, KV_GGUF_ARRAY);
    if (!e) return kv_errorf(KV_ENOMEM, "out of memory");
    uint32_t elem = KV_GGUF_STRING;
    int rc;
    if ((rc = wb_put(&e->val, &elem, 4)) || (rc = wb_put(&e->val, &n, 8))) return rc;
    for (uint64_t i = 0; i < n; i++)
        if ((rc = wb_str(&e->val, s[i], lens ? lens[i] : strlen(s[i])))) return rc;
    return KV_OK;
}

int kv_gguf_writer_add_tensor(kv_gguf_writer *w, const char *name, kv_dtype type, uint32_t n_dims,
                              const uint64_t *ne, const void *data) {
    if (strlen(name) == 0 || strlen(name) > GGUF_MAX_NAME)
        return kv_errorf(KV_EINVAL, "GGUF writer: tensor name '%s' must have 1..%d bytes", name, GGUF_MAX_NAME);
    if (n_dims < 1 || n_dims > 4 || kv_dtype_block_bytes(type) == 0 || type == KV_Q8_G)
        return kv_errorf(KV_EINVAL, "GGUF writer: tensor '%s': bad dimension count %u or type %d", name, n_dims, (int)type);
    uint64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0) return kv_errorf(KV_EINVAL, "GGUF writer: tensor '%s': dimension %u is 0", name, d);
        nel *= ne[d];
    }
    if (ne[0] % (uint64_t)kv_dtype_block_elems(type) != 0)
        return kv_errorf(KV_EINVAL, "GGUF writer: tensor '%s': first dimension %llu is not a multiple of %lld", name,
                         (unsigned long long)ne[0], (long long)kv_dtype_block_elems(type));
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return kv_errorf(KV_EINVAL, "GGUF writer: duplicate tensor '%s'", name);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 32;
        wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) return kv_errorf(KV_ENOMEM, "out of memory");
        w->t = t;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->nbytes = kv_dtype_bytes(type, (int64_t)nel);
    t->name = strdup(name);
    t->data = malloc(t->nbytes ? t->nbytes : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return kv_errorf(KV_ENOMEM, "out of memory for tensor '%s'", name);
    }
    memcpy(t->data, data, t->nbytes);
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < 4; d++) t->ne[d] = d < (int)n_dims ? ne[d] : 1;
    w->n_t++;
    return KV_OK;
}

static int fput(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -1; }

static int fpad(FILE *f, uint64_t *pos, uint32_t align) {
    static const uint8_t zeros[64];
    while (*pos % align) {
        size_t n = align - (size_t)(*pos % align);
        if (n > sizeof zeros) n = sizeof zeros;
        if (fput(f, zeros, n)) return -1;
        *pos += n;
    }
    return 0;
}

int kv_gguf_writer_write(kv_gguf_writer *w, const char *path) {
    uint32_t align = GGUF_DEFAULT_ALIGN;
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, "general.alignment") && w->kv[i].type == KV_GGUF_U32) memcpy(&align, w->kv[i].val.p, 4);
    if (align == 0 || (align & (align - 1)))
        return kv_errorf(KV_EINVAL, "GGUF writer: general.alignment %u is not a power of two", align);
    size_t plen = strlen(path) + 5;
    char *tmp = malloc(plen);
    if (!tmp) return kv_errorf(KV_ENOMEM, "out of memory");
    snprintf(tmp, plen, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int rc = kv_errorf(KV_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    int bad = 0;
    uint64_t pos = 0, nt = w->n_t, nkv = w->n_kv, off = 0;
    uint32_t version = 3;
    bad |= fput(f, "GGUF", 4) | fput(f, &version, 4) | fput(f, &nt, 8) | fput(f, &nkv, 8);
    pos = 24;
    for (size_t i = 0; i < w->n_kv && !bad; i++) {
        uint64_t kl = strlen(w->kv[i].key);
        bad |= fput(f, &kl, 8) | fput(f, w->kv[i].key, kl) | fput(f, &w->kv[i].type, 4) |
               fput(f, w->kv[i].val.p, w->kv[i].val.n);
        pos += 8 + kl + 4 + w->kv[i].val.n;
    }
    for (size_t i = 0; i < w->n_t && !bad; i++) {
        wtensor *t = &w->t[i];
        uint64_t nl = strlen(t->name);
        uint32_t type = (uint32_t)t->type;
        bad |= fput(f, &nl, 8) | fput(f, t->name, nl) | fput(f, &t->n_dims, 4) | fput(f, t->ne, 8 * t->n_dims) |
               fput(f, &type, 4) | fput(f, &off, 8);
        pos += 8 + nl + 4 + 8 * t->n_dims + 4 + 8;
        off += (t->nbytes + align - 1) / align * align;
    }
    if (w->n_t) bad |= fpad(f, &pos, align);
    for (size_t i = 0; i < w->n_t && !bad; i++) {
        bad |= fput(f, w->t[i].data, w->t[i].nbytes);
        pos += w->t[i].nbytes;
        if (i + 1 < w->n_t) bad |= fpad(f, &pos, align);
    }
    bad |= fclose(f) != 0;
    int rc = KV_OK;
    if (bad) rc = kv_errorf(KV_EIO, "%s: write failed: %s", path, strerror(errno));
    else if (rename(tmp, path) != 0) rc = kv_errorf(KV_EIO, "%s: cannot rename %s: %s", path, tmp, strerror(errno));
    if (rc) unlink(tmp);
    free(tmp);
    return rc;
}
