/* Training augmentation: torchvision's RandomCrop(size, padding=pad) then
 * RandomHorizontalFlip(), applied to a batch nz_batch_fill already preprocessed. The padding is a
 * raw zero pixel, so once preprocessed it is ((float)0 * scale - mean[c]) / std[c], computed with
 * nz_batch_fill's formula so padded and real pixels go through the same arithmetic.
 *
 * In place, one row at a time, with no scratch memory (so nothing can fail): a crop moves every
 * row of a plane by the same vertical offset, so walking the rows away from the side the data
 * comes from never overwrites a row still to be read, and the shift within a row is a memmove. */
#include "nnzip/data.h"

#include <assert.h>
#include <string.h>

static void fill(float *p, int n, float v) {
    for (int i = 0; i < n; i++) p[i] = v;
}

static void reverse(float *p, int n) {
    for (int i = 0, j = n - 1; i < j; i++, j--) {
        float t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

/* One plane p [H, W], in place: out[y][x] = in[y + oy][x + ox] (padv where that is outside),
 * then each row mirrored if flip. */
static void crop_flip_plane(float *p, int H, int W, int oy, int ox, int flip, float padv) {
    /* columns [x0, x1) of the output have a source pixel; either may be empty */
    int x0 = ox < 0 ? -ox : 0;
    int x1 = ox > 0 ? W - ox : W;
    if (x0 > W) x0 = W;
    if (x1 < x0) x1 = x0;
    for (int k = 0; k < H; k++) {
        const int y = oy > 0 ? k : H - 1 - k; /* source rows are read before being written */
        float *dst = p + (size_t)y * (size_t)W;
        const int sy = y + oy;
        if (sy < 0 || sy >= H || x1 == x0) {
            fill(dst, W, padv);
            continue;
        }
        /* memmove: when oy == 0 the source is this very row */
        memmove(dst + x0, p + (size_t)sy * (size_t)W + x0 + ox, (size_t)(x1 - x0) * sizeof *dst);
        fill(dst, x0, padv);
        fill(dst + x1, W - x1, padv);
        if (flip) reverse(dst, W);
    }
}

void nz_augment_batch(float *x, int B, nz_shape s, const nz_preproc *pre, const nz_augment *aug,
                      nz_rng *rng) {
    if (!aug || B <= 0) return;
    const int pad = aug->crop_pad;
    assert(pad >= 0);
    if (pad <= 0 && !aug->flip) return; /* identity, and no draws */
    const size_t hw = (size_t)s.h * (size_t)s.w;
    const size_t per = (size_t)s.c * hw;
    /* the preprocessed zero pixel per channel; channels without stats are only scaled */
    float padv[4] = {0, 0, 0, 0};
    for (int c = 0; pre && c < 4 && c < pre->n_ch; c++)
        padv[c] = ((float)0 * pre->scale - pre->mean[c]) / pre->std[c];
    for (int b = 0; b < B; b++) {
        /* Fixed draw order, documented in data.h: dy, dx (if pad > 0), then the flip (if on). */
        int oy = 0, ox = 0, flip = 0;
        if (pad > 0) {
            oy = (int)nz_rng_below(rng, (uint64_t)(2 * pad + 1)) - pad;
            ox = (int)nz_rng_below(rng, (uint64_t)(2 * pad + 1)) - pad;
        }
        if (aug->flip) flip = (int)nz_rng_below(rng, 2);
        if (oy == 0 && ox == 0 && !flip) continue;
        float *xs = x + (size_t)b * per;
        for (int c = 0; c < s.c; c++)
            crop_flip_plane(xs + (size_t)c * hw, s.h, s.w, oy, ox, flip, c < 4 ? padv[c] : 0.0f);
    }
}
