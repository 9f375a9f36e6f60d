// 4:2:0 YUV → RGB24, byte for byte as libswscale 6.7 (FFmpeg 5.1) on x86-64 converts it with
// SWS_BILINEAR | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT at the same size in and out, full-range RGB out,
// no brightness, contrast or saturation change (PixelConverter's configuration for the RGB picture the
// model sees).
//
// Why hand-written: swscale runs that configuration's output stage (vertical chroma interpolation and
// the YUV → RGB arithmetic, yuv2rgb24_full_1_c / yuv2rgb24_full_X_c) in scalar C, one pixel at a time:
// ≈ 0.85-1 ms per 640×480 frame, ≈ 8 % of the pipeline's CPU. The bytes must not change (everything
// downstream, golden files included, was made through swscale), and no library reproduces swscale's
// exact integer arithmetic, hence this file: the same arithmetic, in AVX2 or AVX-512 (chosen at run
// time, only these functions carry target attributes), with a portable scalar path.
//
// What is reproduced (written from the behaviour of libswscale and checked byte for byte against the
// installed libswscale.so.6: random planes of many even and odd sizes from 1×1 to 1921×1081, both
// matrices and ranges, only-0-and-255 planes, and every frame of eight decoded clips):
// 1. Chroma is upsampled horizontally from ⌈w/2⌉ to w samples by a 2-tap bilinear filter with
//    14-bit coefficients: c15 = min(Σ c8·coef >> 7, 32767). Luma is unscaled: y15 = y8 << 7.
// 2. Chroma is upsampled vertically from ⌈h/2⌉ to h rows by a bilinear filter with 12-bit
//    coefficients, but not always as a weighted sum: swscale picks its output function per row
//    (see vertical_weights): usually the "1-tap" one, which takes the nearer chroma row alone or the
//    plain average of both. Y = ((1 << 9) + y15·4096) >> 10 = y8 << 9.
//    Both filters are built as swscale builds them (initFilter, for the bilinear "general" case:
//    chroma sited between the luma samples, 64-bit coefficients, near-zero taps dropped, taps
//    beyond the edges folded onto the edge sample, normalised with error diffusion): the
//    coefficients of an odd size vary from one position to the next, so they are tabulated.
// 3. RGB: Y' = (Y − y_offset)·y_coeff + 2²¹, R = Y' + V·v2r, G = Y' + V·v2g + U·u2g, B = Y' + U·u2b,
//    in wrapping 32-bit arithmetic (an overflow, e.g. BT.709 limited range with Y = 255 and U = 255,
//    wraps to a negative value and gives 0, as swscale's does); each clipped to [0, 2³⁰) and shifted
//    right by 22. The coefficients come from the matrix's inverse table as swscale derives them
//    (ff_yuv2rgb_c_init_tables: 255/219 luma gain and the 16 offset for a limited-range source,
//    224/255 chroma gain for a full-range one, rounded to 16 bits).
// Other architectures: swscale's vertical filters get other tap counts there and it picks other output
// functions; this reproduces the x86-64 library only (PixelConverter uses it only there).
#include "CPixelKernels.h"

#include <stdlib.h>
#include <string.h>

#define CPK_MAX_TAPS 4
#define CPK_CACHE_ROWS 4

typedef struct {
    int32_t *pos;   // first source sample of each output sample
    int16_t *coef;  // size coefficients per output sample
    int size;
} cpk_filter;

struct cpk_rgb_plan {
    int width, height, chroma_width, chroma_height;
    bool bt709, full_range;
    cpk_filter horizontal, vertical;
    int32_t y_offset, y_coeff, v2r, v2g, u2g, u2b;
    // Horizontally upsampled chroma rows (int16, width + padding), a small cache by chroma row.
    int16_t *rows[2][CPK_CACHE_ROWS];
    int row_index[2][CPK_CACHE_ROWS];
    int next_slot[2];
    // Two-tap form of the horizontal filter (see build_simd_tables): per output, the first nonzero tap's
    // sample, the offset (0 or 1) of the second, both coefficients; two_tap false when some output
    // has other taps (the general loop then).
    bool two_tap;
    int32_t *tap_pos;
    uint8_t *tap_next;
    int16_t *tap_coef;
    int32_t *block_base;     // per block of 8 outputs: first source byte
    uint8_t *block_shuffle;  // per block: 32 bytes, (tap 0, 0x80, tap 1, 0x80) per output, from the base
    int16_t *block_coef;     // per block: 16 int16, (coef 0, coef 1) per output
    int simd_blocks;         // blocks whose 16 source bytes lie inside the row
    // Per output row: the two chroma rows and their effective weights (see vertical_weights).
    int16_t *v_eff;
};

