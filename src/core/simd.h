/* One vector type for the hand-written float kernels (conv_direct.c, conv_winograd.c): GCC
 * vector extensions of VL floats, FMA from intrinsics under __AVX512F__ (16 lanes) or __AVX2__
 * + __FMA__ (8 lanes), else plain multiply-add on 4 lanes (the portable build: same results up
 * to rounding). Private to the library. */
#ifndef NNZIP_SIMD_H
#define NNZIP_SIMD_H

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VL 16 /* floats per vector */
typedef float vf __attribute__((vector_size(64)));
static inline vf vfma(vf a, vf b, vf c) {
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
}
static inline vf vset1(float s) { return (vf)_mm512_set1_ps(s); }
static inline float vhsum(vf v) { return _mm512_reduce_add_ps((__m512)v); }
#elif defined(__AVX2__) && defined(__FMA__)
#define VL 8
typedef float vf __attribute__((vector_size(32)));
static inline vf vfma(vf a, vf b, vf c) {
    return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
}
static inline vf vset1(float s) { return (vf)_mm256_set1_ps(s); }
static inline float vhsum(vf v) {
    float s = 0;
    for (int l = 0; l < VL; l++) s += v[l];
    return s;
}
#else
#define VL 4
typedef float vf __attribute__((vector_size(16)));
static inline vf vfma(vf a, vf b, vf c) { return a * b + c; }
static inline vf vset1(float s) { return (vf){s, s, s, s}; }
static inline float vhsum(vf v) { return (v[0] + v[1]) + (v[2] + v[3]); }
#endif

/* an empty asm that makes GCC keep v in a register (x86; elsewhere nothing) */
#if defined(__x86_64__) || defined(__i386__)
#define KEEP_IN_REG(v) __asm__("" : "+v"(v))
#else
#define KEEP_IN_REG(v) ((void)0)
#endif

/* max(v, 0) lane by lane: the comparison's all-ones mask keeps the positive lanes */
typedef int vmask __attribute__((vector_size(VL * 4)));
static inline vf vrelu(vf v) { return (vf)((vmask)v & (v > vset1(0.0f))); }

/* VSHUFFLE(a, b, m): lane i of the result is lane m[i] of a (m[i] < VL) or m[i] - VL of b */
#if defined(__clang__)
/* clang has no __builtin_shuffle (its __builtin_shufflevector wants constant lane lists); the
 * fuzz targets are built with clang, so a lane loop serves there */
static inline vf vshuffle2(vf a, vf b, vmask m) {
    vf r;
    for (int i = 0; i < VL; i++) r[i] = m[i] < VL ? a[m[i]] : b[m[i] - VL];
    return r;
}
#define VSHUFFLE(a, b, m) vshuffle2(a, b, m)
#else
#define VSHUFFLE(a, b, m) __builtin_shuffle(a, b, m)
#endif

/* unaligned, aliasing-safe vector access to float arrays */
typedef float vfu __attribute__((vector_size(VL * 4), aligned(4), may_alias));
static inline vf vload(const float *p) { return *(const vfu *)p; }
static inline void vstore(float *p, vf v) { *(vfu *)p = v; }


/* r[0 .. VL) rows of a VL x VL block -> its transpose: log2(VL) rounds of swapping the
 * off-diagonal blocks (of VL/2, then VL/4 .. lanes), two two-vector shuffles per row pair */
static inline __attribute__((always_inline)) void vtranspose(vf *r) {
#if VL == 8
    /* AVX2 has no two-source lane permute: GCC turned the generic shuffles into slow sequences
     * (the Winograd layout changes took 27% of a ResNet-20 step), so the classic unpack /
     * shuffle / 128-bit swap transpose is spelled out */
    __m256 t[8], a[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps((__m256)r[i], (__m256)r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps((__m256)r[i], (__m256)r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        a[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        a[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        a[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        a[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        r[i] = (vf)_mm256_permute2f128_ps(a[i], a[i + 4], 0x20);
        r[i + 4] = (vf)_mm256_permute2f128_ps(a[i], a[i + 4], 0x31);
    }
#else
    for (int bs = VL / 2; bs >= 1; bs /= 2) {
        vmask lo, hi;
        for (int k = 0; k < VL; k++) {
            lo[k] = k & bs ? VL + k - bs : k;
            hi[k] = k & bs ? VL + k : k + bs;
        }
        for (int i = 0; i < VL; i++)
            if (!(i & bs)) {
                const vf x = r[i], y = r[i + bs];
                r[i] = VSHUFFLE(x, y, lo);
                r[i + bs] = VSHUFFLE(x, y, hi);
            }
    }
#endif
}

#endif
