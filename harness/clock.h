/* clock.h - the monotonic clock the harness times things with. */
#ifndef HX_CLOCK_H
#define HX_CLOCK_H

#include <time.h>

/* Seconds on the monotonic clock (CLOCK_MONOTONIC: immune to wall-clock changes). */
static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#endif
