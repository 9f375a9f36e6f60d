// The ViT's softmax exponentials, exp(x − shift) over a row, in AVX-512 and AVX2, chosen at run time
// like the other kernels. Why C: Swift's SIMD8<Float> stays on the x86-64 baseline (two SSE halves),
// and the attention's 4 × 197 × 197 exponentials per image were 2.5 % of a frame's CPU.
//
// Bit for bit the Swift `expNonPositive8` (VectorKernels.swift) lane by lane: the same constants and
// the same operations in the same order, every multiply and add a separate intrinsic (no fused
// multiply-add, which would round differently), and the 8-lane partial sums accumulated group by
// group in the order the Swift loop adds them. Tests hold the two against each other.
#include "CLivenessKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define CLK_EXP_BODY(SUFFIX, VEC, SET1, ADD, SUB, MUL, CAST_I, CAST_F, ADD_I, SUB_I, SLLI, ZERO_BELOW)       \
    const VEC magic = SET1(12582912.0f);                                                                      \
    const VEC shifted = ADD(MUL(x, SET1(1.44269504f)), magic);                                                \
    const VEC n = SUB(shifted, magic);                                                                        \
    VEC r = SUB(x, MUL(n, SET1(0.693359375f)));                                                               \
    r = ADD(r, MUL(n, SET1(2.1219444e-4f)));                                                                  \
    VEC p = SET1(1.9875691e-4f);                                                                              \
    p = ADD(MUL(p, r), SET1(1.3981999e-3f));                                                                  \
    p = ADD(MUL(p, r), SET1(8.333452e-3f));                                                                   \
    p = ADD(MUL(p, r), SET1(4.1665796e-2f));                                                                  \
    p = ADD(MUL(p, r), SET1(1.6666665e-1f));                                                                  \
    p = ADD(MUL(p, r), SET1(5.0000001e-1f));                                                                  \
    p = ADD(ADD(MUL(p, MUL(r, r)), r), SET1(1.0f));                                                           \
    const VEC scale = CAST_F(SLLI(ADD_I(SUB_I(CAST_I(shifted), CAST_I(magic)), SUFFIX##_set1_epi32(127)), 23)); \
    const VEC e = ZERO_BELOW(MUL(p, scale), x);

__attribute__((target("avx512f"))) void clk_exp_shifted_avx512(
    float *row, ptrdiff_t groups, float shift, float *sums) {
    const __m512 offset = _mm512_set1_ps(shift);
    __m256 total = _mm256_loadu_ps(sums);
    ptrdiff_t g = 0;
    for (; g + 2 <= groups; g += 2) {
        const __m512 x = _mm512_sub_ps(_mm512_loadu_ps(row + 8 * g), offset);
#define CLK_ZERO_BELOW_512(v, x) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask((x), _mm512_set1_ps(-87.0f), _CMP_NLT_UQ), (v))
        CLK_EXP_BODY(
            _mm512, __m512, _mm512_set1_ps, _mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps, _mm512_castps_si512,
            _mm512_castsi512_ps, _mm512_add_epi32, _mm512_sub_epi32, _mm512_slli_epi32, CLK_ZERO_BELOW_512)
        _mm512_storeu_ps(row + 8 * g, e);
        total = _mm256_add_ps(total, _mm512_castps512_ps256(e));
        total = _mm256_add_ps(total, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
    }
    for (; g < groups; g++) {
        const __m256 x = _mm256_sub_ps(_mm256_loadu_ps(row + 8 * g), _mm512_castps512_ps256(offset));
#define CLK_ZERO_BELOW_256(v, x) _mm256_and_ps((v), _mm256_cmp_ps((x), _mm256_set1_ps(-87.0f), _CMP_NLT_UQ))
        CLK_EXP_BODY(
            _mm256, __m256, _mm256_set1_ps, _mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_castps_si256,
            _mm256_castsi256_ps, _mm256_add_epi32, _mm256_sub_epi32, _mm256_slli_epi32, CLK_ZERO_BELOW_256)
        _mm256_storeu_ps(row + 8 * g, e);
        total = _mm256_add_ps(total, e);
    }
    _mm256_storeu_ps(sums, total);
}

__attribute__((target("avx2,fma"))) void clk_exp_shifted_avx2_fma(
    float *row, ptrdiff_t groups, float shift, float *sums) {
    const __m256 offset = _mm256_set1_ps(shift);
    __m256 total = _mm256_loadu_ps(sums);
    for (ptrdiff_t g = 0; g < groups; g++) {
        const __m256 x = _mm256_sub_ps(_mm256_loadu_ps(row + 8 * g), offset);
        CLK_EXP_BODY(
            _mm256, __m256, _mm256_set1_ps, _mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_castps_si256,
            _mm256_castsi256_ps, _mm256_add_epi32, _mm256_sub_epi32, _mm256_slli_epi32, CLK_ZERO_BELOW_256)
        _mm256_storeu_ps(row + 8 * g, e);
        total = _mm256_add_ps(total, e);
    }
    _mm256_storeu_ps(sums, total);
}

#else

void clk_exp_shifted_avx512(float *row, ptrdiff_t groups, float shift, float *sums) {
    (void)row, (void)groups, (void)shift, (void)sums;
    __builtin_trap();
}

void clk_exp_shifted_avx2_fma(float *row, ptrdiff_t groups, float shift, float *sums) {
    (void)row, (void)groups, (void)shift, (void)sums;
    __builtin_trap();
}

#endif
