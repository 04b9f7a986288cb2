// vaqf kernel library: integer LayerNorm over rows (see vaqf/ops/layernorm.py for the arithmetic).
#ifndef VAQF_LAYERNORM_H
#define VAQF_LAYERNORM_H

#include <ap_int.h>
#include <hls_stream.h>
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

template <class CFG, class in_t>
struct layernorm_lanes {
    in_t v[CFG::LANES];
};

// Stage 1, per row: the sum, then the sum of squares of d*x - sum, LANES elements per cycle; the row's
// elements go on to stage 3 (read once more here rather than by two processes), the sums to stage 2.
template <class CFG, class in_t>
void layernorm_stats(const layernorm_desc& d, const in_t* in, hls::stream<layernorm_lanes<CFG, in_t> >& xs,
                     hls::stream<wide_t>& sums, hls::stream<ap_uint<64> >& vars) {
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
            layernorm_lanes<CFG, in_t> v;
            ap_uint<64> part = 0;
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                v.v[l] = 0;
                if (i0 + l < d.d) {
                    v.v[l] = x[i0 + l];
                    wide_t y = wide_t(d.d) * wide_t(x[i0 + l]) - sum;
                    part += ap_uint<64>(y * y);
                }
            }
            xs.write(v);
            var += part;
        }
        sums.write(sum);
        vars.write(var);
    }
}

// Stage 2, per row: s = floor(sqrt(var / d + eps)) (a sequential divider and square root, one row at a
// time); the row's sum passes on with it.
inline void layernorm_root(const layernorm_desc& d, hls::stream<wide_t>& sums, hls::stream<ap_uint<64> >& vars,
                           hls::stream<wide_t>& sums_out, hls::stream<wide_t>& roots) {
rows:
    for (int r = 0; r < d.rows; r++) {
        wide_t s = isqrt64(vars.read() / ap_uint<64>(d.d) + ap_uint<64>(d.eps_q));
        sums_out.write(sums.read());
        roots.write(s < 1 ? wide_t(1) : s);
    }
}

// Stage 3, per row: (d*x - sum) * 2^F / s rounded (a divider per lane), then gamma, beta and the output
// zero point, LANES elements per cycle.
template <class CFG, int WB, class in_t, class out_t>
void layernorm_apply(const ap_uint<WB>* ddr, const layernorm_desc& d, hls::stream<layernorm_lanes<CFG, in_t> >& xs,
                     hls::stream<wide_t>& sums, hls::stream<wide_t>& roots, out_t* out) {
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
        const wide_t sum = sums.read();
        const wide_t s = roots.read();
    normalize:
        for (int i0 = 0; i0 < d.d; i0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
            layernorm_lanes<CFG, in_t> v = xs.read();
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                int i = i0 + l;
                if (i < d.d) {
                    wide_t y = wide_t(d.d) * wide_t(v.v[l]) - sum;
                    wide_t n = round_div_even(y * (wide_t(1) << CFG::F_BITS), s);
                    wide_t q = rshift_round(n * wide_t(gamma[i]) + wide_t(beta[i]), CFG::FG_BITS, HALF_EVEN)
                               + d.zp_out;
                    out[r * d.d + i] = clamp(q, d.out_lo, d.out_hi);
                }
            }
        }
    }
}

// LayerNorm over rows as a three-stage row pipeline (DATAFLOW): while stage 3 normalizes row r and stage 2
// takes row r + 1's square root, stage 1 already sums row r + 2. A row's elements wait in a FIFO of two
// rows. Integer sums do not depend on the order: the result is the same for every LANES.
template <class CFG, int WB, class in_t, class out_t>
void layernorm(const ap_uint<WB>* ddr, const layernorm_desc& d, const in_t* in, out_t* out) {
#pragma HLS INLINE off
#pragma HLS DATAFLOW
    hls::stream<layernorm_lanes<CFG, in_t> > xs("layernorm_elements");
#pragma HLS STREAM variable=xs depth=2*((CFG::MAX_D+CFG::LANES-1)/CFG::LANES)
    hls::stream<wide_t> sums("layernorm_sums"), sums2("layernorm_sums_2"), roots("layernorm_roots");
    hls::stream<ap_uint<64> > vars("layernorm_variances");
#pragma HLS STREAM variable=sums depth=2
#pragma HLS STREAM variable=sums2 depth=2
#pragma HLS STREAM variable=roots depth=2
#pragma HLS STREAM variable=vars depth=2
    layernorm_stats<CFG, in_t>(d, in, xs, sums, vars);
    layernorm_root(d, sums, vars, sums2, roots);
    layernorm_apply<CFG, WB, in_t, out_t>(ddr, d, xs, sums2, roots, out);
}

}  // namespace vaqf

#endif
