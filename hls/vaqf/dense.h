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
    int live;          // output rows with a non-zero weight: computed, in the order of the row table
    int rows_offset;   // word offset of the row table: the live rows, then the all-zero rows
    int n_blocks;      // 0: the live rows over all K columns; else dense blocks (block-sparse layer)
    int blocks_offset; // word offset of the block table: per block 4 int32 (rows, MAC steps, first slot of
                       // the row table, word offset of its weights from w_offset)
    int cols_offset;   // word offset of the column table: per block steps x SIMD int32, the input column
                       // lane s reads at each step (always one of bank s: column % SIMD == s), -1 if none
};

// Config struct defaults; generated projects derive from it and override sizes.
struct dense_config {
    static const int PE = 1;
    static const int SIMD = 1;
    static const int EPI = 1;          // requantizers draining the PE accumulators in parallel
    static const int WBITS = 1;        // weight container bits (1: bipolar, bit 1 = +1)
    static const bool BINARY = true;
    static const int MAX_ROW_WORDS = 1;
    static const int ACC_BITS = 32;
    static const int MAX_STEPS = 1;    // MAC steps of the widest block of a block-sparse layer
};

// One weight-stationary GEMM over `rows` output rows, from slot `first` of the row table, each row a dot
// product of `steps` x SIMD weights with the input columns (in order, or gathered through the column table).
struct dense_seg {
    int first;
    int rows;
    int steps;
    int row_words;
    int w_offset;
    bool gather;       // weights stored by slot (block by block) and input columns from the column table
};

// Load one item of the parameters of output block `blk` of segment `g` into buffer set `b`: the PE weight
// rows (row_words words each), then PE biases, multipliers and shifts. Item `i` counts from 0.
template <class CFG, int WB>
inline void load_item(const ap_uint<WB>* ddr, const dense_desc& d, const dense_seg& g, int blk, int i,
                      ap_uint<WB> wbuf[CFG::PE][CFG::MAX_ROW_WORDS], int bias[CFG::PE], int mant[CFG::PE],
                      int shift[CFG::PE]) {
#pragma HLS INLINE
    const int weight_items = CFG::PE * g.row_words;
    if (i < weight_items) {
        int p = i / g.row_words, w = i % g.row_words;
        int slot = blk * CFG::PE + p;
        int o = slot < g.rows ? read_lane32<WB>(ddr, d.rows_offset, g.first + slot) : 0;
        int at = g.gather ? slot : o;  // a block's weights are stored in its row order
        if (slot < g.rows) wbuf[p][w] = ddr[g.w_offset + at * g.row_words + w];
    } else {
        int j = i - weight_items;
        int p = j % CFG::PE, kind = j / CFG::PE;
        int slot = blk * CFG::PE + p;
        bool live = slot < g.rows;
        int o = live ? read_lane32<WB>(ddr, d.rows_offset, g.first + slot) : 0;
        if (kind == 0) bias[p] = live ? read_lane32<WB>(ddr, d.bias_offset, o) : 0;
        if (kind == 1) mant[p] = (live && d.requant) ? read_lane32<WB>(ddr, d.mant_offset, o) : 0;
        if (kind == 2) shift[p] = (live && d.requant) ? read_lane32<WB>(ddr, d.shift_offset, o) : 0;
    }
}

