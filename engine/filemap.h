/* filemap.h - a whole file, read-only, in memory, one of two ways:
 *
 *   KV_FILEMAP_MMAP   mapped from the page cache: no copy, shared by every
 *                     process that maps the file, but mapped mostly in 4 KB
 *                     pages (how much of a file the kernel caches in large
 *                     folios depends on how it was written and read).
 *   KV_FILEMAP_COPY   read into anonymous memory aligned to and advised for
 *                     2 MB transparent huge pages (MADV_HUGEPAGE).
 *
 * Why a copy: decode streams every weight once per token, and walking 4 KB
 * pages costs a TLB miss every 4 KB of the stream; on the 110M benchmark
 * model the copy decodes 4-15% faster (docs/ARCHITECTURE.md, "Weights in
 * memory"). Where the kernel has no transparent huge pages the copy still
 * works, in whatever pages it gets: kv_filemap_huge_bytes says how many
 * bytes really sit in huge pages. */
#ifndef KV_FILEMAP_H
#define KV_FILEMAP_H

#include <stddef.h>
#include <stdint.h>

typedef enum kv_filemap_mode { KV_FILEMAP_MMAP = 0, KV_FILEMAP_COPY = 1 } kv_filemap_mode;

typedef struct kv_filemap {
    const uint8_t *data; /* [size] the file's bytes */
    size_t size;
    kv_filemap_mode mode;
    void *base;          /* the region to unmap, and its length */
    size_t len;
} kv_filemap;

/* Opens `path` (a regular, non-empty file) the way `mode` says, except
 * that a copy larger than half of the memory the kernel reports available
 * (MemAvailable) is mapped instead: out->mode says which it got. Returns
 * KV_OK, KV_EIO (open, stat, map or read failed; the message names the
 * file and, for a short read, the offset), KV_EFORMAT (empty file:
 * `what_expected` names what the caller wanted at offset 0) or KV_ENOMEM. */
int kv_filemap_open(const char *path, kv_filemap_mode mode, const char *what_expected, kv_filemap *out);
void kv_filemap_close(kv_filemap *m);

/* Bytes of the map that the kernel holds in huge pages now (from
 * /proc/self/smaps; 0 where that cannot be read). */
size_t kv_filemap_huge_bytes(const kv_filemap *m);

/* Anonymous read-write memory for `size` bytes starting on a 2 MB boundary
 * and advised for huge pages (what KV_FILEMAP_COPY reads a file into; also
 * the bandwidth probe's buffer). *base / *len: the reservation, for
 * kv_huge_free. NULL when out of memory. */
void *kv_huge_alloc(size_t size, void **base, size_t *len);
void kv_huge_free(void *base, size_t len); /* base NULL: nothing */

const char *kv_filemap_mode_name(kv_filemap_mode mode);
/* "mmap" or "copy"; KV_EINVAL naming what was expected otherwise. */
int kv_filemap_mode_parse(const char *name, kv_filemap_mode *out);

#endif
