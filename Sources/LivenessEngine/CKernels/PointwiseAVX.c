// The 1×1 convolution (pointwise) as a direct register-blocked kernel, in AVX2 + FMA and in AVX-512,
// each chosen at run time like the depthwise kernel (only these functions carry target attributes).
//
// Why hand-written: OpenBLAS's sgemm packs both operands into panels on every call. For the shapes
// of these networks (k = 3 … 128 input channels, m = 1 … 128 output channels, thousands of pixels)
// that packing pass (sgemm_itcopy / oncopy) and the separate bias, ReLU / PReLU and residual passes
// around the call cost about as much as the multiply-adds themselves. The input of a 1×1
// convolution is already laid out as the kernel wants it (each channel a contiguous row of pixels),
// so no packing is needed at all, and the epilogue can be applied while the accumulators are still
// in registers. No library offers that fused, unpacked NCHW pointwise kernel for x86 in C (XNNPACK's
// NCHW kernels are sparse-only and pull in its whole operator framework), hence this file.
// The portable path is OpenBLAS (ConvolutionKernels.pointwise), which has NEON kernels on arm64.
#include "CLivenessKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

bool clk_avx512_available(void) {
    __builtin_cpu_init();  // includes the OS saving the ZMM state (XGETBV)
    return __builtin_cpu_supports("avx512f");
}

// AVX2 + FMA: 6 channels × 2 vectors (16 pixels) = 12 accumulators of the 16 YMM registers.
#define CLK_PW_TARGET __attribute__((target("avx2,fma")))
#define CLK_PW_VEC __m256
#define CLK_PW_LANES 8
#define CLK_PW_MASK __m256i
#define CLK_PW_TAIL_MASK(count) \
    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define CLK_PW_ROWS 6
#define CLK_PW_COLS 2
#define CLK_PW_LOAD _mm256_loadu_ps
#define CLK_PW_STORE _mm256_storeu_ps
#define CLK_PW_MASKLOAD(p, mask) _mm256_maskload_ps((p), (mask))
#define CLK_PW_MASKSTORE(p, mask, v) _mm256_maskstore_ps((p), (mask), (v))
#define CLK_PW_SET1 _mm256_set1_ps
#define CLK_PW_ZERO _mm256_setzero_ps
#define CLK_PW_FMA _mm256_fmadd_ps
#define CLK_PW_ADD _mm256_add_ps
#define CLK_PW_MUL _mm256_mul_ps
#define CLK_PW_MAX _mm256_max_ps
#define CLK_PW_NEGATIVE_BLEND(x, y) _mm256_blendv_ps((x), (y), _mm256_cmp_ps((x), _mm256_setzero_ps(), _CMP_LT_OQ))
#define CLK_PW_BLOCK clk_pointwise_block_avx2
#define CLK_PW_ROW_TAIL clk_pointwise_rows_avx2
#define CLK_PW_PIXELS clk_pointwise_pixels_avx2
#define CLK_PW_FUNCTION clk_pointwise_avx2_fma
#define CLK_PW_GATHER_FUNCTION clk_convolution_rows_avx2_fma
#include "PointwiseTemplate.h"
#undef CLK_PW_TARGET
#undef CLK_PW_VEC
#undef CLK_PW_LANES
#undef CLK_PW_MASK
#undef CLK_PW_TAIL_MASK
#undef CLK_PW_ROWS
#undef CLK_PW_COLS
#undef CLK_PW_LOAD
#undef CLK_PW_STORE
#undef CLK_PW_MASKLOAD
#undef CLK_PW_MASKSTORE
#undef CLK_PW_SET1
#undef CLK_PW_ZERO
#undef CLK_PW_FMA
#undef CLK_PW_ADD
#undef CLK_PW_MUL
#undef CLK_PW_MAX
#undef CLK_PW_NEGATIVE_BLEND
#undef CLK_PW_BLOCK
#undef CLK_PW_ROW_TAIL
#undef CLK_PW_PIXELS
#undef CLK_PW_FUNCTION
#undef CLK_PW_GATHER_FUNCTION

