/* membw.h - the machine's memory read bandwidth, measured on the spot.
 *
 * Decode streams every weight once per token, so its speed is the memory
 * bandwidth the machine gives at that moment divided by the bytes per
 * token; on shared or virtual machines that bandwidth moves (on the
 * development machine between ~27 and ~55 GB/s from one minute to the
 * next). `kvbench bench` measures it right before and after its timed runs
 * so that a tokens/s figure can be read against what the memory allowed. */
#ifndef HX_MEMBW_H
#define HX_MEMBW_H

#include <stddef.h>

/* Reads a `bytes` buffer (in 2 MB pages where the kernel gives them) with
 * `threads` threads, each its own contiguous half, `passes` times after one
 * untimed pass; returns the median GB/s (1e9 bytes/s), or a negative value
 * if the buffer could not be had. */
double hx_membw_read(int threads, size_t bytes, int passes);

#endif
