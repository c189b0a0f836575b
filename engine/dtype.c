/* dtype.c - names of the weight element types. */
#include "dtype.h"

#include <ctype.h>
#include <string.h>

#include "kv_error.h"

static const struct { kv_dtype t; const char *name; } kv_dtype_names[] = {
    {KV_F32, "f32"}, {KV_F16, "f16"}, {KV_BF16, "bf16"}, {KV_Q8_0, "q8_0"}, {KV_Q4_0, "q4_0"},
    {KV_Q2_K, "q2_k"}, {KV_Q3_K, "q3_k"}, {KV_Q4_K, "q4_k"}, {KV_Q5_K, "q5_k"}, {KV_Q6_K, "q6_k"}, {KV_Q8_G, "q8_g"},
};

const char *kv_dtype_name(kv_dtype t) {
    for (size_t i = 0; i < sizeof kv_dtype_names / sizeof kv_dtype_names[0]; i++)
        if (kv_dtype_names[i].t == t) return kv_dtype_names[i].name;
    return NULL;
}

int kv_dtype_parse(const char *name, kv_dtype *out) {
    char low[16];
    size_t n = strlen(name);
    if (n >= sizeof low) return kv_errorf(KV_EINVAL, "unknown tensor type '%s'", name);
    for (size_t i = 0; i <= n; i++) low[i] = (char)tolower((unsigned char)name[i]);
    for (size_t i = 0; i < sizeof kv_dtype_names / sizeof kv_dtype_names[0]; i++)
        if (strcmp(kv_dtype_names[i].name, low) == 0) {
            *out = kv_dtype_names[i].t;
            return KV_OK;
        }
    return kv_errorf(KV_EINVAL, "unknown tensor type '%s' (expected f32, f16, bf16, q8_0, q4_0, q2_k, q3_k, q4_k, q5_k, q6_k)", name);
}
