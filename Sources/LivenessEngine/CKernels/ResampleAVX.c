// The ViT crop's resampling (Pillow's antialiased bilinear resize, 8 bits per channel) and its RGB → L
// conversion in AVX2 (RGB's horizontal pass also in AVX-512BW), chosen at run time like the convolution
// kernels; the Swift code in Preprocessor.swift (ResampleKernel) is the portable path and the reference
// the tests compare with.
//
// Why hand-written: the model was trained on Pillow's exact fixed-point arithmetic (22-bit Int32
// weights, sums clipped after >> 22, 8-bit intermediate image between the two passes), so the bytes
// must match it exactly. No library does that resample with AVX2: Pillow itself is scalar, Pillow-SIMD
// cuts the weights to 16 bits (other bytes), swscale and libvips have their own filters and rounding.
// The sums are exact integers, so any order of summation gives the same bytes.
//
// Weights are 22-bit, too wide for pmaddwd's 16-bit operands, so each is split into w = lo + hi·2¹⁵
// (lo 15 bits, hi the rest, both exact in int16) and the two halves summed apart: Σp·w = Σp·lo +
// 2¹⁵·Σp·hi, equal mod 2³² to the scalar Int32 sum (which never overflows: pixels ≤ 255, Σw ≈ 2²²).
#include "CLivenessKernels.h"

#include <stdint.h>
#include <string.h>

/// Pillow's clip8: 22-bit fixed point, saturated to 0 … 255 (Swift's ResampleKernel.clip8).
static inline uint8_t clk_clip8(int32_t sum) {
    const int32_t value = sum >> 22;
    return value < 0 ? 0 : value > 255 ? 255 : (uint8_t)value;
}

/// Output `o` of the horizontal pass, scalar: the Swift loop's arithmetic.
static inline void clk_resample_pixel_scalar(
    const uint8_t *source, ptrdiff_t channels, ptrdiff_t start, ptrdiff_t count, const int32_t *kernel,
    uint8_t *destination) {
    for (ptrdiff_t channel = 0; channel < channels; channel++) {
        uint32_t sum = 1u << 21;  // unsigned: wrapping like Swift's &+ (never happens for these weights)
        const uint8_t *pixel = source + start * channels + channel;
        for (ptrdiff_t tap = 0; tap < count; tap++) sum += (uint32_t)pixel[tap * channels] * (uint32_t)kernel[tap];
        destination[channel] = clk_clip8((int32_t)sum);
    }
}

/// Grey: groups of eight taps, one output at a time.
static inline ptrdiff_t clk_resample_groups(ptrdiff_t taps) { return (taps + 7) / 8; }

// RGB: two outputs at a time, one per 128-bit lane. Each lane loads 16 bytes from 12·k on (taps 4k …
// 4k + 3, and tap 4k + 4 in bytes 12 … 14) and spreads them into words with one of three masks:
// A = taps 4k, 4k + 1 as [Ra, Rb, Ga, Gb, Ba, Bb, 0, 0], B = taps 4k + 2, 4k + 3 alike, C = tap 4k + 4
// as [R, 0, G, 0, B, 0, 0, 0]. A "unit" is one (load, mask); pmaddwd of its words with the unit's
// weights gives the lane's [R, G, B, 0] partial sums. The units for `taps`: A and B of loads 0 … q − 1
// (q = taps / 4), then for the rest r = taps % 4: 1 → C of load q − 1 (A of load 0 when q = 0),
// 2 → A of load q, 3 → A and B of load q.
enum { CLK_MASK_A = 0, CLK_MASK_B = 1, CLK_MASK_C = 2 };

static inline ptrdiff_t clk_rgb_units(ptrdiff_t taps) {
    const ptrdiff_t rest = taps % 4;
    return 2 * (taps / 4) + (rest == 3 ? 2 : rest == 0 ? 0 : 1);
}

