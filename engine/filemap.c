/* filemap.c - see filemap.h. */
#define _DEFAULT_SOURCE
#include "filemap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv_error.h"

#define KV_HUGE_PAGE ((size_t)2 << 20)
#define KV_READ_CHUNK ((size_t)64 << 20) /* one read() call: large, but below Linux's 2 GB cap */

const char *kv_filemap_mode_name(kv_filemap_mode mode) { return mode == KV_FILEMAP_COPY ? "copy" : "mmap"; }

int kv_filemap_mode_parse(const char *name, kv_filemap_mode *out) {
    if (name && !strcmp(name, "mmap")) *out = KV_FILEMAP_MMAP;
    else if (name && !strcmp(name, "copy")) *out = KV_FILEMAP_COPY;
    else return kv_errorf(KV_EINVAL, "weights: expected mmap or copy, got '%s'", name ? name : "");
    return KV_OK;
}

void *kv_huge_alloc(size_t size, void **base, size_t *len) {
    size_t rounded = (size + KV_HUGE_PAGE - 1) / KV_HUGE_PAGE * KV_HUGE_PAGE;
    size_t total = rounded + KV_HUGE_PAGE;
    void *r = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) return NULL;
    void *p = (void *)(((uintptr_t)r + KV_HUGE_PAGE - 1) / KV_HUGE_PAGE * KV_HUGE_PAGE);
#ifdef MADV_HUGEPAGE
    (void)madvise(p, rounded, MADV_HUGEPAGE); /* advice only: fails harmlessly without THP */
#endif
    *base = r;
    *len = total;
    return p;
}

/* Bytes the kernel says can be had without swapping (MemAvailable: free
 * memory plus reclaimable page cache); free memory where /proc is absent. */
static size_t available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[128];
        unsigned long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lu kB", &kb) == 1) {
                fclose(f);
                return (size_t)kb * 1024;
            }
        fclose(f);
    }
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : SIZE_MAX;
}

static int read_all(int fd, const char *path, uint8_t *dst, size_t size) {
    size_t off = 0;
    while (off < size) {
        size_t want = size - off < KV_READ_CHUNK ? size - off : KV_READ_CHUNK;
        ssize_t got = pread(fd, dst + off, want, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0)
            return kv_errorf(KV_EIO, "%s: offset %zu: read failed: %s", path, off, strerror(errno));
        if (got == 0)
            return kv_errorf(KV_EIO, "%s: offset %zu: the file ended early (it shrank while being read?)", path, off);
        off += (size_t)got;
    }
    return KV_OK;
}

int kv_filemap_open(const char *path, kv_filemap_mode mode, const char *what_expected, kv_filemap *out) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return kv_errorf(KV_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return kv_errorf(KV_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return kv_errorf(KV_EIO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return kv_errorf(KV_EFORMAT, "%s: offset 0: expected %s, the file is empty", path, what_expected);
    }
    size_t size = (size_t)st.st_size;
    /* A copy that needs more than half of the memory to be had would push
     * the machine into swapping or the OOM killer; the mapping pages in
     * from the file instead. The caller sees the mode in out->mode. */
    if (mode == KV_FILEMAP_COPY && size > available_bytes() / 2) mode = KV_FILEMAP_MMAP;
    int rc = KV_OK;
    if (mode == KV_FILEMAP_COPY) {
        uint8_t *p = kv_huge_alloc(size, &out->base, &out->len);
        if (!p) {
            rc = kv_errorf(KV_ENOMEM, "%s: out of memory for a %zu-byte copy (try weights = mmap)", path, size);
        } else if ((rc = read_all(fd, path, p, size)) != KV_OK) {
            munmap(out->base, out->len);
            out->base = NULL;
        } else {
            out->data = p;
        }
    } else {
        void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            rc = kv_errorf(KV_EIO, "%s: cannot map: %s", path, strerror(errno));
        } else {
            out->base = p;
            out->len = size;
            out->data = p;
        }
    }
    close(fd);
    if (rc) return rc;
    out->size = size;
    out->mode = mode;
    return KV_OK;
}

void kv_filemap_close(kv_filemap *m) {
    kv_huge_free(m->base, m->len);
    memset(m, 0, sizeof *m);
}

void kv_huge_free(void *base, size_t len) {
    if (base) munmap(base, len);
}

size_t kv_filemap_huge_bytes(const kv_filemap *m) {
    if (!m->base) return 0;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return 0;
    char line[512];
    int inside = 0;
    size_t kb = 0;
    const uintptr_t lo = (uintptr_t)m->base, hi = lo + m->len;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char c;
        /* a mapping's first line: "start-end perms ..." (hex addresses) */
        if (sscanf(line, "%lx-%lx %c", &a, &b, &c) == 3 && strchr(line, '-') < strchr(line, ' ')) {
            inside = a < hi && b > lo;
            continue;
        }
        unsigned long v;
        if (inside && (sscanf(line, "AnonHugePages: %lu kB", &v) == 1 || sscanf(line, "FilePmdMapped: %lu kB", &v) == 1))
            kb += v;
    }
    fclose(f);
    /* the region is whole 2 MB pages: the last may hold the file's tail */
    return kb * 1024 < m->size ? kb * 1024 : m->size;
}
