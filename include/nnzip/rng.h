/* nnzip random numbers: xoshiro256** seeded through splitmix64. The state is a value the caller
 * owns and passes explicitly; there is no global generator, so runs are reproducible from --seed. */
#ifndef NNZIP_RNG_H
#define NNZIP_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} nz_rng;

void nz_rng_seed(nz_rng *r, uint64_t seed);
uint64_t nz_rng_u64(nz_rng *r);
/* uniform in [0, 1) with 24 bits of precision */
float nz_rng_uniform(nz_rng *r);
/* uniform in [lo, hi) */
float nz_rng_range(nz_rng *r, float lo, float hi);
/* standard normal (Box-Muller, one value per call) */
float nz_rng_normal(nz_rng *r);
/* unbiased integer in [0, n) for n > 0 */
uint64_t nz_rng_below(nz_rng *r, uint64_t n);
/* Fisher-Yates shuffle of an index array */
void nz_rng_shuffle(nz_rng *r, int32_t *a, size_t n);

#endif
