// AVX2 + FMA depthwise 3×3 (stride 1, padding 1, bias and optional ReLU fused), chosen at run
// time. Only this file's functions carry the target attribute; the rest of the binary stays on
// the x86-64 baseline, so it still starts on any x86-64 CPU.
#include "CLivenessKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define CLK_AVX2_FMA __attribute__((target("avx2,fma")))
#define CLK_INLINE __attribute__((always_inline)) static inline

bool clk_avx2_fma_available(void) {
    // Both checks include the OS saving the YMM registers (XGETBV), not just the CPUID bits.
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/// The nine weights and the bias of one channel, broadcast to eight lanes (13 of the 16 YMM
/// registers once inlined).
typedef struct {
    __m256 w[9];
    __m256 bias;
} clk_filter;

/// Which sides of an 8-column block are the image's edges: there the neighbour column is padding
/// (zero), so it is shifted in from the centre vector instead of loaded from outside the row.
enum { CLK_LEFT_EDGE = 1, CLK_RIGHT_EDGE = 2 };

/// Columns x − 1, x and x + 1 … x + 8 of one input row, as three vectors.
CLK_AVX2_FMA CLK_INLINE void clk_load_row(
    const float *row, ptrdiff_t x, int edges, __m256 *left, __m256 *centre, __m256 *right) {
    *centre = _mm256_loadu_ps(row + x);
    if (edges & CLK_LEFT_EDGE) {
        const __m256i lanes = _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6);
        *left = _mm256_blend_ps(_mm256_permutevar8x32_ps(*centre, lanes), _mm256_setzero_ps(), 0x01);
    } else {
        *left = _mm256_loadu_ps(row + x - 1);
    }
    if (edges & CLK_RIGHT_EDGE) {
        const __m256i lanes = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7);
        *right = _mm256_blend_ps(_mm256_permutevar8x32_ps(*centre, lanes), _mm256_setzero_ps(), 0x80);
    } else {
        *right = _mm256_loadu_ps(row + x + 1);
    }
}

/// Columns x … x + 7 of output rows y and y + 1 from input rows y − 1 … y + 2 (r0 … r3). Each
/// input row is loaded once for both outputs. One partial sum per input row, added at the end:
/// a single chain of nine dependent FMAs per output measured 2–9 % slower.
CLK_AVX2_FMA CLK_INLINE void clk_pair_block(
    const float *r0, const float *r1, const float *r2, const float *r3, ptrdiff_t x, int edges,
    const clk_filter *f, bool relu, float *first, float *second) {
    __m256 a, b, c;
    clk_load_row(r0, x, edges, &a, &b, &c);
    const __m256 upper0 =
        _mm256_fmadd_ps(f->w[2], c, _mm256_fmadd_ps(f->w[1], b, _mm256_fmadd_ps(f->w[0], a, f->bias)));
    clk_load_row(r1, x, edges, &a, &b, &c);
    const __m256 upper1 = _mm256_fmadd_ps(f->w[5], c, _mm256_fmadd_ps(f->w[4], b, _mm256_mul_ps(f->w[3], a)));
    const __m256 lower0 =
        _mm256_fmadd_ps(f->w[2], c, _mm256_fmadd_ps(f->w[1], b, _mm256_fmadd_ps(f->w[0], a, f->bias)));
    clk_load_row(r2, x, edges, &a, &b, &c);
    const __m256 upper2 = _mm256_fmadd_ps(f->w[8], c, _mm256_fmadd_ps(f->w[7], b, _mm256_mul_ps(f->w[6], a)));
    const __m256 lower1 = _mm256_fmadd_ps(f->w[5], c, _mm256_fmadd_ps(f->w[4], b, _mm256_mul_ps(f->w[3], a)));
    clk_load_row(r3, x, edges, &a, &b, &c);
    const __m256 lower2 = _mm256_fmadd_ps(f->w[8], c, _mm256_fmadd_ps(f->w[7], b, _mm256_mul_ps(f->w[6], a)));
    __m256 upper = _mm256_add_ps(_mm256_add_ps(upper0, upper1), upper2);
    __m256 lower = _mm256_add_ps(_mm256_add_ps(lower0, lower1), lower2);
    if (relu) {
        // max_ps returns its second operand for NaN: 0, as the Swift kernel's scalar `a > 0 ? a : 0`.
        upper = _mm256_max_ps(upper, _mm256_setzero_ps());
        lower = _mm256_max_ps(lower, _mm256_setzero_ps());
    }
    _mm256_storeu_ps(first + x, upper);
    _mm256_storeu_ps(second + x, lower);
}