static int cpk_log2(unsigned v) {
    int n = 0;
    while (v > 1) {
        v >>= 1;
        n++;
    }
    return n;
}

static int64_t cpk_rounded_div(int64_t a, int64_t b) { return (a >= 0 ? a + (b >> 1) : a - (b >> 1)) / b; }

// swscale's filter construction for the bilinear flags (see the header comment, item 2), for `dst`
// outputs from `src` inputs, position step `inc` (16.16), chroma sitings `src_pos` / `dst_pos` (1/256
// of a luma sample from the left edge, as swscale's get_local_pos gives them), coefficients summing to
// `one`, the tap count rounded up to a multiple of `align` (x86: 4 horizontally, 2 vertically; the
// extra taps are zeros, but they move where the edge taps land, hence kept).
static bool build_filter(
    cpk_filter *out, int src, int dst, int64_t inc, int src_pos, int dst_pos, int one, int align) {
    const int64_t fone = 1LL << (54 - (cpk_log2((unsigned)(src / dst)) < 8 ? cpk_log2((unsigned)(src / dst)) : 8));
    int size;
    int64_t *raw = NULL;
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)dst);
    if (!pos) return false;
    if (llabs(inc - 0x10000) < 10 && src_pos == dst_pos) {
        size = 1;
        raw = calloc((size_t)dst, sizeof(int64_t));
        if (!raw) goto fail;
        for (int i = 0; i < dst; i++) {
            raw[i] = fone;
            pos[i] = i;
        }
    } else {
        size = inc <= 0x10000 ? 3 : 1 + (2 * src + dst - 1) / dst;  // bilinear: size factor 2
        if (size > src - 2) size = src - 2;
        if (size < 1) size = 1;
        raw = calloc((size_t)dst * (size_t)size, sizeof(int64_t));
        if (!raw) goto fail;
        int64_t at = ((dst_pos * inc) >> 7) - (((int64_t)src_pos * 0x10000) >> 7);
        for (int i = 0; i < dst; i++) {
            int xx = (int)((at - (int64_t)(size - 2) * (1LL << 16)) / (1 << 17));  // truncates toward 0
            pos[i] = xx;
            for (int j = 0; j < size; j++) {
                int64_t d = llabs((int64_t)xx * (1 << 17) - at) << 13;
                if (inc > 0x10000) d = d * dst / src;
                int64_t c = (1LL << 30) - d;
                if (c < 0) c = 0;
                raw[i * size + j] = c * (fone >> 30);
                xx++;
            }
            at += 2 * inc;
        }
    }
    // Drop near-zero taps: shift each filter left past them (keeping the positions increasing), and
    // find the largest count of taps left once near-zero ones on the right are ignored.
    const double cutoff = 0.002 * (double)fone;
    int min_size = 0;
    for (int i = dst - 1; i >= 0; i--) {
        int64_t *f = raw + (size_t)i * size;
        int kept = size;
        int64_t sum = 0;
        for (int j = 0; j < size; j++) {
            sum += llabs(f[0]);
            if ((double)sum > cutoff) break;
            if (i < dst - 1 && pos[i] >= pos[i + 1]) break;
            for (int k = 1; k < size; k++) f[k - 1] = f[k];
            f[size - 1] = 0;
            pos[i]++;
        }
        sum = 0;
        for (int j = size - 1; j > 0; j--) {
            sum += llabs(f[j]);
            if ((double)sum > cutoff) break;
            kept--;
        }
        if (kept > min_size) min_size = kept;
    }
    if (min_size == 1 && align == 2) align = 1;  // x86: unscaled vertical filters stay 1 tap
    int n = (min_size + align - 1) & ~(align - 1);
    if (n > CPK_MAX_TAPS) goto fail;
    int64_t *g = calloc((size_t)dst * (size_t)n, sizeof(int64_t));
    if (!g) goto fail;
    for (int i = 0; i < dst; i++)
        for (int j = 0; j < n && j < size; j++) g[i * n + j] = raw[i * size + j];
    free(raw);
    raw = g;
    // Edges: taps left of the first sample fold onto it, taps past the last one onto the last one.
    for (int i = 0; i < dst; i++) {
        int64_t *f = raw + (size_t)i * n;
        if (pos[i] < 0) {
            for (int j = 1; j < n; j++) {
                int left = j + pos[i] > 0 ? j + pos[i] : 0;
                f[left] += f[j];
                f[j] = 0;
            }
            pos[i] = 0;
        }
        if (pos[i] + n > src) {
            int shift = pos[i] + (n - src < 0 ? n - src : 0);
            int64_t acc = 0;
            for (int j = n - 1; j >= 0; j--)
                if (pos[i] + j >= src) {
                    acc += f[j];
                    f[j] = 0;
                }
            for (int j = n - 1; j >= 0; j--) f[j] = j < shift ? 0 : f[j - shift];
            pos[i] -= shift;
            f[src - 1 - pos[i]] += acc;
        }
        if (pos[i] < 0 || pos[i] >= src) goto fail;
        for (int j = 0; j < n; j++)
            if (f[j] != 0 && pos[i] + j >= src) goto fail;
    }
    // Normalise to `one`, carrying each tap's rounding error into the next.
    int16_t *coef = malloc(sizeof(int16_t) * (size_t)dst * (size_t)n);
    if (!coef) goto fail;
    for (int i = 0; i < dst; i++) {
        const int64_t *f = raw + (size_t)i * n;
        int64_t sum = 0;
        for (int j = 0; j < n; j++) sum += f[j];
        sum = (sum + one / 2) / one;
        if (!sum) sum = 1;
        int64_t error = 0;
        for (int j = 0; j < n; j++) {
            int64_t v = f[j] + error;
            int64_t q = cpk_rounded_div(v, sum);
            coef[i * n + j] = (int16_t)q;
            error = v - q * sum;
        }
    }
    free(raw);
    out->pos = pos;
    out->coef = coef;
    out->size = n;
    return true;
