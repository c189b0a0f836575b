/* full.c - keep everything: the 100% reference every method is measured against. */
#include "policy_impl.h"

const pol_ops pol_full_ops = {
    .name = "full",
    .summary = "keep every token (the reference)",
};
