/* A tiny test harness: CHECK records a failure and goes on; each test binary prints
 * "name: N passed, M failed" and exits non-zero on any failure. */
#ifndef NNZIP_TESTLIB_H
#define NNZIP_TESTLIB_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tl_pass, tl_fail;

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (cond) {                                                                            \
            tl_pass++;                                                                         \
        } else {                                                                               \
            tl_fail++;                                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                    \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fprintf(stderr, "\n");                                                             \
        }                                                                                      \
    } while (0)

/* max |a-b| / max(|b|, floor) over n values */
static inline double tl_max_rel_err(const float *a, const float *b, size_t n, double floor_) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        double s = fabs((double)b[i]);
        if (s < floor_) s = floor_;
        if (d / s > worst || d != d) worst = (d != d) ? INFINITY : d / s;
    }
    return worst;
}

static inline int tl_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, tl_pass, tl_fail);
    return tl_fail ? 1 : 0;
}

#endif