fail:
    free(raw);
    free(pos);
    return false;
}

// swscale's 16-bit rounding of a 16.16 coefficient scaled by 2^k.
static int32_t cpk_round16(int64_t f) {
    int r = (int)((f + (1 << 15)) >> 16);
    if (r < -0x7FFF) return -0x8000;
    if (r > 0x7FFF) return 0x7FFF;
    return r;
}

static void set_coefficients(cpk_rgb_plan *p) {
    // The inverse matrices (16.16) of swscale's sws_getCoefficients: v→R, u→B, −u→G, −v→G.
    static const int32_t bt601[4] = {104597, 132201, 25675, 53279};
    static const int32_t bt709[4] = {117489, 138438, 13975, 34925};
    const int32_t *t = p->bt709 ? bt709 : bt601;
    int64_t crv = t[0], cbu = t[1], cgu = -t[2], cgv = -t[3], cy = 1 << 16, oy = 0;
    if (!p->full_range) {
        cy = (cy * 255) / 219;
        oy = 16 << 16;
    } else {
        crv = (crv * 224) / 255;
        cbu = (cbu * 224) / 255;
        cgu = (cgu * 224) / 255;
        cgv = (cgv * 224) / 255;
    }
    // (Contrast and saturation 1.0 and brightness 0 leave these unchanged.)
    p->y_coeff = (int16_t)cpk_round16(cy * 8192);
    p->y_offset = (int16_t)cpk_round16(oy * 512);
    p->v2r = (int16_t)cpk_round16(crv * 8192);
    p->v2g = (int16_t)cpk_round16(cgv * 8192);
    p->u2g = (int16_t)cpk_round16(cgu * 8192);
    p->u2b = (int16_t)cpk_round16(cbu * 8192);
}

static bool build_simd_tables(cpk_rgb_plan *p);

// The effective vertical weights of each output row, as swscale's packed vertical scaler chooses its
// output function (x86: the luma filter is one tap): one chroma tap → that row alone; two taps
// summing to 4096 → the 1-tap output function, which takes the first row alone when the second
// weight is under 2048 and the plain average of both rows otherwise (not the weighted sum); any other
// two taps → the general function's weighted sum. Each case is the general formula
// ((1 << 9) − (128 << 19) + c0·w0 + c1·w1) >> 10 with weights (4096, 0), (2048, 2048) or (w0, w1):
// exactly (c0 − 16384)·4, (c0 + c1 − 32768)·2 and the weighted sum.
static bool vertical_weights(cpk_rgb_plan *p) {
    const cpk_filter *f = &p->vertical;
    if (f->size > 2) return false;
    p->v_eff = malloc(sizeof(int16_t) * 4 * (size_t)p->height);
    if (!p->v_eff) return false;
    for (int row = 0; row < p->height; row++) {
        const int first = f->pos[row];
        const int16_t *c = f->coef + (size_t)row * f->size;
        const int second = first + 1 < p->chroma_height ? first + 1 : first;
        int16_t *e = p->v_eff + 4 * row;
        e[0] = (int16_t)first;
        if (f->size == 1 || (c[0] + c[1] == 4096 && c[1] >= 0 && c[1] < 2048)) {
            e[1] = (int16_t)first;
            e[2] = 4096;
            e[3] = 0;
        } else if (c[0] + c[1] == 4096 && c[1] >= 0) {
            e[1] = (int16_t)second;
            e[2] = 2048;
            e[3] = 2048;
        } else {
            e[1] = (int16_t)second;
            e[2] = c[0];
            e[3] = c[1];
        }
    }
    return true;
}