/// Load and mask of unit `unit`.
static inline void clk_rgb_unit(ptrdiff_t taps, ptrdiff_t unit, ptrdiff_t *load, int *mask) {
    const ptrdiff_t full = taps / 4, rest = taps % 4;
    if (unit < 2 * full) {
        *load = unit / 2;
        *mask = unit % 2 == 0 ? CLK_MASK_A : CLK_MASK_B;
    } else if (rest == 1) {
        *load = full > 0 ? full - 1 : 0;
        *mask = full > 0 ? CLK_MASK_C : CLK_MASK_A;
    } else {
        *load = full;
        *mask = unit == 2 * full ? CLK_MASK_A : CLK_MASK_B;
    }
}

/// The last 16-byte load's index (what bounds the bytes an output reads).
static inline ptrdiff_t clk_rgb_last_load(ptrdiff_t taps) {
    ptrdiff_t load;
    int mask;
    clk_rgb_unit(taps, clk_rgb_units(taps) - 1, &load, &mask);
    return load;
}

ptrdiff_t clk_resample_packed_length(ptrdiff_t outputs, ptrdiff_t taps, ptrdiff_t channels) {
    if (channels == 3) return (outputs + 3) / 4 * clk_rgb_units(taps) * 64;
    return outputs * clk_resample_groups(taps) * 16;
}

void clk_resample_pack_horizontal(
    const int32_t *weights, ptrdiff_t outputs, ptrdiff_t taps, ptrdiff_t channels, int16_t *packed) {
    if (channels == 3) {
        // Per quad of outputs, per unit: 32 words of lo (8 per 128-bit lane, lane l for output 4q + l, the
        // last output again past the end), then 32 of hi. The AVX2 kernel reads half a quad (a pair).
        const ptrdiff_t units = clk_rgb_units(taps);
        for (ptrdiff_t quad = 0; quad < (outputs + 3) / 4; quad++) {
            for (ptrdiff_t unit = 0; unit < units; unit++) {
                ptrdiff_t load;
                int mask;
                clk_rgb_unit(taps, unit, &load, &mask);
                int16_t *lo = packed + (quad * units + unit) * 64;
                int16_t *hi = lo + 32;
                for (int lane = 0; lane < 4; lane++) {
                    const ptrdiff_t output = 4 * quad + lane < outputs ? 4 * quad + lane : outputs - 1;
                    const int32_t *kernel = weights + output * taps;
                    for (int slot = 0; slot < 8; slot++) {
                        ptrdiff_t tap;
                        if (mask == CLK_MASK_C) {
                            tap = slot % 2 == 0 ? 4 * load + 4 : -1;
                        } else {
                            tap = 4 * load + (mask == CLK_MASK_B ? 2 : 0) + slot % 2;
                        }
                        const int32_t weight = slot < 6 && tap >= 0 && tap < taps ? kernel[tap] : 0;
                        lo[8 * lane + slot] = (int16_t)(weight & 0x7FFF);
                        hi[8 * lane + slot] = (int16_t)(weight >> 15);
                    }
                }
            }
        }
        return;
    }
    const ptrdiff_t groups = clk_resample_groups(taps);
    for (ptrdiff_t output = 0; output < outputs; output++) {
        const int32_t *kernel = weights + output * taps;
        for (ptrdiff_t group = 0; group < groups; group++) {
            int16_t *lo = packed + (output * groups + group) * 16;
            int16_t *hi = lo + 8;
            for (int slot = 0; slot < 8; slot++) {
                const ptrdiff_t tap = 8 * group + slot;
                const int32_t weight = tap < taps ? kernel[tap] : 0;
                lo[slot] = (int16_t)(weight & 0x7FFF);
                hi[slot] = (int16_t)(weight >> 15);
            }
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

#define CLK_AVX2 __attribute__((target("avx2")))
#define CLK_INLINE __attribute__((always_inline)) static inline

/// Eight int32 sums (fixed point) → eight clipped bytes, in order.
CLK_AVX2 CLK_INLINE __m128i clk_clip8x8(__m256i sums) {
    const __m256i shifted = _mm256_srai_epi32(sums, 22);
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(shifted), _mm256_extracti128_si256(shifted, 1));
    return _mm_packus_epi16(words, words);
}

/// RGB outputs 2·pair and 2·pair + 1 (the last output twice when `outputs` is odd), one per lane.
CLK_AVX2 CLK_INLINE void clk_rgb_pair(
    const uint8_t *source, ptrdiff_t input_width, const ptrdiff_t *starts, const ptrdiff_t *counts,
    const int32_t *weights, ptrdiff_t taps, const int16_t *packed, ptrdiff_t outputs, ptrdiff_t pair,
    uint8_t *destination) {
    const __m256i mask_a =
        _mm256_broadcastsi128_si256(_mm_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1));
    const __m256i mask_b =
        _mm256_broadcastsi128_si256(_mm_setr_epi8(6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1));
    const __m256i mask_c = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(12, -1, -1, -1, 13, -1, -1, -1, 14, -1, -1, -1, -1, -1, -1, -1));
    const ptrdiff_t full = taps / 4, rest = taps % 4, units = clk_rgb_units(taps);
    const ptrdiff_t extent = 12 * clk_rgb_last_load(taps) + 16;  // bytes read from an output's first tap
    const ptrdiff_t row_bytes = 3 * input_width;
    const ptrdiff_t first = 2 * pair, second = first + 1 < outputs ? first + 1 : first;
    const ptrdiff_t start_a = 3 * starts[first], start_b = 3 * starts[second];
    if (start_a + extent > row_bytes || start_b + extent > row_bytes) {
        // Outputs at the row's right end take the scalar path (the loads would pass the row).
        clk_resample_pixel_scalar(
            source, 3, starts[first], counts[first], weights + first * taps, destination + 3 * first);
        clk_resample_pixel_scalar(
            source, 3, starts[second], counts[second], weights + second * taps, destination + 3 * second);
        return;
    }
    const uint8_t *bytes_a = source + start_a, *bytes_b = source + start_b;
    // This pair's half of its quad's weights: lo at +0, hi at +32 words per unit, then the next unit.
    const int16_t *kernel = packed + (pair / 2) * units * 64 + (pair % 2) * 16;
    __m256i lo = _mm256_setzero_si256();
    __m256i hi = _mm256_setzero_si256();
    __m256i bytes = _mm256_setzero_si256();
#define CLK_LOAD(k)                                                                                           \
    bytes = _mm256_inserti128_si256(                                                                          \
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(bytes_a + 12 * (k)))),                       \
        _mm_loadu_si128((const __m128i *)(bytes_b + 12 * (k))), 1)
