/* gguf.h - reading and writing GGUF v3 (v2 accepted) files.
 *
 * The reader maps the file read-only and validates every count, length and
 * offset against the file size before it is used, so a corrupt or truncated
 * file gives KV_EFORMAT with a message "<path>: offset <N>: <what was
 * expected>" and never an out-of-bounds read. Tensor data pointers point into
 * the mapping (zero copy) and stay valid until kv_gguf_close().
 *
 * The writer collects metadata and tensors in memory and writes a complete
 * file (alignment 32 unless general.alignment is set) in kv_gguf_writer_write. */
#ifndef KV_GGUF_H
#define KV_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "filemap.h"

typedef enum kv_gguf_type {
    KV_GGUF_U8 = 0, KV_GGUF_I8 = 1, KV_GGUF_U16 = 2, KV_GGUF_I16 = 3,
    KV_GGUF_U32 = 4, KV_GGUF_I32 = 5, KV_GGUF_F32 = 6, KV_GGUF_BOOL = 7,
    KV_GGUF_STRING = 8, KV_GGUF_ARRAY = 9, KV_GGUF_U64 = 10, KV_GGUF_I64 = 11,
    KV_GGUF_F64 = 12,
} kv_gguf_type;

typedef struct kv_gguf kv_gguf; /* opaque: one opened file */

typedef struct kv_gguf_tensor {
    const char *name;     /* NUL-terminated copy */
    uint32_t n_dims;      /* 1..4 */
    uint64_t ne[4];       /* ne[0] fastest varying; unused dims are 1 */
    kv_dtype type;
    uint64_t offset;      /* relative to the data section */
    const void *data;     /* into the mapping */
    size_t nbytes;
} kv_gguf_tensor;

/* Opens, maps and validates `path`. On success *out owns the mapping. */
int kv_gguf_open(const char *path, kv_gguf **out);
/* The same with the file's bytes held as `mode` says (filemap.h): a model's
 * weights are read from a copy in huge pages, a vocabulary from the map. */
int kv_gguf_open_ext(const char *path, kv_filemap_mode mode, kv_gguf **out);
void kv_gguf_close(kv_gguf *g);

const char *kv_gguf_path(const kv_gguf *g);
const kv_filemap *kv_gguf_filemap(const kv_gguf *g);
uint32_t kv_gguf_version(const kv_gguf *g);
uint32_t kv_gguf_alignment(const kv_gguf *g);
size_t kv_gguf_file_size(const kv_gguf *g);

/* Metadata. Each getter returns KV_OK, KV_ENOTFOUND (key absent) or KV_ETYPE
 * (present with an incompatible type), with a message naming the key. */
int64_t kv_gguf_n_kv(const kv_gguf *g);
const char *kv_gguf_key(const kv_gguf *g, int64_t i);        /* NUL-terminated */
kv_gguf_type kv_gguf_kv_type(const kv_gguf *g, int64_t i);
int64_t kv_gguf_find_key(const kv_gguf *g, const char *key);  /* index or -1 */

/* Any integer type (u8..i64, and bool) is accepted; out of range for int64 is KV_ETYPE. */
int kv_gguf_get_int(const kv_gguf *g, const char *key, int64_t *out);
/* f32 or f64 (and integers, converted). */
int kv_gguf_get_float(const kv_gguf *g, const char *key, double *out);
int kv_gguf_get_bool(const kv_gguf *g, const char *key, int *out);
/* The string is not NUL-terminated in the file: use *len. */
int kv_gguf_get_str(const kv_gguf *g, const char *key, const char **s, size_t *len);

/* Arrays: element type and count. */
int kv_gguf_get_arr_info(const kv_gguf *g, const char *key, kv_gguf_type *elem, uint64_t *n);
/* Pointer to the packed elements of an array of a fixed-size type (not
 * strings, not nested arrays). Elements may be unaligned: memcpy them. */
int kv_gguf_get_arr_data(const kv_gguf *g, const char *key, const void **data);
/* Element i of an array of strings. */
int kv_gguf_get_arr_str(const kv_gguf *g, const char *key, uint64_t i, const char **s, size_t *len);

/* Tensors. */
int64_t kv_gguf_n_tensors(const kv_gguf *g);
const kv_gguf_tensor *kv_gguf_tensor_at(const kv_gguf *g, int64_t i);
const kv_gguf_tensor *kv_gguf_find_tensor(const kv_gguf *g, const char *name); /* or NULL */

/* ---- writer ---- */
typedef struct kv_gguf_writer kv_gguf_writer;

kv_gguf_writer *kv_gguf_writer_new(void); /* NULL on allocation failure */
void kv_gguf_writer_free(kv_gguf_writer *w);

/* Setting a key twice replaces its value. Strings are copied. */
int kv_gguf_writer_set_u32(kv_gguf_writer *w, const char *key, uint32_t v);
int kv_gguf_writer_set_i32(kv_gguf_writer *w, const char *key, int32_t v);
int kv_gguf_writer_set_f32(kv_gguf_writer *w, const char *key, float v);
int kv_gguf_writer_set_bool(kv_gguf_writer *w, const char *key, int v);
int kv_gguf_writer_set_str(kv_gguf_writer *w, const char *key, const char *s);
int kv_gguf_writer_set_arr_str(kv_gguf_writer *w, const char *key, const char *const *s,
                               const size_t *lens, uint64_t n);
int kv_gguf_writer_set_arr_f32(kv_gguf_writer *w, const char *key, const float *v, uint64_t n);
int kv_gguf_writer_set_arr_i32(kv_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);

/* Adds a tensor whose `data` is already encoded in `type` (nbytes =
 * kv_dtype_bytes(type, ne[0]*...)); the bytes are copied. ne[0] must be a
 * multiple of the block size for Q8_0/Q4_0. */
int kv_gguf_writer_add_tensor(kv_gguf_writer *w, const char *name, kv_dtype type,
                              uint32_t n_dims, const uint64_t *ne, const void *data);

/* Writes the file (to path.tmp, then renamed, so a failure leaves no partial file). */
int kv_gguf_writer_write(kv_gguf_writer *w, const char *path);

#endif
