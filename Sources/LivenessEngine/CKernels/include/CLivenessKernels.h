// CLivenessKernels: the compute kernels LivenessEngine writes in C (depthwise 3×3 stride 1 and
// stride 2, the pointwise 1×1 convolution, the ViT crop's resample), because Swift cannot compile a
// single function for AVX2 + FMA or AVX-512 (its SIMD types stay on the x86-64 SSE2 baseline and there is no
// per-function target attribute). The package is built without -march flags; each kernel carries
// __attribute__((target(...))) and Swift calls it only after clk_avx2_fma_available() /
// clk_avx512_available() said yes, else it runs its portable path (Swift, or OpenBLAS for 1×1).
// See docs/ARCHITECTURE.md ("Depthwise 3×3 in AVX2 + FMA C") and PointwiseAVX.c.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/// True on an x86-64 CPU (and OS) with AVX2 and FMA; always false on other architectures,
/// where the kernels below are not compiled.
bool clk_avx2_fma_available(void);

/// Depthwise 3×3 convolution, stride 1, padding 1, on `channels` NCHW planes of height × width
/// (one 3×3 filter per channel in `weights`, row-major), plus `bias[c]`, then max(·, 0) when
/// `relu`. Same contract as LivenessEngine's `ConvolutionKernels.depthwise3x3`: `zero_row` holds
/// `width` zeros (the rows above and below the image), `spare_row` takes `width` floats of
/// scratch (the unused second row of a pass when the height is odd). `output` must not overlap
/// `input`. Call only when clk_avx2_fma_available() returned true.
void clk_depthwise3x3_avx2_fma(
    const float *_Nonnull input, ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width,
    const float *_Nonnull weights, const float *_Nonnull bias, bool relu, const float *_Nonnull zero_row,
    float *_Nonnull spare_row, float *_Nonnull output);

/// True on an x86-64 CPU (and OS) with AVX-512F; always false on other architectures.
bool clk_avx512_available(void);

/// clk_depthwise3x3_avx2_fma in 16 lanes, bit for bit the same results (rows narrower than 16 are
/// handed to it). Call only when clk_avx512_available() returned true.
void clk_depthwise3x3_avx512(
    const float *_Nonnull input, ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width,
    const float *_Nonnull weights, const float *_Nonnull bias, bool relu, const float *_Nonnull zero_row,
    float *_Nonnull spare_row, float *_Nonnull output);

/// Pointwise (1×1) convolution over `n` pixels: output[c][i] = act(Σₚ weights[c][p]·input[p][i]
/// + bias[c] (+ residual[c][i])) for c < m, p < k; `weights` is m × k row-major, `input` k rows and
/// `output` / `residual` m rows of n floats. act: PReLU with slopes[c] when `slopes` is given, else
/// max(·, 0) when `relu`, else none. The sum over p runs in order from zero, then (residual + bias)
/// is added: the order of a GEMM accumulating onto a bias-filled output. `output` must not overlap
/// `input`; it may be `residual`. Same contract as LivenessEngine's `ConvolutionKernels.pointwise`.
/// Call the AVX2 one only when clk_avx2_fma_available(), the AVX-512 one only when
/// clk_avx512_available().
void clk_pointwise_avx2_fma(
    const float *_Nonnull weights, ptrdiff_t m, ptrdiff_t k, const float *_Nonnull input, ptrdiff_t n,
    const float *_Nonnull bias, const float *_Nullable residual, const float *_Nullable slopes, bool relu,
    float *_Nonnull output);
void clk_pointwise_avx512(
    const float *_Nonnull weights, ptrdiff_t m, ptrdiff_t k, const float *_Nonnull input, ptrdiff_t n,
    const float *_Nonnull bias, const float *_Nullable residual, const float *_Nullable slopes, bool relu,
    float *_Nonnull output);

/// One output row of a general convolution through the pointwise kernel, without im2col:
/// output[c·output_stride + i] = act(Σₚ weights[c][p]·taps[p][i] + bias[c]) for c < m, i < n, where
/// taps[p] points at the input values that tap p (input channel, kernel row, kernel column) reads
/// for the row's pixels, one float apart (a phase-split plane row for stride 2, zeros for padding).
/// act: PReLU with slopes[c] when `slopes` is given, else max(·, 0) when `relu`. The sum over p runs in order from zero, then the bias: bit for bit
/// what clk_pointwise_* gives on the im2col columns. Same CPU conditions as clk_pointwise_*.
void clk_convolution_rows_avx2_fma(
    const float *_Nonnull weights, ptrdiff_t m, ptrdiff_t k, const float *_Nonnull const *_Nonnull taps,
    ptrdiff_t n, const float *_Nonnull bias, const float *_Nullable slopes, bool relu, ptrdiff_t output_stride,
    float *_Nonnull output);