#define CLK_UNIT(mask)                                                                                        \
    do {                                                                                                      \
        const __m256i words = _mm256_shuffle_epi8(bytes, mask);                                               \
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(words, _mm256_loadu_si256((const __m256i *)kernel)));     \
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(words, _mm256_loadu_si256((const __m256i *)(kernel + 32)))); \
        kernel += 64;                                                                                         \
    } while (0)
    for (ptrdiff_t load = 0; load < full; load++) {
        CLK_LOAD(load);
        CLK_UNIT(mask_a);
        CLK_UNIT(mask_b);
    }
    if (rest == 1) {
        if (full > 0) {
            CLK_UNIT(mask_c);
        } else {
            CLK_LOAD(0);
            CLK_UNIT(mask_a);
        }
    } else if (rest >= 2) {
        CLK_LOAD(full);
        CLK_UNIT(mask_a);
        if (rest == 3) CLK_UNIT(mask_b);
    }
#undef CLK_LOAD
#undef CLK_UNIT
    // Lane 0: [R, G, B, 0] of the first output, lane 1 of the second.
    __m256i sums = _mm256_add_epi32(_mm256_add_epi32(lo, _mm256_slli_epi32(hi, 15)), _mm256_set1_epi32(1 << 21));
    sums = _mm256_srai_epi32(sums, 22);
    sums = _mm256_packs_epi32(sums, sums);
    sums = _mm256_packus_epi16(sums, sums);
    const uint32_t rgb_a = (uint32_t)_mm256_cvtsi256_si32(sums);
    const uint32_t rgb_b = (uint32_t)_mm_cvtsi128_si32(_mm256_extracti128_si256(sums, 1));
    memcpy(destination + 3 * first, &rgb_a, 3);
    memcpy(destination + 3 * second, &rgb_b, 3);
}

