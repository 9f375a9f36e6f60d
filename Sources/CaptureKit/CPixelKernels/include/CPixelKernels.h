// CPixelKernels: 4:2:0 YUV → packed RGB24 that gives byte for byte what libswscale 6 (FFmpeg 5.1) gives
// for the converter PixelConverter uses on RGB frames (SWS_BILINEAR | SWS_ACCURATE_RND |
// SWS_FULL_CHR_H_INT, same size in and out, BT.601 or BT.709, limited or full source range, full
// range out). swscale runs that configuration in scalar C (yuv2rgb24_full_1_c / _X_c); this does the same
// integer arithmetic with AVX2 or AVX-512, chosen at run time, and has a portable scalar path.
// See YUV420ToRGB24.c for what is reproduced and why.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/// The filter tables and scratch rows for one picture size and colour setting (immutable tables,
/// mutable scratch: one thread at a time).
typedef struct cpk_rgb_plan cpk_rgb_plan;

/// A plan for `width` × `height` 4:2:0 pictures (chroma planes ⌈width / 2⌉ × ⌈height / 2⌉); `bt709`
/// selects the BT.709 matrix (else BT.601), `full_range` a full-range (JPEG) source. NULL when the
/// size is out of reach (≤ 0 or over 16384) or memory is short.
cpk_rgb_plan *_Nullable cpk_rgb_plan_create(int width, int height, bool bt709, bool full_range);
void cpk_rgb_plan_destroy(cpk_rgb_plan *_Nullable plan);

/// Which code path `cpk_rgb_convert` takes.
typedef enum {
    CPK_PATH_SCALAR = 0,
    CPK_PATH_AVX2 = 1,
    CPK_PATH_AVX512 = 2,
} cpk_path;

/// The fastest path this CPU runs (AVX-512 needs F + BW + VBMI, AVX2 needs AVX2; else scalar).
cpk_path cpk_best_path(void);

/// Converts one picture: planes `y`, `u`, `v` with their row strides, into `rgb` (rows `rgb_stride`
/// bytes apart, exactly `width` · 3 bytes written per row, nothing past them). A path the CPU lacks
/// falls back to the best one it has.
void cpk_rgb_convert(
    cpk_rgb_plan *_Nonnull plan, const uint8_t *_Nonnull y, ptrdiff_t y_stride, const uint8_t *_Nonnull u,
    ptrdiff_t u_stride, const uint8_t *_Nonnull v, ptrdiff_t v_stride, uint8_t *_Nonnull rgb, ptrdiff_t rgb_stride,
    cpk_path path);