void cpk_rgb_plan_destroy(cpk_rgb_plan *p) {
    if (!p) return;
    free(p->horizontal.pos);
    free(p->horizontal.coef);
    free(p->vertical.pos);
    free(p->vertical.coef);
    for (int c = 0; c < 2; c++)
        for (int k = 0; k < CPK_CACHE_ROWS; k++) free(p->rows[c][k]);
    free(p->tap_pos);
    free(p->tap_next);
    free(p->tap_coef);
    free(p->block_base);
    free(p->block_shuffle);
    free(p->block_coef);
    free(p->v_eff);
    free(p);
}

cpk_rgb_plan *cpk_rgb_plan_create(int width, int height, bool bt709, bool full_range) {
    if (width <= 0 || height <= 0 || width > 16384 || height > 16384) return NULL;
    cpk_rgb_plan *p = calloc(1, sizeof(cpk_rgb_plan));
    if (!p) return NULL;
    p->width = width;
    p->height = height;
    p->chroma_width = (width + 1) >> 1;
    p->chroma_height = (height + 1) >> 1;
    p->bt709 = bt709;
    p->full_range = full_range;
    set_coefficients(p);
    // Steps as swscale computes them: (src << 16 + dst / 2) / dst. Chroma sited at 128/256 of a
    // source sample's luma grid in both directions (swscale's default for 4:2:0 input).
    const int64_t x_inc = (((int64_t)p->chroma_width << 16) + (width >> 1)) / width;
    const int64_t y_inc = (((int64_t)p->chroma_height << 16) + (height >> 1)) / height;
    if (!build_filter(&p->horizontal, p->chroma_width, width, x_inc, 128, 128, 1 << 14, 4) ||
        !build_filter(&p->vertical, p->chroma_height, height, y_inc, 128, 128, 1 << 12, 2)) {
        cpk_rgb_plan_destroy(p);
        return NULL;
    }
    for (int c = 0; c < 2; c++) {
        for (int k = 0; k < CPK_CACHE_ROWS; k++) {
            p->rows[c][k] = calloc((size_t)width + 64, sizeof(int16_t));
            if (!p->rows[c][k]) {
                cpk_rgb_plan_destroy(p);
                return NULL;
            }
        }
    }
    if (!vertical_weights(p) || !build_simd_tables(p)) {
        cpk_rgb_plan_destroy(p);
        return NULL;
    }
    return p;
}

// One chroma row upsampled horizontally to 15 bits (item 1).
static void horizontal_scalar(const cpk_rgb_plan *p, const uint8_t *src, int16_t *dst, int from) {
    const int width = p->width;
    if (p->two_tap) {
        // Each output's nonzero taps are two adjacent samples (the second one's index clamped when its
        // coefficient is zero): no loop over the aligned, mostly zero taps.
        const int32_t *pos = p->tap_pos;
        const int16_t *coef = p->tap_coef;
        for (int x = from; x < width; x++) {
            const uint8_t *s = src + pos[x];
            const int val = (s[0] * coef[2 * x] + s[p->tap_next[x]] * coef[2 * x + 1]) >> 7;
            dst[x] = (int16_t)(val < 32767 ? val : 32767);
        }
        return;
    }
    const int n = p->horizontal.size;
    const int32_t *pos = p->horizontal.pos;
    const int16_t *coef = p->horizontal.coef;
    for (int x = from; x < width; x++) {
        const uint8_t *s = src + pos[x];
        const int16_t *c = coef + (size_t)x * n;
        int val = 0;
        for (int j = 0; j < n; j++)
            if (c[j] != 0) val += s[j] * c[j];  // zero taps may lie past the row's end: not read
        val >>= 7;
        dst[x] = (int16_t)(val < 32767 ? val : 32767);
    }
}

typedef void (*cpk_horizontal_fn)(const cpk_rgb_plan *p, const uint8_t *src, int16_t *dst);

static void horizontal_row_scalar(const cpk_rgb_plan *p, const uint8_t *src, int16_t *dst) {
    horizontal_scalar(p, src, dst, 0);
}