/// A whole pair of output rows, width ≥ 8: the edge blocks at 0 and width − 8, full blocks in
/// between; blocks may overlap (the same values are written twice).
CLK_AVX2_FMA CLK_INLINE void clk_pair_row(
    const float *r0, const float *r1, const float *r2, const float *r3, ptrdiff_t width, const clk_filter *f,
    bool relu, float *first, float *second) {
    if (width == 8) {
        clk_pair_block(r0, r1, r2, r3, 0, CLK_LEFT_EDGE | CLK_RIGHT_EDGE, f, relu, first, second);
        return;
    }
    clk_pair_block(r0, r1, r2, r3, 0, CLK_LEFT_EDGE, f, relu, first, second);
    for (ptrdiff_t x = 8; x <= width - 9; x += 8) {
        clk_pair_block(r0, r1, r2, r3, x, 0, f, relu, first, second);
    }
    clk_pair_block(r0, r1, r2, r3, width - 8, CLK_RIGHT_EDGE, f, relu, first, second);
}

/// One column of a pair of output rows, for rows narrower than 8.
CLK_AVX2_FMA static inline void clk_pair_column(
    const float *r0, const float *r1, const float *r2, const float *r3, ptrdiff_t x, ptrdiff_t width,
    const float *w, float bias, bool relu, float *first, float *second) {
    float upper = bias;
    float lower = bias;
    for (ptrdiff_t dx = -1; dx <= 1; dx++) {
        const ptrdiff_t i = x + dx;
        if (i < 0 || i >= width) continue;
        upper += w[dx + 1] * r0[i] + w[dx + 4] * r1[i] + w[dx + 7] * r2[i];
        lower += w[dx + 1] * r1[i] + w[dx + 4] * r2[i] + w[dx + 7] * r3[i];
    }
    first[x] = relu ? (upper > 0 ? upper : 0) : upper;
    second[x] = relu ? (lower > 0 ? lower : 0) : lower;
}

CLK_AVX2_FMA void clk_depthwise3x3_avx2_fma(
    const float *input, ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, const float *weights,
    const float *bias, bool relu, const float *zero_row, float *spare_row, float *output) {
    const ptrdiff_t area = height * width;
    for (ptrdiff_t channel = 0; channel < channels; channel++) {
        const float *plane = input + channel * area;
        const float *w = weights + channel * 9;
        clk_filter filter;
        for (int k = 0; k < 9; k++) filter.w[k] = _mm256_set1_ps(w[k]);
        filter.bias = _mm256_set1_ps(bias[channel]);
        for (ptrdiff_t y = 0; y < height; y += 2) {
            const float *r0 = y >= 1 ? plane + (y - 1) * width : zero_row;
            const float *r1 = plane + y * width;
            const float *r2 = y + 1 < height ? plane + (y + 1) * width : zero_row;
            const float *r3 = y + 2 < height ? plane + (y + 2) * width : zero_row;
            float *first = output + channel * area + y * width;
            float *second = y + 1 < height ? first + width : spare_row;
            if (width < 8) {
                for (ptrdiff_t x = 0; x < width; x++) {
                    clk_pair_column(r0, r1, r2, r3, x, width, w, bias[channel], relu, first, second);
                }
            } else if (relu) {  // two copies of the row loop, neither testing `relu` per block
                clk_pair_row(r0, r1, r2, r3, width, &filter, true, first, second);
            } else {
                clk_pair_row(r0, r1, r2, r3, width, &filter, false, first, second);
            }
        }
    }
}

