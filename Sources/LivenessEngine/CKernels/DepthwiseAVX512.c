// AVX-512 depthwise 3×3 (stride 1, padding 1, bias and optional ReLU fused), chosen at run time on
// rows of 16 floats or more (YuNet's 160-, 80-, 40- and 20-wide maps, MiniFASNet's 40 and 20);
// narrower rows go to the AVX2 kernel. Lane for lane the same operations in the same order as
// clk_depthwise3x3_avx2_fma (DepthwiseAVX2.c), so the two give the same floats bit for bit; the
// gain is twice the lanes per instruction. Tests hold the two against each other.
#include "CLivenessKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define CLK_AVX512 __attribute__((target("avx512f")))
#define CLK_INLINE __attribute__((always_inline)) static inline

typedef struct {
    __m512 w[9];
    __m512 bias;
} clk_filter16;

enum { CLK16_LEFT_EDGE = 1, CLK16_RIGHT_EDGE = 2 };

/// Columns x − 1, x and x + 1 … x + 16 of one input row; at the image's edges the neighbour column is
/// padding (zero), shifted in from the centre vector instead of loaded from outside the row.
CLK_AVX512 CLK_INLINE void clk16_load_row(
    const float *row, ptrdiff_t x, int edges, __m512 *left, __m512 *centre, __m512 *right) {
    *centre = _mm512_loadu_ps(row + x);
    if (edges & CLK16_LEFT_EDGE) {
        const __m512i lanes = _mm512_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14);
        *left = _mm512_maskz_permutexvar_ps((__mmask16)0xFFFE, lanes, *centre);
    } else {
        *left = _mm512_loadu_ps(row + x - 1);
    }
    if (edges & CLK16_RIGHT_EDGE) {
        const __m512i lanes = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 15);
        *right = _mm512_maskz_permutexvar_ps((__mmask16)0x7FFF, lanes, *centre);
    } else {
        *right = _mm512_loadu_ps(row + x + 1);
    }
}

/// Columns x … x + 15 of output rows y and y + 1 from input rows y − 1 … y + 2 (r0 … r3): the
/// partial sums of clk_pair_block (DepthwiseAVX2.c), in its order.
CLK_AVX512 CLK_INLINE void clk16_pair_block(
    const float *r0, const float *r1, const float *r2, const float *r3, ptrdiff_t x, int edges,
    const clk_filter16 *f, bool relu, float *first, float *second) {
    __m512 a, b, c;
    clk16_load_row(r0, x, edges, &a, &b, &c);
    const __m512 upper0 =
        _mm512_fmadd_ps(f->w[2], c, _mm512_fmadd_ps(f->w[1], b, _mm512_fmadd_ps(f->w[0], a, f->bias)));
    clk16_load_row(r1, x, edges, &a, &b, &c);
    const __m512 upper1 = _mm512_fmadd_ps(f->w[5], c, _mm512_fmadd_ps(f->w[4], b, _mm512_mul_ps(f->w[3], a)));
    const __m512 lower0 =
        _mm512_fmadd_ps(f->w[2], c, _mm512_fmadd_ps(f->w[1], b, _mm512_fmadd_ps(f->w[0], a, f->bias)));
    clk16_load_row(r2, x, edges, &a, &b, &c);
    const __m512 upper2 = _mm512_fmadd_ps(f->w[8], c, _mm512_fmadd_ps(f->w[7], b, _mm512_mul_ps(f->w[6], a)));
    const __m512 lower1 = _mm512_fmadd_ps(f->w[5], c, _mm512_fmadd_ps(f->w[4], b, _mm512_mul_ps(f->w[3], a)));
    clk16_load_row(r3, x, edges, &a, &b, &c);
    const __m512 lower2 = _mm512_fmadd_ps(f->w[8], c, _mm512_fmadd_ps(f->w[7], b, _mm512_mul_ps(f->w[6], a)));
    __m512 upper = _mm512_add_ps(_mm512_add_ps(upper0, upper1), upper2);
    __m512 lower = _mm512_add_ps(_mm512_add_ps(lower0, lower1), lower2);
    if (relu) {
        // max_ps returns its second operand for NaN: 0, as the AVX2 kernel.
        upper = _mm512_max_ps(upper, _mm512_setzero_ps());
        lower = _mm512_max_ps(lower, _mm512_setzero_ps());
    }
    _mm512_storeu_ps(first + x, upper);
    _mm512_storeu_ps(second + x, lower);
}

/// A whole pair of output rows, width ≥ 16: edge blocks at 0 and width − 16, full blocks between;
/// blocks may overlap (the same values are written twice).
CLK_AVX512 CLK_INLINE void clk16_pair_row(
    const float *r0, const float *r1, const float *r2, const float *r3, ptrdiff_t width, const clk_filter16 *f,
    bool relu, float *first, float *second) {
    if (width == 16) {
        clk16_pair_block(r0, r1, r2, r3, 0, CLK16_LEFT_EDGE | CLK16_RIGHT_EDGE, f, relu, first, second);
        return;
    }
    clk16_pair_block(r0, r1, r2, r3, 0, CLK16_LEFT_EDGE, f, relu, first, second);
    for (ptrdiff_t x = 16; x <= width - 17; x += 16) {
        clk16_pair_block(r0, r1, r2, r3, x, 0, f, relu, first, second);
    }
    clk16_pair_block(r0, r1, r2, r3, width - 16, CLK16_RIGHT_EDGE, f, relu, first, second);
}

CLK_AVX512 void clk_depthwise3x3_avx512(
    const float *input, ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, const float *weights,
    const float *bias, bool relu, const float *zero_row, float *spare_row, float *output) {
    if (width < 16) {
        clk_depthwise3x3_avx2_fma(input, channels, height, width, weights, bias, relu, zero_row, spare_row, output);
        return;
    }
    const ptrdiff_t area = height * width;
    for (ptrdiff_t channel = 0; channel < channels; channel++) {
        const float *plane = input + channel * area;
        const float *w = weights + channel * 9;
        clk_filter16 filter;
        for (int k = 0; k < 9; k++) filter.w[k] = _mm512_set1_ps(w[k]);
        filter.bias = _mm512_set1_ps(bias[channel]);
        for (ptrdiff_t y = 0; y < height; y += 2) {
            const float *r0 = y >= 1 ? plane + (y - 1) * width : zero_row;
            const float *r1 = plane + y * width;
            const float *r2 = y + 1 < height ? plane + (y + 1) * width : zero_row;
            const float *r3 = y + 2 < height ? plane + (y + 2) * width : zero_row;
            float *first = output + channel * area + y * width;
            float *second = y + 1 < height ? first + width : spare_row;
            if (relu) {  // two copies of the row loop, neither testing `relu` per block
                clk16_pair_row(r0, r1, r2, r3, width, &filter, true, first, second);
            } else {
                clk16_pair_row(r0, r1, r2, r3, width, &filter, false, first, second);
            }
        }
    }
}

#else

void clk_depthwise3x3_avx512(
    const float *input, ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, const float *weights,
    const float *bias, bool relu, const float *zero_row, float *spare_row, float *output) {
    (void)input, (void)channels, (void)height, (void)width, (void)weights, (void)bias, (void)relu;
    (void)zero_row, (void)spare_row, (void)output;
    __builtin_trap();
}

#endif
