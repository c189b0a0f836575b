#include "kv_error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char kv_error_buf[1024];

int kv_errorf(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kv_error_buf, sizeof kv_error_buf, fmt, ap);
    va_end(ap);
    return code;
}

const char *kv_last_error(void) { return kv_error_buf; }

const char *kv_status_name(int code) {
    switch (code) {
    case KV_OK: return "ok";
    case KV_EIO: return "I/O error";
    case KV_EFORMAT: return "format error";
    case KV_ENOMEM: return "out of memory";
    case KV_EINVAL: return "invalid argument";
    case KV_EUNSUPPORTED: return "unsupported";
    case KV_ENOTFOUND: return "not found";
    case KV_ETYPE: return "wrong type";
    default: return "unknown error";
    }
}