CLK_AVX2 void clk_resample_horizontal_avx2(
    const uint8_t *source, ptrdiff_t input_width, ptrdiff_t channels, const ptrdiff_t *starts,
    const ptrdiff_t *counts, const int32_t *weights, ptrdiff_t taps, const int16_t *packed, ptrdiff_t outputs,
    uint8_t *destination) {
    if (channels == 3) {
        for (ptrdiff_t pair = 0; pair < (outputs + 1) / 2; pair++) {
            clk_rgb_pair(source, input_width, starts, counts, weights, taps, packed, outputs, pair, destination);
        }
        return;
    }
    // Grey: eight taps per group; four outputs per step (two per 128-bit lane pair), then one at a time.
    const ptrdiff_t groups = clk_resample_groups(taps);
    const __m128i rounding = _mm_set1_epi32(1 << 21);
    ptrdiff_t output = 0;
    for (; output + 4 <= outputs; output += 4) {
        const ptrdiff_t *start = starts + output;
        if (start[0] + 8 * groups > input_width || start[1] + 8 * groups > input_width ||
            start[2] + 8 * groups > input_width || start[3] + 8 * groups > input_width) {
            break;  // the row's right end: the loop below, with its scalar path
        }
        const int16_t *kernel = packed + output * groups * 16;
        __m256i sums01 = _mm256_setzero_si256(), sums23 = _mm256_setzero_si256();
        for (ptrdiff_t group = 0; group < groups; group++) {
            const ptrdiff_t offset = 8 * group;
            // Words of output 0 (then 2) in lane 0, of output 1 (then 3) in lane 1.
            const __m256i words01 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi64(
                _mm_loadl_epi64((const __m128i *)(source + start[0] + offset)),
                _mm_loadl_epi64((const __m128i *)(source + start[1] + offset))));
            const __m256i words23 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi64(
                _mm_loadl_epi64((const __m128i *)(source + start[2] + offset)),
                _mm_loadl_epi64((const __m128i *)(source + start[3] + offset))));
            const int16_t *w = kernel + group * 16;
            const ptrdiff_t next = groups * 16;  // the same group of the next output
            const __m256i lo01 = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)w)),
                _mm_loadu_si128((const __m128i *)(w + next)), 1);
            const __m256i hi01 = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(w + 8))),
                _mm_loadu_si128((const __m128i *)(w + next + 8)), 1);
            const __m256i lo23 = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(w + 2 * next))),
                _mm_loadu_si128((const __m128i *)(w + 3 * next)), 1);
            const __m256i hi23 = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(w + 2 * next + 8))),
                _mm_loadu_si128((const __m128i *)(w + 3 * next + 8)), 1);
            sums01 = _mm256_add_epi32(sums01, _mm256_madd_epi16(words01, lo01));
            sums01 = _mm256_add_epi32(sums01, _mm256_slli_epi32(_mm256_madd_epi16(words01, hi01), 15));
            sums23 = _mm256_add_epi32(sums23, _mm256_madd_epi16(words23, lo23));
            sums23 = _mm256_add_epi32(sums23, _mm256_slli_epi32(_mm256_madd_epi16(words23, hi23), 15));
        }
        // hadd twice: lane 0 [s0, s2, s0, s2], lane 1 [s1, s3, s1, s3]; interleaved: [s0, s1, s2, s3].
        __m256i sums = _mm256_hadd_epi32(sums01, sums23);
        sums = _mm256_hadd_epi32(sums, sums);
        __m128i four = _mm_unpacklo_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
        four = _mm_srai_epi32(_mm_add_epi32(four, rounding), 22);
        four = _mm_packs_epi32(four, four);
        four = _mm_packus_epi16(four, four);
        const uint32_t bytes = (uint32_t)_mm_cvtsi128_si32(four);
        memcpy(destination + output, &bytes, 4);
    }
    for (; output < outputs; output++) {
        const ptrdiff_t start = starts[output];
        if (start + 8 * groups > input_width) {
            clk_resample_pixel_scalar(source, 1, start, counts[output], weights + output * taps, destination + output);
            continue;
        }
        const __m128i *kernel = (const __m128i *)(packed + output * groups * 16);
        __m128i lo = _mm_setzero_si128();
        __m128i hi = _mm_setzero_si128();
        for (ptrdiff_t group = 0; group < groups; group++) {
            const __m128i words = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(source + start + 8 * group)));
            lo = _mm_add_epi32(lo, _mm_madd_epi16(words, _mm_loadu_si128(kernel + 2 * group)));
            hi = _mm_add_epi32(hi, _mm_madd_epi16(words, _mm_loadu_si128(kernel + 2 * group + 1)));
        }
        __m128i sums = _mm_add_epi32(lo, _mm_slli_epi32(hi, 15));
        sums = _mm_add_epi32(sums, _mm_shuffle_epi32(sums, 0x4E));
        sums = _mm_add_epi32(sums, _mm_shuffle_epi32(sums, 0xB1));
        sums = _mm_add_epi32(sums, rounding);
        destination[output] = clk_clip8(_mm_cvtsi128_si32(sums));
    }
}

