/* Monotonic wall-clock seconds, for timing results and progress. Private to the library. */
#ifndef NNZIP_CLOCK_H
#define NNZIP_CLOCK_H

#include <time.h>

static inline double nz_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
