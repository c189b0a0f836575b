/* spans.c - see spans.h. */
#include "spans.h"

#include "rng.h"

int64_t pol_plan_spans(uint64_t seed, int32_t region, int64_t to_free, int32_t max_span, int32_t *span_end) {
    if (to_free <= 0 || region < 3) return to_free > 0 ? to_free : 0;
    uint64_t rng = seed ^ 0x53454e54494e454cull; /* "SENTINEL" */
    int64_t expected = to_free / ((max_span + 1) / 2) + 1, attempts = 3 * expected + 16;
    for (int64_t a = 0; a < attempts && to_free > 0; a++) {
        int32_t len = 2 + (int32_t)(kv_splitmix64(&rng) % (uint64_t)(max_span - 1));
        if (len - 1 > to_free) len = (int32_t)to_free + 1;
        if (len > region - 1) continue;
        int32_t start = 1 + (int32_t)(kv_splitmix64(&rng) % (uint64_t)(region - 1 - len + 1));
        int clash = 0;
        for (int32_t i = start; i < start + len && !clash; i++) clash = span_end[i] >= 0;
        if (clash) continue;
        for (int32_t i = start; i < start + len; i++) span_end[i] = start + len - 1;
        to_free -= len - 1;
    }
    for (int32_t i = 1; i < region && to_free > 0;) {
        if (span_end[i] >= 0) {
            i++;
            continue;
        }
        int32_t j = i;
        while (j < region && span_end[j] < 0 && j - i < max_span) j++;
        int32_t len = j - i;
        if (len - 1 > to_free) len = (int32_t)to_free + 1;
        if (len >= 2) {
            for (int32_t k = i; k < i + len; k++) span_end[k] = i + len - 1;
            to_free -= len - 1;
        }
        i += len > 0 ? len : 1;
    }
    return to_free;
}
