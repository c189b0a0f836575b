/* clock.h - the monotonic clock everything is timed with. */
#ifndef KV_CLOCK_H
#define KV_CLOCK_H

/* Seconds on CLOCK_MONOTONIC (immune to wall-clock changes); only
 * differences mean anything. */
double kv_now_s(void);

#endif
