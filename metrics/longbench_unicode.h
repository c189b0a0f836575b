/* longbench_unicode.h - the character classes of Python's str and re that
 * LongBench's English scorers depend on, as tables generated from Python
 * itself (metrics/gen_longbench_unicode.py writes longbench_unicode.c; its
 * header names the Python and Unicode versions). Private to metrics/
 * (longbench.c, ruler.c). */
#ifndef MET_LB_UNICODE_H
#define MET_LB_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Sorted, disjoint [lo, hi] code point ranges. */
/* Whether cp lies in one of r[0..n) (binary search). */
static inline int met_lb_in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

extern const uint32_t met_lb_word_ranges[][2];      /* re's \w: isalnum() or '_' */
extern const size_t met_lb_word_ranges_n;
extern const uint32_t met_lb_digit_ranges[][2];     /* re's \d: isdecimal() */
extern const size_t met_lb_digit_ranges_n;
extern const uint32_t met_lb_space_ranges[][2];     /* str.split()'s white space */
extern const size_t met_lb_space_ranges_n;
extern const uint32_t met_lb_cased_ranges[][2];     /* cased, not case-ignorable */
extern const size_t met_lb_cased_ranges_n;
extern const uint32_t met_lb_ignorable_ranges[][2]; /* case-ignorable */
extern const size_t met_lb_ignorable_ranges_n;

/* Python's str.lower() of the code points a[0..n) into out (room for 3n),
 * final sigma included; returns the length (longbench.c). */
size_t met_lb_lower(const uint32_t *a, size_t n, uint32_t *out);

/* first, first + stride, ... (count code points) lowercase to cp + delta. */
typedef struct met_lb_lower_run {
    uint32_t first;
    uint16_t count;
    uint8_t stride;
    int32_t delta;
} met_lb_lower_run;
extern const met_lb_lower_run met_lb_lower_runs[];
extern const size_t met_lb_lower_runs_n;

/* A character whose lowercase is longer than one character. */
typedef struct met_lb_lower_multi {
    uint32_t cp;
    uint8_t n;
    uint32_t low[3];
} met_lb_lower_multi;
extern const met_lb_lower_multi met_lb_lower_multis[];
extern const size_t met_lb_lower_multis_n;

#endif
