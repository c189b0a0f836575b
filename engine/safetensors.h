/* safetensors.h - Hugging Face .safetensors files, one or sharded.
 *
 * The format (huggingface/safetensors, docs "Format"): an 8-byte
 * little-endian header length N, N bytes of JSON mapping each tensor name
 * to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to
 * the byte after the header; an optional "__metadata__" object of strings,
 * ignored here), then the data. The reference implementation requires the
 * tensors to cover the data without overlap or holes; so does kvbench.
 *
 * Only what a model converter needs is accepted: dtypes F32, F16 and BF16
 * (anything else is KV_EUNSUPPORTED naming the tensor and the dtype). Every
 * inconsistency is KV_EFORMAT naming the file, the tensor and what was
 * expected, never a crash: the parser is fuzzed (tests/fuzz/fuzz_safetensors.c). */
#ifndef KV_SAFETENSORS_H
#define KV_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#define KV_ST_MAX_DIMS 8
/* The reference implementation refuses headers above 100 MB. */
#define KV_ST_MAX_HEADER 100000000ull

typedef struct kv_st_tensor {
    char *name;
    kv_dtype type;                   /* KV_F32, KV_F16 or KV_BF16 */
    int n_dims;                      /* 0 (a scalar) .. KV_ST_MAX_DIMS */
    int64_t shape[KV_ST_MAX_DIMS];   /* PyTorch order: shape[0] varies slowest */
    int64_t n_elems;                 /* product of shape (1 for a scalar) */
    const uint8_t *data;             /* n_bytes in the file's map */
    uint64_t n_bytes;
    uint64_t offset;                 /* of data in its file */
    const char *file;                /* the file it lives in */
} kv_st_tensor;

/* Parses the bytes of one .safetensors file (buf[0..size), `path` names it
 * in messages). On success *out holds *n tensors sorted by name, their data
 * pointing into buf; free with kv_st_tensors_free. */
int kv_st_parse(const char *path, const uint8_t *buf, size_t size, kv_st_tensor **out, int64_t *n);
void kv_st_tensors_free(kv_st_tensor *t, int64_t n);

typedef struct kv_safetensors kv_safetensors; /* opaque: open files and their tensors */

/* Opens `path`: a .safetensors file, or a folder holding
 * model.safetensors.index.json (its weight_map names each tensor's shard;
 * every shard is opened and must hold exactly the tensors the map gives
 * it) or else model.safetensors. Files are mapped, not read. */
int kv_safetensors_open(const char *path, kv_safetensors **out);
void kv_safetensors_close(kv_safetensors *s);

int64_t kv_safetensors_n_tensors(const kv_safetensors *s);
const kv_st_tensor *kv_safetensors_at(const kv_safetensors *s, int64_t i); /* sorted by name */
const kv_st_tensor *kv_safetensors_find(const kv_safetensors *s, const char *name); /* or NULL */

/* "F32", "F16", "BF16" for the types a tensor can have. */
const char *kv_st_dtype_name(kv_dtype t);

#endif
