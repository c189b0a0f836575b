/* spans.h - the span sampler of sentinel-token compression (Ren, Jia, Zhu,
 * EMNLP 2023; METHODS.md A11), shared by the method (sentinel.c) and its
 * training-free proxies (sentinel_proxy.c). */
#ifndef POL_SPANS_H
#define POL_SPANS_H

#include <stdint.h>

/* Lays non-overlapping spans of 2..max_span tokens over positions
 * [1, region) (never the first token, the attention sink) until to_free
 * slots are freed, a span of L tokens freeing L - 1 (it collapses to one
 * slot): seeded random placement first, as the paper's sampler places its
 * training spans (lengths uniform, give-up after 3x the expected attempts),
 * then the gaps left to right, the last span shortened to land exactly.
 * span_end [region] must hold -1 everywhere on entry; on return
 * span_end[p] is the last position of p's span, or -1 outside every span.
 * Returns the slots still to free: > 0 only when the budget is below what
 * spans can reach (about region / 2 slots). */
int64_t pol_plan_spans(uint64_t seed, int32_t region, int64_t to_free, int32_t max_span, int32_t *span_end);

#endif
