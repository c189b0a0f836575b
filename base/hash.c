/* hash.c - see hash.h. */
#include "hash.h"

uint64_t kv_fnv1a64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull; /* FNV's 64-bit prime */
    return h;
}