// Rows whose weights are all zero (pruned channels) skip the MACs: their output is the epilogue of the
// bias alone, written for every input row.
template <class CFG, int WB, class act_t, class acc_t>
void dead_rows(const ap_uint<WB>* ddr, const dense_desc& d, act_t* out_act, acc_t* out_acc) {
#pragma HLS INLINE
    const int dead = d.out_dim - d.live;
dead_rows:
    for (int i0 = 0; i0 < dead * d.rows; i0 += CFG::EPI) {
#pragma HLS PIPELINE II=1
        for (int e = 0; e < CFG::EPI; e++) {  // the EPI requantizers are idle before the first block
#pragma HLS UNROLL
            int i = i0 + e;
            if (i < dead * d.rows) {
                int j = i % dead, r = i / dead;
                int o = read_lane32<WB>(ddr, d.rows_offset, d.live + j);
                wide_t a = read_lane32<WB>(ddr, d.bias_offset, o);
                if (d.relu && a < 0) a = 0;
                int at = r * d.out_dim + o;
                if (d.requant) {
                    out_act[at] = requantize(a, read_lane32<WB>(ddr, d.mant_offset, o),
                                             read_lane32<WB>(ddr, d.shift_offset, o), d.zp_out, d.out_lo, d.out_hi,
                                             d.rounding);
                } else {
                    out_acc[at] = a;
                }
            }
        }
    }
}

