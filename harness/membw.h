/* membw.h - the machine's memory read bandwidth, measured on the spot.
 *
 * Decode streams every weight once per token, so its speed is the memory
 * bandwidth the machine gives at that moment divided by the bytes per
 * token; on shared or virtual machines that bandwidth moves (on the
 * development machine between ~27 and ~55 GB/s, from one second to the
 * next). `kvbench bench` measures it right before each timed run so that a
 * tokens/s figure can be read against what the memory allowed. */
#ifndef HX_MEMBW_H
#define HX_MEMBW_H

#include <stddef.h>

typedef struct hx_membw hx_membw;

/* A `bytes` buffer (in 2 MB pages where the kernel gives them, written
 * once so that it is backed by real pages) and `threads` threads to read
 * it, each its own contiguous share. NULL when out of memory. */
hx_membw *hx_membw_new(int threads, size_t bytes);
/* Reads the buffer once untimed, then `passes` times; returns the median
 * GB/s (1e9 bytes/s). */
double hx_membw_measure(hx_membw *m, int passes);
void hx_membw_free(hx_membw *m);

#endif