bool clk_avx512bw_available(void) {
    __builtin_cpu_init();  // includes the OS saving the ZMM state (XGETBV)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}

/// clk_resample_horizontal_avx2 with RGB four outputs at a time (one per 128-bit lane of a ZMM register,
/// the same arithmetic); grey goes to the AVX2 kernel.
__attribute__((target("avx512f,avx512bw"))) void clk_resample_horizontal_avx512(
    const uint8_t *source, ptrdiff_t input_width, ptrdiff_t channels, const ptrdiff_t *starts,
    const ptrdiff_t *counts, const int32_t *weights, ptrdiff_t taps, const int16_t *packed, ptrdiff_t outputs,
    uint8_t *destination) {
    if (channels != 3) {
        clk_resample_horizontal_avx2(
            source, input_width, channels, starts, counts, weights, taps, packed, outputs, destination);
        return;
    }
    const __m512i mask_a =
        _mm512_broadcast_i32x4(_mm_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1));
    const __m512i mask_b =
        _mm512_broadcast_i32x4(_mm_setr_epi8(6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1));
    const __m512i mask_c =
        _mm512_broadcast_i32x4(_mm_setr_epi8(12, -1, -1, -1, 13, -1, -1, -1, 14, -1, -1, -1, -1, -1, -1, -1));
    const __m512i rounding = _mm512_set1_epi32(1 << 21);
    // The first dword ([R, G, B, 0]) of each lane, then the 12 colour bytes packed.
    const __m512i first_dwords = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m128i packed_rgb = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    const ptrdiff_t full = taps / 4, rest = taps % 4, units = clk_rgb_units(taps);
    const ptrdiff_t extent = 12 * clk_rgb_last_load(taps) + 16;
    const ptrdiff_t row_bytes = 3 * input_width;
    ptrdiff_t quad = 0;
    for (; 4 * quad + 4 <= outputs; quad++) {
        const ptrdiff_t *start = starts + 4 * quad;
        if (3 * start[0] + extent > row_bytes || 3 * start[1] + extent > row_bytes ||
            3 * start[2] + extent > row_bytes || 3 * start[3] + extent > row_bytes) {
            for (ptrdiff_t pair = 2 * quad; pair < 2 * quad + 2; pair++) {
                clk_rgb_pair(source, input_width, starts, counts, weights, taps, packed, outputs, pair, destination);
            }
            continue;
        }
        const uint8_t *bytes0 = source + 3 * start[0], *bytes1 = source + 3 * start[1];
        const uint8_t *bytes2 = source + 3 * start[2], *bytes3 = source + 3 * start[3];
        const int16_t *kernel = packed + quad * units * 64;
        __m512i lo = _mm512_setzero_si512();
        __m512i hi = _mm512_setzero_si512();
        __m512i bytes = _mm512_setzero_si512();
#define CLK_LOAD(k)                                                                                           \
    bytes = _mm512_inserti32x4(                                                                               \
        _mm512_inserti32x4(                                                                                   \
            _mm512_inserti32x4(                                                                               \
                _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(bytes0 + 12 * (k)))),                \
                _mm_loadu_si128((const __m128i *)(bytes1 + 12 * (k))), 1),                                    \
            _mm_loadu_si128((const __m128i *)(bytes2 + 12 * (k))), 2),                                        \
        _mm_loadu_si128((const __m128i *)(bytes3 + 12 * (k))), 3)