// The upsampled row `row` of chroma plane `plane` (0 U, 1 V), from the cache or computed.
static const int16_t *chroma_row(
    cpk_rgb_plan *p, int plane, const uint8_t *base, ptrdiff_t stride, int row, cpk_horizontal_fn fn) {
    for (int k = 0; k < CPK_CACHE_ROWS; k++)
        if (p->row_index[plane][k] == row) return p->rows[plane][k];
    int slot = p->next_slot[plane];
    p->next_slot[plane] = (slot + 1) % CPK_CACHE_ROWS;
    fn(p, base + (ptrdiff_t)row * stride, p->rows[plane][slot]);
    p->row_index[plane][slot] = row;
    return p->rows[plane][slot];
}

static inline int32_t cpk_clip30(int32_t v) { return (v & ~0x3FFFFFFF) ? (int32_t)((~(uint32_t)v) >> 31) * 0x3FFFFFFF : v; }

// Item 3 for pixels [from, width) of one row: chroma rows u0/u1, v0/v1 with the row's effective
// vertical weights w0 + w1 (see vertical_weights).
static void output_scalar(
    const cpk_rgb_plan *p, const uint8_t *y_row, const int16_t *u0, const int16_t *u1, const int16_t *v0,
    const int16_t *v1, int w0, int w1, int from, uint8_t *out) {
    // (Copied to locals: the byte stores below could alias the plan, which would reload them.)
    const int32_t width = p->width, y_offset = p->y_offset, y_coeff = p->y_coeff;
    const uint32_t v2r = (uint32_t)p->v2r, v2g = (uint32_t)p->v2g, u2g = (uint32_t)p->u2g, u2b = (uint32_t)p->u2b;
    for (int x = from; x < width; x++) {
        int32_t Y = ((1 << 9) + (y_row[x] << 7) * 4096) >> 10;
        int32_t U = ((1 << 9) - (128 << 19) + u0[x] * w0 + u1[x] * w1) >> 10;
        int32_t V = ((1 << 9) - (128 << 19) + v0[x] * w0 + v1[x] * w1) >> 10;
        uint32_t yy = (uint32_t)((Y - y_offset) * y_coeff) + (1u << 21);
        int32_t R = (int32_t)(yy + (uint32_t)V * v2r);
        int32_t G = (int32_t)(yy + (uint32_t)V * v2g + (uint32_t)U * u2g);
        int32_t B = (int32_t)(yy + (uint32_t)U * u2b);
        out[3 * x] = (uint8_t)(cpk_clip30(R) >> 22);
        out[3 * x + 1] = (uint8_t)(cpk_clip30(G) >> 22);
        out[3 * x + 2] = (uint8_t)(cpk_clip30(B) >> 22);
    }
}

typedef void (*cpk_output_fn)(
    const cpk_rgb_plan *p, const uint8_t *y_row, const int16_t *u0, const int16_t *u1, const int16_t *v0,
    const int16_t *v1, int w0, int w1, uint8_t *out);

static void output_row_scalar(
    const cpk_rgb_plan *p, const uint8_t *y_row, const int16_t *u0, const int16_t *u1, const int16_t *v0,
    const int16_t *v1, int w0, int w1, uint8_t *out) {
    output_scalar(p, y_row, u0, u1, v0, v1, w0, w1, 0, out);
}

static void convert_with(
    cpk_rgb_plan *p, const uint8_t *y, ptrdiff_t y_stride, const uint8_t *u, ptrdiff_t u_stride, const uint8_t *v,
    ptrdiff_t v_stride, uint8_t *rgb, ptrdiff_t rgb_stride, cpk_horizontal_fn horizontal, cpk_output_fn output) {
    for (int c = 0; c < 2; c++) {
        for (int k = 0; k < CPK_CACHE_ROWS; k++) p->row_index[c][k] = -1;
        p->next_slot[c] = 0;
    }
    for (int row = 0; row < p->height; row++) {
        const int16_t *e = p->v_eff + 4 * row;
        const int16_t *u0 = chroma_row(p, 0, u, u_stride, e[0], horizontal);
        const int16_t *u1 = chroma_row(p, 0, u, u_stride, e[1], horizontal);
        const int16_t *v0 = chroma_row(p, 1, v, v_stride, e[0], horizontal);
        const int16_t *v1 = chroma_row(p, 1, v, v_stride, e[1], horizontal);
        output(p, y + (ptrdiff_t)row * y_stride, u0, u1, v0, v1, e[2], e[3], rgb + (ptrdiff_t)row * rgb_stride);
    }
}


