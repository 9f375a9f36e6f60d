// The body of the pointwise (1×1 convolution) kernel, instantiated by PointwiseAVX.c once per
// instruction set (AVX2 + FMA, AVX-512). Not a public header: PointwiseAVX.c defines, before each
// #include, the vector type and operations below and the names to give the two functions.
//
//   CLK_PW_TARGET            the function attribute selecting the instruction set
//   CLK_PW_VEC, CLK_PW_LANES the vector type and its float count
//   CLK_PW_MASK              the tail mask type; CLK_PW_TAIL_MASK(count) builds one (count < lanes)
//   CLK_PW_ROWS, CLK_PW_COLS output channels × vectors of pixels per register block
//   CLK_PW_LOAD, CLK_PW_STORE, CLK_PW_MASKLOAD(p, mask), CLK_PW_MASKSTORE(p, mask, v)
//   CLK_PW_SET1, CLK_PW_ZERO, CLK_PW_FMA(a, b, c) = a·b + c, CLK_PW_ADD, CLK_PW_MUL, CLK_PW_MAX
//   CLK_PW_NEGATIVE_BLEND(x, y) = x < 0 ? y : x, lane by lane
//   CLK_PW_BLOCK, CLK_PW_ROW_TAIL, CLK_PW_PIXELS     the names of the block, row-tail and pixel-loop functions
//   CLK_PW_FUNCTION, CLK_PW_GATHER_FUNCTION          the names of the two entry points (planes, row pointers)

/// Output channels first … first + rows − 1, pixels x … x + cols · lanes − 1 (the last vector only
/// `tail` pixels when `masked`). Input value p of pixel i is input[p·n + i], or taps[p][i] when `taps`
/// is given (a convolution read in place, see clk_convolution_rows_*); output channel c starts at
/// output + c·ldo. One accumulator per (channel, vector), summed over the input channels
/// in order from zero; the bias (and residual) is added after the sum, as the GEMM it replaces does
/// with beta = 1. `rows`, `cols` and `masked` are constants at every call: the loops unroll and the
/// accumulators stay in registers.
CLK_PW_TARGET __attribute__((always_inline)) static inline void CLK_PW_BLOCK(
    const float *weights, ptrdiff_t first, int rows, ptrdiff_t k, const float *input, const float *const *taps,
    ptrdiff_t n, ptrdiff_t ldo, ptrdiff_t x, int cols, bool masked, CLK_PW_MASK tail, const float *bias,
    const float *residual, const float *slopes, bool relu, float *output) {
    CLK_PW_VEC acc[CLK_PW_ROWS][CLK_PW_COLS];
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < cols; j++) acc[r][j] = CLK_PW_ZERO();
    }
    const float *w = weights + first * k;
    const float *column = input + x;
    for (ptrdiff_t p = 0; p < k; p++) {
        if (taps) column = taps[p] + x;
        CLK_PW_VEC v[CLK_PW_COLS];
        for (int j = 0; j < cols; j++) {
            v[j] = masked && j == cols - 1 ? CLK_PW_MASKLOAD(column + j * CLK_PW_LANES, tail)
                                           : CLK_PW_LOAD(column + j * CLK_PW_LANES);
        }
        for (int r = 0; r < rows; r++) {
            const CLK_PW_VEC weight = CLK_PW_SET1(w[r * k + p]);
            for (int j = 0; j < cols; j++) acc[r][j] = CLK_PW_FMA(weight, v[j], acc[r][j]);
        }
        column += n;
    }
    for (int r = 0; r < rows; r++) {
        const ptrdiff_t channel = first + r;
        const CLK_PW_VEC shift = CLK_PW_SET1(bias[channel]);
        const CLK_PW_VEC slope = CLK_PW_SET1(slopes ? slopes[channel] : 0.0f);
        float *out = output + channel * ldo + x;
        const float *res = residual ? residual + channel * ldo + x : NULL;
        for (int j = 0; j < cols; j++) {
            const bool partial = masked && j == cols - 1;
            CLK_PW_VEC offset = shift;
            if (res) {
                // (residual + bias) first, then + the sum: the order of the GEMM onto input + bias.
                const CLK_PW_VEC before =
                    partial ? CLK_PW_MASKLOAD(res + j * CLK_PW_LANES, tail) : CLK_PW_LOAD(res + j * CLK_PW_LANES);
                offset = CLK_PW_ADD(before, shift);
            }
            CLK_PW_VEC y = CLK_PW_ADD(offset, acc[r][j]);
            if (slopes) {
                y = CLK_PW_NEGATIVE_BLEND(y, CLK_PW_MUL(y, slope));
            } else if (relu) {
                y = CLK_PW_MAX(y, CLK_PW_ZERO());  // NaN → 0, as the depthwise kernel's ReLU
            }
            if (partial) {
                CLK_PW_MASKSTORE(out + j * CLK_PW_LANES, tail, y);
            } else {
                CLK_PW_STORE(out + j * CLK_PW_LANES, y);
            }
        }
    }
}