#define CLK_UNIT(mask)                                                                                        \
    do {                                                                                                      \
        const __m512i words = _mm512_shuffle_epi8(bytes, mask);                                               \
        lo = _mm512_add_epi32(lo, _mm512_madd_epi16(words, _mm512_loadu_si512(kernel)));                      \
        hi = _mm512_add_epi32(hi, _mm512_madd_epi16(words, _mm512_loadu_si512(kernel + 32)));                 \
        kernel += 64;                                                                                         \
    } while (0)
        for (ptrdiff_t load = 0; load < full; load++) {
            CLK_LOAD(load);
            CLK_UNIT(mask_a);
            CLK_UNIT(mask_b);
        }
        if (rest == 1) {
            if (full > 0) {
                CLK_UNIT(mask_c);
            } else {
                CLK_LOAD(0);
                CLK_UNIT(mask_a);
            }
        } else if (rest >= 2) {
            CLK_LOAD(full);
            CLK_UNIT(mask_a);
            if (rest == 3) CLK_UNIT(mask_b);
        }
#undef CLK_LOAD
#undef CLK_UNIT
        __m512i sums = _mm512_add_epi32(_mm512_add_epi32(lo, _mm512_slli_epi32(hi, 15)), rounding);
        sums = _mm512_srai_epi32(sums, 22);
        sums = _mm512_packs_epi32(sums, sums);
        sums = _mm512_packus_epi16(sums, sums);
        const __m128i colours =
            _mm_shuffle_epi8(_mm512_castsi512_si128(_mm512_permutexvar_epi32(first_dwords, sums)), packed_rgb);
        uint8_t *pixels = destination + 12 * quad;
        _mm_storel_epi64((__m128i *)pixels, colours);
        const uint32_t last = (uint32_t)_mm_extract_epi32(colours, 2);
        memcpy(pixels + 8, &last, 4);
    }
    for (ptrdiff_t pair = 2 * quad; pair < (outputs + 1) / 2; pair++) {
        clk_rgb_pair(source, input_width, starts, counts, weights, taps, packed, outputs, pair, destination);
    }
}

/// Bytes x … x + 8·BLOCKS − 1 of one output row of the vertical pass.
#define CLK_VERTICAL_BLOCK(BLOCKS)                                                                           \
    do {                                                                                                     \
        __m256i sums[BLOCKS];                                                                                \
        for (int b = 0; b < BLOCKS; b++) sums[b] = rounding;                                                 \
        const uint8_t *line = rows + x;                                                                      \
        for (ptrdiff_t tap = 0; tap < count; tap++, line += line_length) {                                   \
            const __m256i weight = _mm256_set1_epi32(kernel[tap]);                                           \
            for (int b = 0; b < BLOCKS; b++) {                                                               \
                const __m256i pixels = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(line + 8 * b))); \
                sums[b] = _mm256_add_epi32(sums[b], _mm256_mullo_epi32(pixels, weight));                     \
            }                                                                                                \
        }                                                                                                    \
        for (int b = 0; b < BLOCKS; b++) {                                                                   \
            _mm_storel_epi64((__m128i *)(destination + x + 8 * b), clk_clip8x8(sums[b]));                    \
        }                                                                                                    \
    } while (0)

CLK_AVX2 void clk_resample_vertical_avx2(
    const uint8_t *rows, ptrdiff_t line_length, const int32_t *kernel, ptrdiff_t count, uint8_t *destination) {
    const __m256i rounding = _mm256_set1_epi32(1 << 21);
    ptrdiff_t x = 0;
    for (; x + 32 <= line_length; x += 32) CLK_VERTICAL_BLOCK(4);
    for (; x + 8 <= line_length; x += 8) CLK_VERTICAL_BLOCK(1);
    if (x < line_length) {
        if (line_length >= 8) {
            x = line_length - 8;  // overlaps bytes already written, with the same values
            CLK_VERTICAL_BLOCK(1);
        } else {
            for (; x < line_length; x++) {
                uint32_t sum = 1u << 21;
                for (ptrdiff_t tap = 0; tap < count; tap++)
                    sum += (uint32_t)rows[tap * line_length + x] * (uint32_t)kernel[tap];
                destination[x] = clk_clip8((int32_t)sum);
            }
        }
    }
}

