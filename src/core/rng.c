/* xoshiro256** (Blackman & Vigna), seeded by splitmix64 so that nearby seeds give unrelated
 * streams. The generator state is always passed in: no hidden global state. */
#include "nnzip/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void nz_rng_seed(nz_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t nz_rng_u64(nz_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float nz_rng_uniform(nz_rng *r) { return (float)(nz_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float nz_rng_range(nz_rng *r, float lo, float hi) { return lo + (hi - lo) * nz_rng_uniform(r); }

float nz_rng_normal(nz_rng *r) {
    /* 1 - u keeps the log argument in (0, 1] */
    double u1 = 1.0 - (double)(nz_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    double u2 = (double)(nz_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint64_t nz_rng_below(nz_rng *r, uint64_t n) {
    /* Lemire-style rejection keeps it unbiased */
    uint64_t limit = -n % n;
    for (;;) {
        uint64_t x = nz_rng_u64(r);
        if (x >= limit) return x % n;
    }
}

void nz_rng_shuffle(nz_rng *r, int32_t *a, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)nz_rng_below(r, i);
        int32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}