// The SIMD paths split the horizontal filter into blocks of 8 outputs whose two taps all lie in the 16
// source bytes from the block's first tap: one byte shuffle puts each output's (tap 0, tap 1) pair in
// a 16-bit lane pair, one multiply-add applies both coefficients. The blocks whose 16 bytes would run
// past the row (the last one or two) and any filter that is not two adjacent taps take the scalar code.
static bool build_simd_tables(cpk_rgb_plan *p) {
    const cpk_filter *f = &p->horizontal;
    const int blocks = p->width / 8;
    p->block_base = malloc(sizeof(int32_t) * (size_t)(blocks + 1));
    p->block_shuffle = calloc((size_t)blocks + 1, 32);
    p->block_coef = calloc((size_t)blocks + 1, 16 * sizeof(int16_t));
    p->tap_pos = malloc(sizeof(int32_t) * (size_t)p->width);
    p->tap_next = malloc((size_t)p->width);
    p->tap_coef = malloc(sizeof(int16_t) * 2 * (size_t)p->width);
    if (!p->block_base || !p->block_shuffle || !p->block_coef || !p->tap_pos || !p->tap_next || !p->tap_coef)
        return false;
    p->two_tap = true;
    for (int x = 0; x < p->width; x++) {
        const int16_t *c = f->coef + (size_t)x * f->size;
        int first = -1, last = -1;
        for (int j = 0; j < f->size; j++)
            if (c[j] != 0) {
                if (first < 0) first = j;
                last = j;
            }
        if (first < 0) first = last = 0;
        if (last - first > 1) p->two_tap = false;
        p->tap_pos[x] = f->pos[x] + first;
        p->tap_next[x] = last > first ? 1 : 0;
        p->tap_coef[2 * x] = c[first];
        p->tap_coef[2 * x + 1] = last > first ? c[last] : 0;
    }
    p->simd_blocks = 0;
    for (int b = 0; b < blocks; b++) {
        int base = 0;
        bool ok = true;
        for (int k = 0; k < 8 && ok; k++) {
            const int x = 8 * b + k;
            const int16_t *c = f->coef + (size_t)x * f->size;
            int first = -1, last = -1;
            for (int j = 0; j < f->size; j++)
                if (c[j] != 0) {
                    if (first < 0) first = j;
                    last = j;
                }
            if (first < 0) first = last = 0;
            if (last - first > 1) ok = false;
            const int at = f->pos[x] + first;
            if (k == 0) base = at;
            const int i0 = at - base, i1 = last > first ? i0 + 1 : i0;
            if (i0 < 0 || i1 > 15) ok = false;
            uint8_t *s = p->block_shuffle + 32 * b + (k / 4) * 16 + (k % 4) * 4;
            s[0] = (uint8_t)i0;
            s[1] = 0x80;
            s[2] = (uint8_t)i1;
            s[3] = 0x80;
            p->block_coef[16 * b + 2 * k] = c[first];
            p->block_coef[16 * b + 2 * k + 1] = last > first ? c[last] : 0;
        }
        if (!ok || base + 16 > p->chroma_width) break;
        p->block_base[b] = base;
        p->simd_blocks = b + 1;
    }
    return true;
}

#if defined(__x86_64__)
#include <immintrin.h>

#define CPK_AVX2 __attribute__((target("avx2")))
#define CPK_AVX512 __attribute__((target("avx2,avx512f,avx512bw,avx512vbmi")))

CPK_AVX2 static inline __m256i horizontal_block_avx2(const cpk_rgb_plan *p, const uint8_t *src, int b) {
    const __m256i bytes = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(src + p->block_base[b])));
    const __m256i pairs = _mm256_shuffle_epi8(bytes, _mm256_loadu_si256((const __m256i *)(p->block_shuffle + 32 * b)));
    const __m256i sums = _mm256_madd_epi16(pairs, _mm256_loadu_si256((const __m256i *)(p->block_coef + 16 * b)));
    return _mm256_srai_epi32(sums, 7);
}

// Item 1 for one chroma row; packs saturate to 32767 as swscale's min does.
CPK_AVX2 static void horizontal_row_avx2(const cpk_rgb_plan *p, const uint8_t *src, int16_t *dst) {
    int b = 0;
    for (; b + 2 <= p->simd_blocks; b += 2) {
        const __m256i a = horizontal_block_avx2(p, src, b), c = horizontal_block_avx2(p, src, b + 1);
        _mm256_storeu_si256((__m256i *)(dst + 8 * b), _mm256_permute4x64_epi64(_mm256_packs_epi32(a, c), 0xD8));
    }
    for (; b < p->simd_blocks; b++) {
        const __m256i a = horizontal_block_avx2(p, src, b);
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, a), 0xD8);
        _mm_storeu_si128((__m128i *)(dst + 8 * b), _mm256_castsi256_si128(packed));
    }
    horizontal_scalar(p, src, dst, 8 * p->simd_blocks);
}

