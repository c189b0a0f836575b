/* clock.c - see clock.h. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */
#include "clock.h"

#include <time.h>

double kv_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