// AVX-512: 8 channels × 2 vectors (32 pixels) = 16 accumulators of the 32 ZMM registers.
#define CLK_PW_TARGET __attribute__((target("avx512f")))
#define CLK_PW_VEC __m512
#define CLK_PW_LANES 16
#define CLK_PW_MASK __mmask16
#define CLK_PW_TAIL_MASK(count) ((__mmask16)((1u << (count)) - 1u))
#define CLK_PW_ROWS 8
#define CLK_PW_COLS 2
#define CLK_PW_LOAD _mm512_loadu_ps
#define CLK_PW_STORE _mm512_storeu_ps
#define CLK_PW_MASKLOAD(p, mask) _mm512_maskz_loadu_ps((mask), (p))
#define CLK_PW_MASKSTORE(p, mask, v) _mm512_mask_storeu_ps((p), (mask), (v))
#define CLK_PW_SET1 _mm512_set1_ps
#define CLK_PW_ZERO _mm512_setzero_ps
#define CLK_PW_FMA _mm512_fmadd_ps
#define CLK_PW_ADD _mm512_add_ps
#define CLK_PW_MUL _mm512_mul_ps
#define CLK_PW_MAX _mm512_max_ps
#define CLK_PW_NEGATIVE_BLEND(x, y) \
    _mm512_mask_blend_ps(_mm512_cmp_ps_mask((x), _mm512_setzero_ps(), _CMP_LT_OQ), (x), (y))
#define CLK_PW_BLOCK clk_pointwise_block_avx512
#define CLK_PW_ROW_TAIL clk_pointwise_rows_avx512
#define CLK_PW_PIXELS clk_pointwise_pixels_avx512
#define CLK_PW_FUNCTION clk_pointwise_avx512
#define CLK_PW_GATHER_FUNCTION clk_convolution_rows_avx512
#include "PointwiseTemplate.h"

#else

bool clk_avx512_available(void) { return false; }

// Not compiled for this architecture, and never called: the availability checks are false.
void clk_pointwise_avx2_fma(
    const float *weights, ptrdiff_t m, ptrdiff_t k, const float *input, ptrdiff_t n, const float *bias,
    const float *residual, const float *slopes, bool relu, float *output) {
    (void)weights, (void)m, (void)k, (void)input, (void)n, (void)bias, (void)residual, (void)slopes, (void)relu;
    (void)output;
    __builtin_trap();
}

void clk_pointwise_avx512(
    const float *weights, ptrdiff_t m, ptrdiff_t k, const float *input, ptrdiff_t n, const float *bias,
    const float *residual, const float *slopes, bool relu, float *output) {
    (void)weights, (void)m, (void)k, (void)input, (void)n, (void)bias, (void)residual, (void)slopes, (void)relu;
    (void)output;
    __builtin_trap();
}

void clk_convolution_rows_avx2_fma(
    const float *weights, ptrdiff_t m, ptrdiff_t k, const float *const *taps, ptrdiff_t n, const float *bias,
    const float *slopes, bool relu, ptrdiff_t output_stride, float *output) {
    (void)weights, (void)m, (void)k, (void)taps, (void)n, (void)bias, (void)slopes, (void)relu, (void)output_stride;
    (void)output;
    __builtin_trap();
}

void clk_convolution_rows_avx512(
    const float *weights, ptrdiff_t m, ptrdiff_t k, const float *const *taps, ptrdiff_t n, const float *bias,
    const float *slopes, bool relu, ptrdiff_t output_stride, float *output) {
    (void)weights, (void)m, (void)k, (void)taps, (void)n, (void)bias, (void)slopes, (void)relu, (void)output_stride;
    (void)output;
    __builtin_trap();
}

#endif