// Item 3, 8 pixels at a time. The clip to [0, 2³⁰) and the shift by 22 become an arithmetic shift and
// the packs' saturation to [0, 255] (same result: a negative value gives 0, one ≥ 2³⁰ gives 255).
CPK_AVX2 static void output_row_avx2(
    const cpk_rgb_plan *p, const uint8_t *y_row, const int16_t *u0, const int16_t *u1, const int16_t *v0,
    const int16_t *v1, int w0, int w1, uint8_t *out) {
    const __m256i weights = _mm256_set1_epi32((int32_t)(((uint32_t)(uint16_t)w1 << 16) | (uint16_t)w0));
    const __m256i bias = _mm256_set1_epi32((1 << 9) - (128 << 19));
    const __m256i y_offset = _mm256_set1_epi32(p->y_offset), y_coeff = _mm256_set1_epi32(p->y_coeff);
    const __m256i half = _mm256_set1_epi32(1 << 21);
    const __m256i v2r = _mm256_set1_epi32(p->v2r), v2g = _mm256_set1_epi32(p->v2g);
    const __m256i u2g = _mm256_set1_epi32(p->u2g), u2b = _mm256_set1_epi32(p->u2b);
    const __m256i interleave = _mm256_setr_epi8(
        0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, -1, -1, -1, -1, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, -1, -1, -1, -1);
    const __m256i compact = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7);
    int x = 0;
    for (; x + 8 <= p->width; x += 8) {
        const __m256i luma = _mm256_slli_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(y_row + x))), 9);
        const __m128i ua = _mm_loadu_si128((const __m128i *)(u0 + x)), ub = _mm_loadu_si128((const __m128i *)(u1 + x));
        const __m128i va = _mm_loadu_si128((const __m128i *)(v0 + x)), vb = _mm_loadu_si128((const __m128i *)(v1 + x));
        const __m256i up = _mm256_set_m128i(_mm_unpackhi_epi16(ua, ub), _mm_unpacklo_epi16(ua, ub));
        const __m256i vp = _mm256_set_m128i(_mm_unpackhi_epi16(va, vb), _mm_unpacklo_epi16(va, vb));
        const __m256i U = _mm256_srai_epi32(_mm256_add_epi32(_mm256_madd_epi16(up, weights), bias), 10);
        const __m256i V = _mm256_srai_epi32(_mm256_add_epi32(_mm256_madd_epi16(vp, weights), bias), 10);
        const __m256i yy = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_sub_epi32(luma, y_offset), y_coeff), half);
        const __m256i R = _mm256_srai_epi32(_mm256_add_epi32(yy, _mm256_mullo_epi32(V, v2r)), 22);
        const __m256i G = _mm256_srai_epi32(
            _mm256_add_epi32(_mm256_add_epi32(yy, _mm256_mullo_epi32(V, v2g)), _mm256_mullo_epi32(U, u2g)), 22);
        const __m256i B = _mm256_srai_epi32(_mm256_add_epi32(yy, _mm256_mullo_epi32(U, u2b)), 22);
        // Bytes per 128-bit lane: R0-3 G0-3 B0-3 B0-3, then R G B interleaved, then both lanes' 12 bytes joined.
        const __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(R, G), _mm256_packs_epi32(B, B));
        const __m256i rgb = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(bytes, interleave), compact);
        _mm_storeu_si128((__m128i *)(out + 3 * x), _mm256_castsi256_si128(rgb));
        _mm_storel_epi64((__m128i *)(out + 3 * x + 16), _mm256_extracti128_si256(rgb, 1));
    }
    output_scalar(p, y_row, u0, u1, v0, v1, w0, w1, x, out);
}

