// vaqf kernel library: integer LayerNorm over rows (the arithmetic: vaqf/ops/layernorm.py; the loops, their II
// and what the cost model charges for them: docs/hls-parts/softmax-layernorm.md).
//
// Buffers are act_t buf[WORDS][LANES], one bank per lane (vaqf/hw/layout.py): a row of d elements is
// `words` = ceil(d / LANES) consecutive words. Every row loop reads or writes one whole word per cycle, lane l
// always in bank l. No divider in any lane: stage 2 computes one reciprocal per row, stage 3 multiplies by it
// and corrects the quotient exactly, so the result is round_half_even(y * 2^F / S) as the reference defines.
#ifndef VAQF_LAYERNORM_H
#define VAQF_LAYERNORM_H

#include <ap_int.h>
#include <hls_stream.h>
#include "vaqf/cycles.h"
#include "vaqf/ddr.h"

namespace vaqf {

struct layernorm_desc {
    int rows, d, words;              // rows, elements per row, words per row
    int params_offset, params_size;  // DDR word offset of gamma then beta (int32 lanes), 2d entries
    int div_iters;                   // quotient bits of V / d (2 Y, Y: bits of |y| for this layer)
    int sq_iters;                    // result bits of the square root
    int rcp_iters;                   // quotient bits of 2^K / S (K + 1, K = Y + F); R is then aligned to
                                     // the unit's fixed point 2^K_MAX by K_MAX - K
    long long eps_q;
    int zp_out, out_lo, out_hi;
};

// Defaults; the generated <unit>_cfg overrides every field (vaqf/units/layernorm.py config).
struct layernorm_config {
    static const int LANES = 1;
    static const int MAX_ROWS = 1;
    static const int MAX_WORDS = 1;
    static const int MAX_D = 1;
    static const int IN_BITS = 8;    // signed bits of an input element
    static const int D_BITS = 1;     // unsigned bits of d
    static const int SUM_BITS = 9;   // signed bits of a row sum
    static const int Y_BITS = 8;     // |y| < 2^Y_BITS, y = d x - sum
    static const int V_BITS = 17;    // unsigned bits of V = sum y^2
    static const int U_BITS = 16;    // unsigned bits of floor(V / d) + eps_q
    static const int S_BITS = 8;     // unsigned bits of S
    static const int K_MAX = 18;     // the reciprocal's fixed point: R ~ 2^K_MAX / S
    static const int Q_BITS = 16;    // unsigned bits of round(|y| 2^F / S)
    static const int G_BITS = 32;    // signed bits of gamma_q
    static const int B_BITS = 32;    // signed bits of beta_q
    static const int ACC_BITS = 52;  // signed bits of n gamma_q + beta_q
    static const int F_BITS = 10;
    static const int FG_BITS = 24;
    static const int DEPTH_FILL = 3;  // pipeline depths, owned by the cost model
    static const int DEPTH_SUM = 2;
    static const int DEPTH_VAR = 6;
    static const int DEPTH_SEQ = 2;
    static const int DEPTH_NORM = 14;
};

template <class CFG>
struct layernorm_lanes {
    ap_int<CFG::Y_BITS + 1> v[CFG::LANES];
};

// Stage 1, per row: the sum pass, then y = d x - sum and the sum of squares, one word per cycle each; y goes
// on to stage 3 (padding lanes 0), the row's V to stage 2.
template <class CFG, class in_t>
void layernorm_stats(int rows, int d, int words, in_t in[][CFG::LANES], hls::stream<layernorm_lanes<CFG> >& ys,
                     hls::stream<ap_uint<CFG::V_BITS> >& vars) {
    typedef ap_int<CFG::IN_BITS> x_t;
    typedef ap_int<CFG::Y_BITS + 1> y_t;
    const ap_uint<CFG::D_BITS> dd = d;
    VAQF_ROW(0, 0);
    int base = 0;
rows:
    for (int r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_ROWS
        ap_int<CFG::SUM_BITS> sum = 0;
    sum_pass:
        for (int w = 0, k0 = 0; w < words; w++, k0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_WORDS
            ap_int<CFG::SUM_BITS> part = 0;
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                if (k0 + l < d) part += x_t(in[base + w][l]);
            }
            sum += part;
        }
        ap_uint<CFG::V_BITS> var = 0;
    var_pass:
        for (int w = 0, k0 = 0; w < words; w++, k0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_WORDS
            layernorm_lanes<CFG> v;
            ap_uint<CFG::V_BITS> part = 0;
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                y_t y = y_t(ap_int<CFG::IN_BITS + CFG::D_BITS + 1>(x_t(in[base + w][l]) * dd) - sum);
                v.v[l] = k0 + l < d ? y : y_t(0);
                part += ap_uint<2 * CFG::Y_BITS>(v.v[l] * v.v[l]);
            }
            ys.write(v);
            var += part;
        }
        vars.write(var);
        VAQF_ROW(0, 2 * words + CFG::DEPTH_SUM + CFG::DEPTH_VAR);
        base += words;
    }
}