CLK_AVX2 void clk_rgb_to_luma_avx2(const uint8_t *rgb, ptrdiff_t pixels, uint8_t *luma) {
    // Per lane four pixels (12 bytes) as words [r, b] and [g, g]: r·19595 + b·7471 and g·2·19235 by pmaddwd.
    const __m256i red_blue = _mm256_setr_epi8(
        0, -1, 2, -1, 3, -1, 5, -1, 6, -1, 8, -1, 9, -1, 11, -1,  //
        0, -1, 2, -1, 3, -1, 5, -1, 6, -1, 8, -1, 9, -1, 11, -1);
    const __m256i green = _mm256_setr_epi8(
        1, -1, 1, -1, 4, -1, 4, -1, 7, -1, 7, -1, 10, -1, 10, -1,  //
        1, -1, 1, -1, 4, -1, 4, -1, 7, -1, 7, -1, 10, -1, 10, -1);
    const __m256i red_blue_weights = _mm256_set1_epi32(19595 | (7471 << 16));
    const __m256i green_weights = _mm256_set1_epi32(19235 | (19235 << 16));
    const __m256i rounding = _mm256_set1_epi32(0x8000);
    ptrdiff_t pixel = 0;
    // Eight pixels per step; the second load reads 16 bytes from 12 on, so stop 4 bytes before the end.
    for (; 3 * pixel + 28 <= 3 * pixels; pixel += 8) {
        const uint8_t *bytes = rgb + 3 * pixel;
        const __m256i both = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)bytes)),
            _mm_loadu_si128((const __m128i *)(bytes + 12)), 1);
        __m256i sums = _mm256_add_epi32(
            _mm256_madd_epi16(_mm256_shuffle_epi8(both, red_blue), red_blue_weights),
            _mm256_madd_epi16(_mm256_shuffle_epi8(both, green), green_weights));
        sums = _mm256_srli_epi32(_mm256_add_epi32(sums, rounding), 16);
        const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
        _mm_storel_epi64((__m128i *)(luma + pixel), _mm_packus_epi16(words, words));
    }
    for (; pixel < pixels; pixel++) {
        const uint32_t r = rgb[3 * pixel], g = rgb[3 * pixel + 1], b = rgb[3 * pixel + 2];
        luma[pixel] = (uint8_t)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
    }
}

#else

// Not compiled for this architecture, and never called: clk_avx2_fma_available() is false.
void clk_resample_horizontal_avx2(
    const uint8_t *source, ptrdiff_t input_width, ptrdiff_t channels, const ptrdiff_t *starts,
    const ptrdiff_t *counts, const int32_t *weights, ptrdiff_t taps, const int16_t *packed, ptrdiff_t outputs,
    uint8_t *destination) {
    (void)source, (void)input_width, (void)channels, (void)starts, (void)counts, (void)weights, (void)taps;
    (void)packed, (void)outputs, (void)destination;
    __builtin_trap();
}

void clk_resample_vertical_avx2(
    const uint8_t *rows, ptrdiff_t line_length, const int32_t *kernel, ptrdiff_t count, uint8_t *destination) {
    (void)rows, (void)line_length, (void)kernel, (void)count, (void)destination;
    __builtin_trap();
}

void clk_rgb_to_luma_avx2(const uint8_t *rgb, ptrdiff_t pixels, uint8_t *luma) {
    (void)rgb, (void)pixels, (void)luma;
    __builtin_trap();
}

bool clk_avx512bw_available(void) { return false; }

void clk_resample_horizontal_avx512(
    const uint8_t *source, ptrdiff_t input_width, ptrdiff_t channels, const ptrdiff_t *starts,
    const ptrdiff_t *counts, const int32_t *weights, ptrdiff_t taps, const int16_t *packed, ptrdiff_t outputs,
    uint8_t *destination) {
    (void)source, (void)input_width, (void)channels, (void)starts, (void)counts, (void)weights, (void)taps;
    (void)packed, (void)outputs, (void)destination;
    __builtin_trap();
}

#endif
