/* buf.h - growing an array by doubling, the one way every layer does it.
 *
 * KV_RESERVE(ptr, cap, need) makes the array ptr (of *ptr's type, cap
 * elements, cap a size_t) hold at least `need` elements:
 *
 *     if ((rc = KV_RESERVE(v->ids, v->cap, v->n + 1))) return rc;
 *     v->ids[v->n++] = id;
 */
#ifndef KV_BUF_H
#define KV_BUF_H

#include <stddef.h>

/* When *cap < need, reallocates the array whose address is `pptr` (a T **
 * for any object type T) to the first doubling of *cap (16 when it is 0)
 * that holds `need` elements of `size` bytes, and sets *cap. KV_OK, or
 * KV_ENOMEM with the array and *cap unchanged (still the caller's to free). */
int kv_buf_reserve(void *pptr, size_t *cap, size_t need, size_t size);

#define KV_RESERVE(ptr, cap, need) kv_buf_reserve(&(ptr), &(cap), (need), sizeof *(ptr))

#endif