// Item 3, 16 pixels at a time; one byte permute (VBMI) interleaves R, G and B.
CPK_AVX512 static void output_row_avx512(
    const cpk_rgb_plan *p, const uint8_t *y_row, const int16_t *u0, const int16_t *u1, const int16_t *v0,
    const int16_t *v1, int w0, int w1, uint8_t *out) {
    const __m512i weights = _mm512_set1_epi32((int32_t)(((uint32_t)(uint16_t)w1 << 16) | (uint16_t)w0));
    const __m512i bias = _mm512_set1_epi32((1 << 9) - (128 << 19));
    const __m512i y_offset = _mm512_set1_epi32(p->y_offset), y_coeff = _mm512_set1_epi32(p->y_coeff);
    const __m512i half = _mm512_set1_epi32(1 << 21), zero = _mm512_setzero_si512();
    const __m512i v2r = _mm512_set1_epi32(p->v2r), v2g = _mm512_set1_epi32(p->v2g);
    const __m512i u2g = _mm512_set1_epi32(p->u2g), u2b = _mm512_set1_epi32(p->u2b);
    uint16_t pair_index[32];
    uint8_t rgb_index[64];
    for (int i = 0; i < 32; i++) pair_index[i] = (uint16_t)((i & 1) ? 32 + i / 2 : i / 2);
    for (int i = 0; i < 64; i++) rgb_index[i] = i < 48 ? (uint8_t)((i % 3) * 16 + i / 3) : 0;
    const __m512i pairs = _mm512_loadu_si512(pair_index), order = _mm512_loadu_si512(rgb_index);
    int x = 0;
    for (; x + 16 <= p->width; x += 16) {
        const __m512i luma = _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(y_row + x))), 9);
        const __m512i up = _mm512_permutex2var_epi16(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(u0 + x))), pairs,
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(u1 + x))));
        const __m512i vp = _mm512_permutex2var_epi16(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(v0 + x))), pairs,
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(v1 + x))));
        const __m512i U = _mm512_srai_epi32(_mm512_add_epi32(_mm512_madd_epi16(up, weights), bias), 10);
        const __m512i V = _mm512_srai_epi32(_mm512_add_epi32(_mm512_madd_epi16(vp, weights), bias), 10);
        const __m512i yy = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_sub_epi32(luma, y_offset), y_coeff), half);
        const __m512i R = _mm512_srai_epi32(_mm512_add_epi32(yy, _mm512_mullo_epi32(V, v2r)), 22);
        const __m512i G = _mm512_srai_epi32(
            _mm512_add_epi32(_mm512_add_epi32(yy, _mm512_mullo_epi32(V, v2g)), _mm512_mullo_epi32(U, u2g)), 22);
        const __m512i B = _mm512_srai_epi32(_mm512_add_epi32(yy, _mm512_mullo_epi32(U, u2b)), 22);
        const __m128i r8 = _mm512_cvtusepi32_epi8(_mm512_max_epi32(R, zero));
        const __m128i g8 = _mm512_cvtusepi32_epi8(_mm512_max_epi32(G, zero));
        const __m128i b8 = _mm512_cvtusepi32_epi8(_mm512_max_epi32(B, zero));
        __m512i planes = _mm512_inserti32x4(_mm512_castsi128_si512(r8), g8, 1);
        planes = _mm512_inserti32x4(planes, b8, 2);
        _mm512_mask_storeu_epi8(out + 3 * x, (__mmask64)0xFFFFFFFFFFFFULL, _mm512_permutexvar_epi8(order, planes));
    }
    output_scalar(p, y_row, u0, u1, v0, v1, w0, w1, x, out);
}
#endif

cpk_path cpk_best_path(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();  // includes the OS saving the YMM / ZMM state (XGETBV)
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vbmi"))
        return CPK_PATH_AVX512;
    if (__builtin_cpu_supports("avx2")) return CPK_PATH_AVX2;
#endif
    return CPK_PATH_SCALAR;
}

void cpk_rgb_convert(
    cpk_rgb_plan *p, const uint8_t *y, ptrdiff_t y_stride, const uint8_t *u, ptrdiff_t u_stride, const uint8_t *v,
    ptrdiff_t v_stride, uint8_t *rgb, ptrdiff_t rgb_stride, cpk_path path) {
    static int cached = -1;  // every thread computes the same value; atomic so that TSan sees no race
    int best = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (best < 0) {
        best = (int)cpk_best_path();
        __atomic_store_n(&cached, best, __ATOMIC_RELAXED);
    }
    if ((int)path > best) path = (cpk_path)best;
    cpk_horizontal_fn horizontal = horizontal_row_scalar;
    cpk_output_fn output = output_row_scalar;
#if defined(__x86_64__)
    if (path == CPK_PATH_AVX2) {
        horizontal = horizontal_row_avx2;
        output = output_row_avx2;
    } else if (path == CPK_PATH_AVX512) {
        horizontal = horizontal_row_avx2;
        output = output_row_avx512;
    }
#endif
    convert_with(p, y, y_stride, u, u_stride, v, v_stride, rgb, rgb_stride, horizontal, output);
}