void clk_convolution_rows_avx512(
    const float *_Nonnull weights, ptrdiff_t m, ptrdiff_t k, const float *_Nonnull const *_Nonnull taps,
    ptrdiff_t n, const float *_Nonnull bias, const float *_Nullable slopes, bool relu, ptrdiff_t output_stride,
    float *_Nonnull output);

/// Depthwise 3×3, stride 2, padding 1, plus `bias[c]`, on `channels` NCHW planes of height × width
/// (any sizes): output planes of ⌊(height − 1) / 2⌋ + 1 × ⌊(width − 1) / 2⌋ + 1. `zero_row` holds
/// `width` zeros. Same contract as LivenessEngine's `MobileKernels.depthwise` with kernel 3, stride 2,
/// padding 1. Call only when clk_avx2_fma_available() returned true.
void clk_depthwise3x3s2_avx2_fma(
    const float *_Nonnull input, ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width,
    const float *_Nonnull weights, const float *_Nonnull bias, const float *_Nonnull zero_row,
    float *_Nonnull output);

/// row[i] = exp(row[i] − shift) for i < 8·groups, in place, for arguments ≤ 0 (the softmax's), and
/// sums[l] += row[8g + l] group by group: bit for bit LivenessEngine's `expNonPositive8` and the
/// partial sums of `VectorKernels.exponentiate`. Same CPU conditions as clk_pointwise_*.
void clk_exp_shifted_avx512(float *_Nonnull row, ptrdiff_t groups, float shift, float *_Nonnull sums);
void clk_exp_shifted_avx2_fma(float *_Nonnull row, ptrdiff_t groups, float shift, float *_Nonnull sums);

// The ViT crop's resampling: Pillow's antialiased bilinear resize on 8-bit rows with 22-bit fixed-point
// Int32 weights, and Pillow's RGB → L, bit for bit LivenessEngine's ResampleKernel / Preprocessor (see
// ResampleAVX.c). The AVX2 functions: call only when clk_avx2_fma_available() returned true.

/// Int16 values clk_resample_pack_horizontal writes for `outputs` positions of `taps` weights each.
ptrdiff_t clk_resample_packed_length(ptrdiff_t outputs, ptrdiff_t taps, ptrdiff_t channels);

/// The horizontal weights (`taps` per output, row-major, zero past each count) split into the 16-bit
/// halves and the layout clk_resample_horizontal_avx2 reads for `channels` (3: packed RGB, 1: grey).
void clk_resample_pack_horizontal(
    const int32_t *_Nonnull weights, ptrdiff_t outputs, ptrdiff_t taps, ptrdiff_t channels,
    int16_t *_Nonnull packed);

/// Horizontal pass over one row of `input_width` pixels of `channels` bytes (3 or 1): output o blends
/// input pixels starts[o] ..< starts[o] + counts[o] with weights[o·taps …]; `packed` is what
/// clk_resample_pack_horizontal made of `weights`. Writes `outputs`·channels bytes; reads only the row.
void clk_resample_horizontal_avx2(
    const uint8_t *_Nonnull source, ptrdiff_t input_width, ptrdiff_t channels, const ptrdiff_t *_Nonnull starts,
    const ptrdiff_t *_Nonnull counts, const int32_t *_Nonnull weights, ptrdiff_t taps,
    const int16_t *_Nonnull packed, ptrdiff_t outputs, uint8_t *_Nonnull destination);

/// True on an x86-64 CPU (and OS) with AVX-512F and AVX-512BW; always false on other architectures.
bool clk_avx512bw_available(void);

/// clk_resample_horizontal_avx2, RGB four outputs at a time in 512-bit registers (the same bytes; grey
/// is handed to the AVX2 kernel), from the same packed weights. Call only when clk_avx512bw_available().
void clk_resample_horizontal_avx512(
    const uint8_t *_Nonnull source, ptrdiff_t input_width, ptrdiff_t channels, const ptrdiff_t *_Nonnull starts,
    const ptrdiff_t *_Nonnull counts, const int32_t *_Nonnull weights, ptrdiff_t taps,
    const int16_t *_Nonnull packed, ptrdiff_t outputs, uint8_t *_Nonnull destination);

/// One output row of the vertical pass: destination[i] = clip8(2²¹ + Σₜ kernel[t]·rows[t·line_length + i])
/// for t < count, i < line_length. `destination` must not overlap `rows`.
void clk_resample_vertical_avx2(
    const uint8_t *_Nonnull rows, ptrdiff_t line_length, const int32_t *_Nonnull kernel, ptrdiff_t count,
    uint8_t *_Nonnull destination);

/// Pillow's L of packed RGB: luma[i] = (19595·r + 38470·g + 7471·b + 2¹⁵) >> 16 for i < pixels.
void clk_rgb_to_luma_avx2(const uint8_t *_Nonnull rgb, ptrdiff_t pixels, uint8_t *_Nonnull luma);
