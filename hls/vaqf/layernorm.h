// vaqf kernel library: integer LayerNorm over rows (see vaqf/ops/layernorm.py for the arithmetic).
#ifndef VAQF_LAYERNORM_H
#define VAQF_LAYERNORM_H

#include <ap_int.h>
#include "vaqf/ddr.h"
#include "vaqf/qarith.h"

namespace vaqf {

struct layernorm_desc {
    int rows, d;
    int gamma_offset, beta_offset;
    long long eps_q;
    int zp_out, out_lo, out_hi;
};

struct layernorm_config {
    static const int LANES = 1;
    static const int MAX_D = 1;
    static const int F_BITS = 10;
    static const int FG_BITS = 24;
};

// floor(sqrt(v)), bit by bit
inline wide_t isqrt64(ap_uint<64> v) {
    ap_uint<64> res = 0;
    ap_uint<64> bit = ap_uint<64>(1) << 62;
    for (int i = 0; i < 32; i++) {
#pragma HLS PIPELINE II=1
        if (bit != 0) {
            if (v >= res + bit) {
                v -= res + bit;
                res = (res >> 1) + bit;
            } else {
                res >>= 1;
            }
            bit >>= 2;
        }
    }
    return wide_t(res);
}

// round(num / den) half to even, den > 0
inline wide_t round_div_even(wide_t num, wide_t den) {
    wide_t q = num / den;
    wide_t r = num % den;
    if (r < 0) { q -= 1; r += den; }  // floor division
    wide_t rest = den - r;
    if (r > rest || (r == rest && (q & 1) == 1)) q += 1;
    return q;
}

// LANES elements per cycle in each of the three passes over a row (sum, sum of squares, normalize), a
// divider per lane; one square root per row. Integer sums do not depend on the order, so the result is
// the same for every LANES.
template <class CFG, int WB, class in_t, class out_t>
void layernorm(const ap_uint<WB>* ddr, const layernorm_desc& d, const in_t* in, out_t* out) {
#pragma HLS INLINE off
    int gamma[CFG::MAX_D], beta[CFG::MAX_D];
#pragma HLS ARRAY_PARTITION variable=gamma cyclic factor=CFG::LANES
#pragma HLS ARRAY_PARTITION variable=beta cyclic factor=CFG::LANES
load_params:
    for (int i = 0; i < d.d; i++) {
#pragma HLS PIPELINE II=1
        gamma[i] = read_lane32<WB>(ddr, d.gamma_offset, i);
        beta[i] = read_lane32<WB>(ddr, d.beta_offset, i);
    }
rows:
    for (int r = 0; r < d.rows; r++) {
        const in_t* x = in + r * d.d;
        wide_t sum = 0;
    sum_pass:
        for (int i0 = 0; i0 < d.d; i0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
            wide_t part = 0;
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                if (i0 + l < d.d) part += x[i0 + l];
            }
            sum += part;
        }
        ap_uint<64> var = 0;
    var_pass:
        for (int i0 = 0; i0 < d.d; i0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
            ap_uint<64> part = 0;
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                if (i0 + l < d.d) {
                    wide_t y = wide_t(d.d) * wide_t(x[i0 + l]) - sum;
                    part += ap_uint<64>(y * y);
                }
            }
            var += part;
        }
        wide_t s = isqrt64(var / ap_uint<64>(d.d) + ap_uint<64>(d.eps_q));
        if (s < 1) s = 1;
    normalize:
        for (int i0 = 0; i0 < d.d; i0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                int i = i0 + l;
                if (i < d.d) {
                    wide_t y = wide_t(d.d) * wide_t(x[i]) - sum;
                    wide_t n = round_div_even(y * (wide_t(1) << CFG::F_BITS), s);
                    wide_t q = rshift_round(n * wide_t(gamma[i]) + wide_t(beta[i]), CFG::FG_BITS, HALF_EVEN)
                               + d.zp_out;
                    out[r * d.d + i] = clamp(q, d.out_lo, d.out_hi);
                }
            }
        }
    }
}

}  // namespace vaqf

#endif
