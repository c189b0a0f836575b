/* kv_error.h - error codes and the per-thread error message of kvbench.
 *
 * Every fallible function returns 0 (KV_OK) or one of the negative codes
 * below, and on failure leaves a human-readable message (naming the file,
 * the byte offset or line, and what was expected) retrievable with
 * kv_last_error(). Only main() turns an error into an exit status. */
#ifndef KV_ERROR_H
#define KV_ERROR_H

enum kv_status {
    KV_OK           =  0,
    KV_EIO          = -1, /* open/read/write/mmap failed */
    KV_EFORMAT      = -2, /* the bytes of a file break its format */
    KV_ENOMEM       = -3, /* allocation failed */
    KV_EINVAL       = -4, /* a caller passed an invalid argument */
    KV_EUNSUPPORTED = -5, /* valid but not supported (a tensor type, an architecture) */
    KV_ENOTFOUND    = -6, /* a key, tensor or name is absent */
    KV_ETYPE        = -7, /* a key exists but holds another type */
};

/* Formats the message into this thread's buffer and returns `code`, so that
 * the usual idiom is `return kv_errorf(KV_EFORMAT, "%s: offset %llu: ...", ...);`. */
int kv_errorf(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The last message set on this thread ("" if none). Valid until the next kv_errorf. */
const char *kv_last_error(void);

/* A short name for a code ("format error", ...). */
const char *kv_status_name(int code);

#endif