// Weight-stationary GEMM of one segment over output blocks of PE rows. Weights are double-buffered: while
// block b computes from one buffer set, block b+1's weights and per-channel constants stream from DDR into
// the other, one item per cycle in the same pipelined loop. Rows are software-pipelined too: while the MAC
// steps of row r run, the PE results of row r-1 drain through the epilogue, so a row costs
// max(steps, ceil(PE/EPI)) cycles and a block max(compute, next block's load).
template <class CFG, int WB, class act_t, class acc_t>
void dense_segment(const ap_uint<WB>* ddr, const dense_desc& d, const dense_seg& g,
                   const int cols[CFG::MAX_STEPS][CFG::SIMD], const act_t* in, act_t* out_act, acc_t* out_acc) {
#pragma HLS INLINE
    typedef ap_int<CFG::ACC_BITS> sum_t;
    const int load_items = CFG::PE * g.row_words + 3 * CFG::PE;
    const int blocks = (g.rows + CFG::PE - 1) / CFG::PE;
    const int steps = g.steps;
    const int drain = (CFG::PE + CFG::EPI - 1) / CFG::EPI;
    const int span = steps > drain ? steps : drain;
    const int compute_items = (d.rows + 1) * span;
    ap_uint<WB> wbuf[2][CFG::PE][CFG::MAX_ROW_WORDS];
#pragma HLS ARRAY_PARTITION variable=wbuf complete dim=1
#pragma HLS ARRAY_PARTITION variable=wbuf complete dim=2
    int bias[2][CFG::PE], mant[2][CFG::PE], shift[2][CFG::PE];
#pragma HLS ARRAY_PARTITION variable=bias complete dim=0
#pragma HLS ARRAY_PARTITION variable=mant complete dim=0
#pragma HLS ARRAY_PARTITION variable=shift complete dim=0
    sum_t acc[CFG::PE], done[CFG::PE];
#pragma HLS ARRAY_PARTITION variable=acc complete
#pragma HLS ARRAY_PARTITION variable=done complete

    if (blocks == 0) return;
prologue:
    for (int i = 0; i < load_items; i++) {
#pragma HLS PIPELINE II=1
        load_item<CFG, WB>(ddr, d, g, 0, i, wbuf[0], bias[0], mant[0], shift[0]);
    }
block:
    for (int blk = 0; blk < blocks; blk++) {
        const int cur = blk & 1, nxt = cur ^ 1;
        const int o0 = blk * CFG::PE;
        const int loads = blk + 1 < blocks ? load_items : 0;
        const int iters = compute_items > loads ? compute_items : loads;
        int r = 0, t = 0;
    overlap:
        for (int it = 0; it < iters; it++) {
#pragma HLS PIPELINE II=1
            if (it < loads) load_item<CFG, WB>(ddr, d, g, blk + 1, it, wbuf[nxt], bias[nxt], mant[nxt], shift[nxt]);
            if (it < compute_items) {
                if (r < d.rows && t < steps) {
                    const int k0 = t * CFG::SIMD;
                    for (int p = 0; p < CFG::PE; p++) {
#pragma HLS UNROLL
                        sum_t partial = 0;
                        for (int s = 0; s < CFG::SIMD; s++) {
#pragma HLS UNROLL
                            int k = k0 + s;  // weight slot
                            int col = g.gather ? cols[t][s] : k;  // lane s reads activation bank s
                            bool valid = g.gather ? col >= 0 : k < d.in_dim;
                            if (valid) {
                                ap_int<act_t::width + 1> x = ap_int<act_t::width + 1>(in[r * d.in_dim + col]) - d.zp_in;
                                int bit = k * CFG::WBITS;
                                ap_uint<WB> word = wbuf[cur][p][bit / WB];
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
                        acc[p] = (t == 0 ? sum_t(bias[cur][p]) : acc[p]) + partial;
                    }
                }
                if (r > 0 && t < drain) {
                    for (int e = 0; e < CFG::EPI; e++) {
#pragma HLS UNROLL
                        int p = t * CFG::EPI + e;
                        int slot = o0 + p;
                        if (p < CFG::PE && slot < g.rows) {
                            int o = read_lane32<WB>(ddr, d.rows_offset, g.first + slot);
                            wide_t a = done[p];
                            if (d.relu && a < 0) a = 0;
                            int at = (r - 1) * d.out_dim + o;
                            if (d.requant) {
                                out_act[at] = requantize(a, mant[cur][p], shift[cur][p], d.zp_out, d.out_lo, d.out_hi,
                                                         d.rounding);
                            } else {
                                out_acc[at] = a;
                            }
                        }
                    }
                }
                if (t == span - 1) {
                    for (int p = 0; p < CFG::PE; p++) {
#pragma HLS UNROLL
                        done[p] = acc[p];
                    }
                    t = 0;
                    r++;
                } else {
                    t++;
                }
            }
        }
    }
}

// The GEMM unit: the pruned rows' constants, then either the live rows over all K columns (one segment),
// or each dense block of a block-sparse layer over its gathered input columns. A block's column table
// (steps x SIMD entries, lane s always reading activation bank s, so the SIMD reads of a step never
// collide) is loaded before its weights.
template <class CFG, int WB, class act_t, class acc_t>
void dense(const ap_uint<WB>* ddr, const dense_desc& d, const act_t* in, act_t* out_act, acc_t* out_acc) {
#pragma HLS INLINE off
    int cols[CFG::MAX_STEPS][CFG::SIMD];
#pragma HLS ARRAY_PARTITION variable=cols complete dim=2
    dead_rows<CFG, WB>(ddr, d, out_act, out_acc);
    if (d.n_blocks == 0) {
        const int steps = (d.in_dim + CFG::SIMD - 1) / CFG::SIMD;
        dense_seg g = {0, d.live, steps, (d.in_dim * CFG::WBITS + WB - 1) / WB, d.w_offset, false};
        dense_segment<CFG, WB>(ddr, d, g, cols, in, out_act, out_acc);
        return;
    }
    int col_at = 0;
blocks:
    for (int b = 0; b < d.n_blocks; b++) {
        dense_seg g;
        g.rows = read_lane32<WB>(ddr, d.blocks_offset, 4 * b);
        g.steps = read_lane32<WB>(ddr, d.blocks_offset, 4 * b + 1);
        g.first = read_lane32<WB>(ddr, d.blocks_offset, 4 * b + 2);
        g.w_offset = d.w_offset + read_lane32<WB>(ddr, d.blocks_offset, 4 * b + 3);
        g.row_words = (g.steps * CFG::SIMD * CFG::WBITS + WB - 1) / WB;
        g.gather = true;
    column_table:
        for (int i = 0; i < g.steps * CFG::SIMD; i++) {
#pragma HLS PIPELINE II=1
            cols[i / CFG::SIMD][i % CFG::SIMD] = read_lane32<WB>(ddr, d.cols_offset, col_at + i);
        }
        col_at += g.steps * CFG::SIMD;
        dense_segment<CFG, WB>(ddr, d, g, cols, in, out_act, out_acc);
    }
}

}  // namespace vaqf

#endif