/// Every output channel for one pixel block: full blocks of CLK_PW_ROWS channels, then the rest
/// (1 … CLK_PW_ROWS − 1) with the row count a constant in each case.
CLK_PW_TARGET __attribute__((always_inline)) static inline void CLK_PW_ROW_TAIL(
    const float *weights, ptrdiff_t m, ptrdiff_t k, const float *input, const float *const *taps, ptrdiff_t n,
    ptrdiff_t ldo, ptrdiff_t x, int cols, bool masked, CLK_PW_MASK tail, const float *bias, const float *residual,
    const float *slopes, bool relu, float *output) {
    ptrdiff_t first = 0;
    for (; first + CLK_PW_ROWS <= m; first += CLK_PW_ROWS) {
        CLK_PW_BLOCK(
            weights, first, CLK_PW_ROWS, k, input, taps, n, ldo, x, cols, masked, tail, bias, residual, slopes, relu,
            output);
    }
    switch (m - first) {
#define CLK_PW_CASE(R)                                                                                          \
    case R:                                                                                                     \
        CLK_PW_BLOCK(                                                                                           \
            weights, first, R, k, input, taps, n, ldo, x, cols, masked, tail, bias, residual, slopes, relu, output); \
        break;
        CLK_PW_CASE(1)
        CLK_PW_CASE(2)
        CLK_PW_CASE(3)
        CLK_PW_CASE(4)
        CLK_PW_CASE(5)
#if CLK_PW_ROWS > 6
        CLK_PW_CASE(6)
        CLK_PW_CASE(7)
#endif
#undef CLK_PW_CASE
    default: break;
    }
}

/// Every pixel block of one call: `input` planes n apart (taps NULL), or the k rows `taps` points at.
CLK_PW_TARGET __attribute__((always_inline)) static inline void CLK_PW_PIXELS(
    const float *weights, ptrdiff_t m, ptrdiff_t k, const float *input, const float *const *taps, ptrdiff_t n,
    ptrdiff_t ldo, const float *bias, const float *residual, const float *slopes, bool relu, float *output) {
    const CLK_PW_MASK none = CLK_PW_TAIL_MASK(0);
    const ptrdiff_t block = CLK_PW_COLS * CLK_PW_LANES;
    ptrdiff_t x = 0;
    // Pixel blocks outermost: the k × block slab of the input stays in L1 for every channel block.
    for (; x + block <= n; x += block) {
        CLK_PW_ROW_TAIL(
            weights, m, k, input, taps, n, ldo, x, CLK_PW_COLS, false, none, bias, residual, slopes, relu, output);
    }
    for (; x + CLK_PW_LANES <= n; x += CLK_PW_LANES) {
        CLK_PW_ROW_TAIL(weights, m, k, input, taps, n, ldo, x, 1, false, none, bias, residual, slopes, relu, output);
    }
    if (x < n) {
        const CLK_PW_MASK tail = CLK_PW_TAIL_MASK(n - x);
        CLK_PW_ROW_TAIL(weights, m, k, input, taps, n, ldo, x, 1, true, tail, bias, residual, slopes, relu, output);
    }
}

CLK_PW_TARGET void CLK_PW_FUNCTION(
    const float *weights, ptrdiff_t m, ptrdiff_t k, const float *input, ptrdiff_t n, const float *bias,
    const float *residual, const float *slopes, bool relu, float *output) {
    CLK_PW_PIXELS(weights, m, k, input, NULL, n, n, bias, residual, slopes, relu, output);
}

CLK_PW_TARGET void CLK_PW_GATHER_FUNCTION(
    const float *weights, ptrdiff_t m, ptrdiff_t k, const float *const *taps, ptrdiff_t n, const float *bias,
    const float *slopes, bool relu, ptrdiff_t output_stride, float *output) {
    CLK_PW_PIXELS(weights, m, k, NULL, taps, n, output_stride, bias, NULL, slopes, relu, output);
}
