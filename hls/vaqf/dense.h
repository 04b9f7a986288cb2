// vaqf kernel library: the GEMM unit (dense layers), binary or integer weights, with a
// relu + requantization epilogue. One instance per config struct is shared by every layer it runs;
// layer sizes and DDR offsets arrive at run time in a dense_desc.
#ifndef VAQF_DENSE_H
#define VAQF_DENSE_H

#include <ap_int.h>
#include "vaqf/ddr.h"
#include "vaqf/qarith.h"

namespace vaqf {

struct dense_desc {
    int rows;          // independent input rows (tokens) sharing the weights
    int in_dim;        // K
    int out_dim;       // N
    int w_offset;      // word offset of the packed [N, K] weights
    int bias_offset;   // word offset of N int32 biases
    int mant_offset;   // word offset of N int32 multipliers (requant only)
    int shift_offset;  // word offset of N int32 shifts (requant only)
    int zp_in;
    int zp_out;
    int out_lo;
    int out_hi;
    int rounding;
    int relu;
    int requant;
};

// Config struct defaults; generated projects derive from it and override sizes.
struct dense_config {
    static const int PE = 1;
    static const int SIMD = 1;
    static const int WBITS = 1;        // weight container bits (1: bipolar, bit 1 = +1)
    static const bool BINARY = true;
    static const int MAX_ROW_WORDS = 1;
    static const int ACC_BITS = 32;
};

template <class CFG, int WB, class act_t, class acc_t>
void dense(const ap_uint<WB>* ddr, const dense_desc& d, const act_t* in, act_t* out_act, acc_t* out_acc) {
#pragma HLS INLINE off
    typedef ap_int<CFG::ACC_BITS> sum_t;
    const int row_words = (d.in_dim * CFG::WBITS + WB - 1) / WB;
    ap_uint<WB> wbuf[CFG::PE][CFG::MAX_ROW_WORDS];
#pragma HLS ARRAY_PARTITION variable=wbuf complete dim=1
    int bias[CFG::PE], mant[CFG::PE], shift[CFG::PE];
#pragma HLS ARRAY_PARTITION variable=bias complete
#pragma HLS ARRAY_PARTITION variable=mant complete
#pragma HLS ARRAY_PARTITION variable=shift complete

block:
    for (int o0 = 0; o0 < d.out_dim; o0 += CFG::PE) {
    load_rows:
        for (int p = 0; p < CFG::PE; p++) {
            int o = o0 + p;
            bool live = o < d.out_dim;
            bias[p] = live ? read_lane32<WB>(ddr, d.bias_offset, o) : 0;
            mant[p] = (live && d.requant) ? read_lane32<WB>(ddr, d.mant_offset, o) : 0;
            shift[p] = (live && d.requant) ? read_lane32<WB>(ddr, d.shift_offset, o) : 0;
        load_words:
            for (int w = 0; w < row_words; w++) {
#pragma HLS PIPELINE II=1
                if (live) wbuf[p][w] = ddr[d.w_offset + o * row_words + w];
            }
        }
        // Rows are software-pipelined: while the MAC steps of row r run, the PE results of row r-1 drain
        // through the epilogue, one per cycle, so a row costs max(ceil(K/SIMD), PE) cycles.
        const int steps = (d.in_dim + CFG::SIMD - 1) / CFG::SIMD;
        const int span = steps > CFG::PE ? steps : CFG::PE;
        sum_t acc[CFG::PE], done[CFG::PE];
#pragma HLS ARRAY_PARTITION variable=acc complete
#pragma HLS ARRAY_PARTITION variable=done complete
    rows:
        for (int r = 0; r <= d.rows; r++) {
        steps_loop:
            for (int t = 0; t < span; t++) {
#pragma HLS PIPELINE II=1
                if (r < d.rows && t < steps) {
                    const int k0 = t * CFG::SIMD;
                    for (int p = 0; p < CFG::PE; p++) {
#pragma HLS UNROLL
                        sum_t partial = 0;
                        for (int s = 0; s < CFG::SIMD; s++) {
#pragma HLS UNROLL
                            int k = k0 + s;
                            if (k < d.in_dim) {
                                ap_int<act_t::width + 1> x = ap_int<act_t::width + 1>(in[r * d.in_dim + k]) - d.zp_in;
                                int bit = k * CFG::WBITS;
                                ap_uint<WB> word = wbuf[p][bit / WB];
                                int lo = bit % WB;
                                ap_uint<CFG::WBITS> raw = word.range(lo + CFG::WBITS - 1, lo);
                                if (CFG::BINARY) {
                                    partial += raw[0] ? sum_t(x) : sum_t(-x);
                                } else {
                                    ap_int<CFG::WBITS> w = raw;
                                    partial += sum_t(x * w);
                                }
                            }
                        }
                        acc[p] = (t == 0 ? sum_t(bias[p]) : acc[p]) + partial;
                    }
                }
                if (r > 0 && t < CFG::PE) {
                    int o = o0 + t;
                    if (o < d.out_dim) {
                        wide_t a = done[t];
                        if (d.relu && a < 0) a = 0;
                        int at = (r - 1) * d.out_dim + o;
                        if (d.requant) {
                            out_act[at] = requantize(a, mant[t], shift[t], d.zp_out, d.out_lo, d.out_hi, d.rounding);
                        } else {
                            out_acc[at] = a;
                        }
                    }
                }
            }
            for (int p = 0; p < CFG::PE; p++) {
#pragma HLS UNROLL
                done[p] = acc[p];
            }
        }
    }
}

}  // namespace vaqf

#endif