// Stage 2, per row, three sequential loops at one bit per cycle (restoring division and the bit-by-bit
// square root, each a compare-subtract): U = floor(V / d) + eps_q, S = max(isqrt(U), 1), then the reciprocal
// R = floor(2^K / S) << (K_MAX - K).
template <class CFG>
void layernorm_root(int rows, int d, int div_iters, int sq_iters, int rcp_iters, int rcp_shift, long long eps_q,
                    hls::stream<ap_uint<CFG::V_BITS> >& vars, hls::stream<ap_uint<CFG::S_BITS> >& roots,
                    hls::stream<ap_uint<CFG::K_MAX + 1> >& recips) {
    const ap_uint<CFG::D_BITS> dd = d;
    VAQF_ROW(1, 0);
rows:
    for (int r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_ROWS
        ap_uint<CFG::V_BITS> v = vars.read();
        // V < d 2^div_iters: the remainder starts as V >> div_iters < d, the quotient has div_iters bits
        ap_uint<CFG::D_BITS + 1> rem = v >> div_iters;
        ap_uint<CFG::V_BITS> low = v << (CFG::V_BITS - div_iters);
        ap_uint<CFG::U_BITS> q = 0;
    divide:
        for (int i = 0; i < div_iters; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=2*CFG::Y_BITS
            rem = (rem << 1) | ap_uint<CFG::D_BITS + 1>(low[CFG::V_BITS - 1]);
            low = low << 1;
            bool ge = rem >= dd;
            if (ge) rem -= dd;
            q = (q << 1) | ap_uint<CFG::U_BITS>(ge ? 1 : 0);
        }
        ap_uint<CFG::U_BITS + 1> u = ap_uint<CFG::U_BITS + 1>(q) + ap_uint<CFG::U_BITS + 1>(eps_q);
        ap_uint<CFG::U_BITS + 1> res = 0;
        ap_uint<CFG::U_BITS + 1> bit = ap_uint<CFG::U_BITS + 1>(1) << (2 * (sq_iters - 1));
    square_root:
        for (int i = 0; i < sq_iters; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=(CFG::U_BITS+1)/2
            if (u >= res + bit) {
                u -= res + bit;
                res = (res >> 1) + bit;
            } else {
                res = res >> 1;
            }
            bit = bit >> 2;
        }
        ap_uint<CFG::S_BITS> s = res;
        if (res == 0) s = 1;
        ap_uint<CFG::S_BITS + 1> rrem = 0;
        ap_uint<CFG::K_MAX + 1> recip = 0;
    reciprocal:
        for (int i = 0; i < rcp_iters; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::K_MAX+1
            rrem = (rrem << 1) | ap_uint<CFG::S_BITS + 1>(i == 0 ? 1 : 0);  // the dividend 2^K: one leading 1
            bool ge = rrem >= s;
            if (ge) rrem -= s;
            recip = (recip << 1) | ap_uint<CFG::K_MAX + 1>(ge ? 1 : 0);
        }
        roots.write(s);
        recips.write(recip << rcp_shift);
        VAQF_ROW(1, div_iters + sq_iters + rcp_iters + 3 * CFG::DEPTH_SEQ);
    }
}