/// Input columns c0 … c0 + 15 of one row (zero past `width`, the right padding) split into the
/// windows of output columns c0/2 … c0/2 + 7: left = c0 + 2j − 1, centre = c0 + 2j, right = c0 + 2j + 1.
CLK_AVX2_FMA CLK_INLINE void clk_stride2_row(
    const float *row, ptrdiff_t c0, ptrdiff_t width, __m256 *left, __m256 *centre, __m256 *right) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 lo = _mm256_maskload_ps(row + c0, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(width - c0)), lanes));
    const __m256 hi =
        _mm256_maskload_ps(row + c0 + 8, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(width - c0 - 8)), lanes));
    // Per 128-bit half: [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6], then the 64-bit pairs put in order.
    const __m256 evens = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    const __m256 odds = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
    *centre = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(evens), _MM_SHUFFLE(3, 1, 2, 0)));
    *right = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(odds), _MM_SHUFFLE(3, 1, 2, 0)));
    const __m256 shifted = _mm256_permutevar8x32_ps(*right, _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6));
    *left = _mm256_blend_ps(shifted, _mm256_set1_ps(c0 > 0 ? row[c0 - 1] : 0.0f), 0x01);
}

CLK_AVX2_FMA void clk_depthwise3x3s2_avx2_fma(
    const float *input, ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, const float *weights,
    const float *bias, const float *zero_row, float *output) {
    const ptrdiff_t out_height = (height - 1) / 2 + 1;
    const ptrdiff_t out_width = (width - 1) / 2 + 1;
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (ptrdiff_t channel = 0; channel < channels; channel++) {
        const float *plane = input + channel * height * width;
        const float *w = weights + channel * 9;
        __m256 f[9];
        for (int k = 0; k < 9; k++) f[k] = _mm256_set1_ps(w[k]);
        const __m256 shift = _mm256_set1_ps(bias[channel]);
        float *target = output + channel * out_height * out_width;
        for (ptrdiff_t oy = 0; oy < out_height; oy++) {
            const ptrdiff_t iy = 2 * oy - 1;
            const float *r0 = iy >= 0 ? plane + iy * width : zero_row;
            const float *r1 = plane + (iy + 1) * width;
            const float *r2 = iy + 2 < height ? plane + (iy + 2) * width : zero_row;
            for (ptrdiff_t ox = 0; ox < out_width; ox += 8) {
                __m256 a, b, c;
                clk_stride2_row(r0, 2 * ox, width, &a, &b, &c);
                const __m256 s0 = _mm256_fmadd_ps(f[2], c, _mm256_fmadd_ps(f[1], b, _mm256_fmadd_ps(f[0], a, shift)));
                clk_stride2_row(r1, 2 * ox, width, &a, &b, &c);
                const __m256 s1 = _mm256_fmadd_ps(f[5], c, _mm256_fmadd_ps(f[4], b, _mm256_mul_ps(f[3], a)));
                clk_stride2_row(r2, 2 * ox, width, &a, &b, &c);
                const __m256 s2 = _mm256_fmadd_ps(f[8], c, _mm256_fmadd_ps(f[7], b, _mm256_mul_ps(f[6], a)));
                const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(out_width - ox)), lanes);
                _mm256_maskstore_ps(target + oy * out_width + ox, mask, _mm256_add_ps(_mm256_add_ps(s0, s1), s2));
            }
        }
    }
}

#else

bool clk_avx2_fma_available(void) { return false; }

void clk_depthwise3x3_avx2_fma(
    const float *input, ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, const float *weights,
    const float *bias, bool relu, const float *zero_row, float *spare_row, float *output) {
    // Not compiled for this architecture, and never called: clk_avx2_fma_available() is false.
    (void)input, (void)channels, (void)height, (void)width, (void)weights, (void)bias, (void)relu;
    (void)zero_row, (void)spare_row, (void)output;
    __builtin_trap();
}

void clk_depthwise3x3s2_avx2_fma(
    const float *input, ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, const float *weights,
    const float *bias, const float *zero_row, float *output) {
    (void)input, (void)channels, (void)height, (void)width, (void)weights, (void)bias, (void)zero_row, (void)output;
    __builtin_trap();
}

#endif
