/* sentinel_proxy.h - what the sentinel-token proxy decided for the current
 * sequence, for tests and reports. */
#ifndef POL_SENTINEL_PROXY_H
#define POL_SENTINEL_PROXY_H

#include "policy.h" /* the harness reads it: the public header only */

/* span_end[p] for each prompt position p < *n: the last position of the
 * span p belongs to, or -1 outside every span. NULL before pol_begin, and
 * for a policy other than sentinel_proxy and sentinel. */
const int32_t *pol_sentinel_spans(const kv_policy *p, int32_t *n);

#endif