// Stage 3: the gamma/beta fill (one entry per cycle from the reader stage, a write-enable decode on the lane),
// then per row, one whole word per cycle: q0 = (|y| R) >> (K_MAX - F) is floor(|y| 2^F / S) or one less
// (R undershoots 2^K_MAX / S by less than 2^(K_MAX - K) and |y| 2^F < 2^K); the remainder |y| 2^F - q0 S
// corrects it to the floor and rounds half to even; then the affine step, the zero point and saturation.
template <class CFG, int WB, class out_t>
void layernorm_apply(int rows, int d, int words, int params_size, int zp_out, int out_lo, int out_hi,
                     hls::stream<ap_uint<WB> >& pw, hls::stream<layernorm_lanes<CFG> >& ys,
                     hls::stream<ap_uint<CFG::S_BITS> >& roots, hls::stream<ap_uint<CFG::K_MAX + 1> >& recips,
                     out_t out[][CFG::LANES]) {
    const int P = WB / 32;
    ap_int<CFG::G_BITS> gamma[CFG::MAX_WORDS][CFG::LANES];
    ap_int<CFG::B_BITS> beta[CFG::MAX_WORDS][CFG::LANES];
#pragma HLS ARRAY_PARTITION variable=gamma complete dim=2
#pragma HLS ARRAY_PARTITION variable=beta complete dim=2
    ap_uint<WB> word = 0;
    int j = 0, w = 0, l = 0;
fill:
    for (int i = 0; i < params_size; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=2*CFG::MAX_D
        if (j == 0) word = pw.read();
        ap_int<32> t = word(31, 0);
        word = word >> 32;
        if (i < d) gamma[w][l] = t;
        else beta[w][l] = t;
        j = j == P - 1 ? 0 : j + 1;
        if (i == d - 1) { w = 0; l = 0; }
        else if (l == CFG::LANES - 1) { w++; l = 0; }
        else l++;
    }
    VAQF_ROW(2, VAQF_DDR_LATENCY + params_size + CFG::DEPTH_FILL);  // the lead "row", beside stages 1 and 2
    const int F = CFG::F_BITS;
    const int FG = CFG::FG_BITS;
    typedef ap_uint<CFG::Y_BITS + F + 1> a_t;
    typedef ap_int<CFG::ACC_BITS> acc_t;
    int base = 0;
rows:
    for (int r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_ROWS
        const ap_uint<CFG::S_BITS> s = roots.read();
        const ap_uint<CFG::K_MAX + 1> recip = recips.read();
    normalize:
        for (int w2 = 0, k0 = 0; w2 < words; w2++, k0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_WORDS
            layernorm_lanes<CFG> v = ys.read();
            for (int m = 0; m < CFG::LANES; m++) {
#pragma HLS UNROLL
                ap_int<CFG::Y_BITS + 1> y = v.v[m];
                bool neg = y < 0;
                ap_uint<CFG::Y_BITS> ay = neg ? ap_uint<CFG::Y_BITS>(-y) : ap_uint<CFG::Y_BITS>(y);
                ap_uint<CFG::Y_BITS + CFG::K_MAX + 1> prod = ay * recip;
                ap_uint<CFG::Q_BITS> q = prod >> (CFG::K_MAX - F);
                a_t a = a_t(ay) << F;
                a_t rem = a - a_t(q * s);
                if (rem >= s) { q++; rem -= s; }
                ap_uint<CFG::S_BITS + 2> twice = ap_uint<CFG::S_BITS + 2>(rem) << 1;
                if (twice > s || (twice == s && q[0] == 1)) q++;
                ap_int<CFG::Q_BITS + 2> n = neg ? ap_int<CFG::Q_BITS + 2>(-ap_int<CFG::Q_BITS + 2>(q))
                                                : ap_int<CFG::Q_BITS + 2>(q);
                acc_t t = acc_t(n * gamma[w2][m]) + acc_t(beta[w2][m]);
                acc_t fl = t >> FG;
                ap_uint<FG> frac = t(FG - 1, 0);
                ap_uint<FG> half = ap_uint<FG>(1) << (FG - 1);
                acc_t o = fl + ((frac > half || (frac == half && fl[0] == 1)) ? 1 : 0) + zp_out;
                if (o < out_lo) o = out_lo;
                if (o > out_hi) o = out_hi;
                out[base + w2][m] = k0 + m < d ? out_t(o) : out_t(0);
            }
        }
        VAQF_ROW(2, words + CFG::DEPTH_NORM);
        base += words;
    }
}

// LayerNorm over rows as a row pipeline (HLS DATAFLOW, canonical: scalars by value, every channel one
// producer and one consumer, the input and output buffers distinct): the DDR reader feeds stage 3's
// gamma/beta fill while stage 1 sums row 0; then while stage 3 normalizes row r and stage 2 takes row r + 1's
// reciprocal, stage 1 sums row r + 2. y waits in a FIFO of two rows. Integer sums do not depend on the order:
// the result is the same for every LANES.
template <class CFG, int WB, class in_t, class out_t>
void layernorm(const ap_uint<WB>* ddr, int rows, int d, int words, int params_offset, int params_size,
               int params_words, int div_iters, int sq_iters, int rcp_iters, int rcp_shift, long long eps_q,
               int zp_out, int out_lo, int out_hi, in_t in[][CFG::LANES], out_t out[][CFG::LANES]) {
#pragma HLS INLINE off
#pragma HLS DATAFLOW
    hls::stream<ap_uint<WB> > pw("layernorm_param_words");
    hls::stream<layernorm_lanes<CFG> > ys("layernorm_centered");
#pragma HLS STREAM variable=ys depth=2*CFG::MAX_WORDS
    hls::stream<ap_uint<CFG::V_BITS> > vars("layernorm_variances");
    hls::stream<ap_uint<CFG::S_BITS> > roots("layernorm_roots");
    hls::stream<ap_uint<CFG::K_MAX + 1> > recips("layernorm_reciprocals");
#pragma HLS STREAM variable=vars depth=2
#pragma HLS STREAM variable=roots depth=2
#pragma HLS STREAM variable=recips depth=2
    ddr_read<WB, (2 * CFG::MAX_D + WB / 32 - 1) / (WB / 32)>(ddr, params_offset, params_words, pw);
    layernorm_stats<CFG, in_t>(rows, d, words, in, ys, vars);
    layernorm_root<CFG>(rows, d, div_iters, sq_iters, rcp_iters, rcp_shift, eps_q, vars, roots, recips);
    layernorm_apply<CFG, WB, out_t>(rows, d, words, params_size, zp_out, out_lo, out_hi, pw, ys, roots, recips,
                                    out);
}

}  // namespace vaqf

#endif
