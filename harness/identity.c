/* identity.c - a model file's identity (identity.h): XXH3-128 over the
 * whole file, read in large blocks, with Debian's libxxhash. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "../base/kv_error.h"
#include "identity.h"

/* Large reads keep the system-call count low on multi-GiB models; the
 * hash itself runs at memory speed. */
enum { ID_BLOCK = 8 << 20 };

/* Feeds the whole of fd to st. */
static int hash_fd(int fd, const char *path, XXH3_state_t *st, unsigned char *buf) {
    uint64_t off = 0;
    for (;;) {
        ssize_t n = read(fd, buf, ID_BLOCK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            return kv_errorf(KV_EIO, "%s: offset %llu: read failed: %s", path, (unsigned long long)off,
                             strerror(errno));
        if (n == 0) return KV_OK;
        if (XXH3_128bits_update(st, buf, (size_t)n) != XXH_OK)
            return kv_errorf(KV_EIO, "%s: offset %llu: hashing failed", path, (unsigned long long)off);
        off += (uint64_t)n;
    }
}

int hx_file_identity(const char *path, char hex[HX_IDENTITY_BUF]) {
    hex[0] = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return kv_errorf(KV_EIO, "%s: cannot open to hash it: %s", path, strerror(errno));
#ifdef POSIX_FADV_SEQUENTIAL
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL); /* a hint: its failure changes nothing */
#endif
    unsigned char *buf = malloc(ID_BLOCK);
    XXH3_state_t *st = XXH3_createState();
    int rc = buf && st ? KV_OK : kv_errorf(KV_ENOMEM, "%s: out of memory to hash it", path);
    if (!rc && XXH3_128bits_reset(st) != XXH_OK) rc = kv_errorf(KV_EIO, "%s: cannot start the hash", path);
    if (!rc) rc = hash_fd(fd, path, st, buf);
    if (!rc) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
        for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", c.digest[i]);
    }
    XXH3_freeState(st);
    free(buf);
    close(fd);
    return rc;
}
