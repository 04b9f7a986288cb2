// vaqf kernel library: the GEMM unit (dense layers), binary or integer weights, with a relu +
// requantization epilogue. One instance per config struct (the top's ALLOCATION on <unit>_run) serves every
// layer; sizes and the DDR region arrive at run time in a dense_desc, passed by value.
//
// Structure (docs/hls-parts/dense.md): a DATAFLOW region of two processes. The reader (vaqf::ddr_read)
// streams the layer's DDR region, laid out in consumption order by vaqf/units/gemm.py, at one word per
// cycle over consecutive addresses; the compute process consumes it: per block of PE output slots, PE
// constant words (folded bias, multiplier, shift, output column) and the block's PE x steps weight words of
// SIMD x WBITS bits, loaded into the idle half of a ping-pong buffer while the other half computes.
// Activations are SIMD-lane words (SIMD == ACT_LANES): MAC step t of row r reads the whole word
// r * in_words + t, lane s from bank s.
#ifndef VAQF_DENSE_H
#define VAQF_DENSE_H

#include <ap_int.h>
#include <hls_stream.h>
#include "vaqf/cycles.h"
#include "vaqf/ddr.h"
#include "vaqf/qarith.h"

#ifndef VAQF_DDR_LATENCY
#define VAQF_DDR_LATENCY 64  // generated projects define it in vaqf_top.h (vaqf.hw.cost.DDR_LATENCY)
#endif

namespace vaqf {

// The activation operand's own integer type: the zero point is folded into the bias, so an unsigned 8-bit
// activation enters the multiplier as 8 bits, not as a 9- or 10-bit difference (HLS-REVIEW C2).
template <int BITS, bool SIGNED>
struct dense_operand { typedef ap_uint<BITS> type; };
template <int BITS>
struct dense_operand<BITS, true> { typedef ap_int<BITS> type; };

struct dense_desc {
    int rows;          // independent input rows (tokens) sharing the weights
    int in_dim;        // K
    int out_dim;       // N
    int in_words;      // words of an input row: ceil(K / SIMD)
    int out_words;     // words of an output row: ceil(N / SIMD)
    int steps;         // MAC steps per row of a block: in_words, or the gathered blocks' (padded) step count
    int slots;         // output rows computed, PE per block (every row, the live rows, or blocks x PE)
    int dead;          // output rows with all-zero weights written from their constants (scatter form only)
    int scatter;       // 1: output columns from the row table, one element per cycle; 0: slot = column
    int n_blocks;      // > 0: block form, each block's columns gathered through its column table
    int ddr_offset;    // word offset of the layer's region in DDR
    int ddr_words;     // words of that region
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
    static const int SIMD = 1;         // == ACT_LANES
    static const int EPI = 1;          // requantizers draining the PE accumulators in parallel (<= SIMD)
    static const int WBITS = 1;        // weight container bits (1: bipolar, bit 1 = +1)
    static const bool BINARY = true;
    static const int IN_BITS = 8;      // the activation operand as its own integer (zero point in the bias)
    static const bool IN_SIGNED = false;
    static const int ACC_BITS = 32;
    static const int MAX_STEPS = 1;    // largest in_words of the unit's layers
    static const int MAX_ROWS = 1;
    static const int MAX_ITEMS = 1;    // largest trip count of one block's loop
    static const int MAX_BLOCKS = 1;
    static const int MAX_DEAD = 1;     // largest dead x rows
    static const int MAX_WORDS = 1;    // largest DDR region
    static const int DEPTH = 1;        // pipeline depth of the block loop (vaqf/units/gemm.py gemm_depth)
    static const int LOAD_DEPTH = 1;   // of the first block's load
    static const int DEAD_DEPTH = 1;   // of the dead-row loop
    static const int INDEX_BITS = 16;  // a column-table lane: a word index within the input row
    static const bool OFFSET = false;  // some layer's requantization adds a sub-step offset (constant bits
                                       // 70..95); false: the requantizers have no offset adder
};

// The compute process: every block's load (into the idle ping-pong half) overlapped with the previous
// block's MAC steps and epilogue, then the dead rows. Counters advance incrementally: no run-time divides.
template <class CFG, int WB, class act_t, class acc_t>
void dense_compute(hls::stream<ap_uint<WB> >& s, int rows, int in_dim, int out_dim, int in_words, int out_words,
                   int steps, int slots, int dead, int scatter, int gather, int zp_out, int out_lo, int out_hi,
                   int rounding, int relu,
                   int requant, const act_t in[][CFG::SIMD], act_t out_act[][CFG::SIMD],
                   acc_t out_acc[][CFG::SIMD]) {
#pragma HLS INLINE off
    const int L = CFG::SIMD;
    const int SW = CFG::SIMD * CFG::WBITS;               // one weight word: one MAC step of one PE
    const int PER = SW < WB ? WB / SW : 1;                // weight words per DDR word
    const int BEATS = SW > WB ? SW / WB : 1;              // DDR words per weight word
    const int CB = WB < 128 ? 128 / WB : 1;               // DDR words per slot's 128 constant bits
    const int CSH = WB < 128 ? 128 - WB : 0;              // where a constant beat enters the shift register
    const int CSW = WB < 128 ? WB : 0;                    // how far the register moves per beat
    const int TW = CFG::SIMD * CFG::INDEX_BITS;           // one column-table word: a word index per lane
    const int TPER = TW < WB ? WB / TW : 1;               // table words per DDR word
    const int TBEATS = TW > WB ? TW / WB : 1;             // DDR words per table word
    typedef ap_int<CFG::ACC_BITS> sum_t;
    typedef ap_uint<SW> wword_t;
    typedef typename dense_operand<CFG::IN_BITS, CFG::IN_SIGNED>::type x_t;
    typedef ap_int<(CFG::ACC_BITS > 32 ? CFG::ACC_BITS : 32)> val_t;

    // ping-pong halves at [cur * MAX_STEPS ...]: the load writes one half while the MACs read the other, one
    // write and one read per PE bank per cycle (a 2-port memory); `cur` is a run-time value, so the
    // dependence analysis is told that the two accesses never meet (HLS-REVIEW H4)
    wword_t wbuf[CFG::PE][2 * CFG::MAX_STEPS];
#pragma HLS ARRAY_PARTITION variable=wbuf complete dim=1
#pragma HLS DEPENDENCE variable=wbuf inter false
    ap_uint<128> cst[2][CFG::PE];  // per slot: folded bias, multiplier, shift, output column
#pragma HLS ARRAY_PARTITION variable=cst complete dim=0
#pragma HLS DEPENDENCE variable=cst inter false
    // block form: per MAC step, lane l's word index within the input row (bank l's own address), ping-pong
    // like the weights: one write and one read per cycle, halves told apart for the dependence analysis
    ap_uint<TW> tbuf[2 * CFG::MAX_STEPS];
#pragma HLS DEPENDENCE variable=tbuf inter false
    sum_t acc[CFG::PE], done[CFG::PE];
#pragma HLS ARRAY_PARTITION variable=acc complete
#pragma HLS ARRAY_PARTITION variable=done complete

    const int blocks = (slots + CFG::PE - 1) / CFG::PE;
    const int epi_drain = (CFG::PE + CFG::EPI - 1) / CFG::EPI;
    const int drain = scatter ? CFG::PE : epi_drain;
    const int span = steps > drain ? steps : drain;
    const int compute_items = (rows + 1) * span;
    const int const_items = CFG::PE * CB;
    const int table_items = gather ? steps * TBEATS : 0;
    const int load_items = const_items + table_items + CFG::PE * steps * BEATS;

    VAQF_CYCLES(VAQF_DDR_LATENCY);  // the reader's first beat; afterwards it keeps ahead of this consumer
    ap_uint<WB> held = 0;
    wword_t part = 0;
    ap_uint<TW> tpart = 0;
    ap_uint<128> cpart = 0;  // a slot's constants arriving in CB beats (words narrower than 128 bits)
    int cur = 0;
block:
    for (int blk = 0; blk <= blocks; blk++) {
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_BLOCKS
        if (blocks == 0) break;
        // blk == 0: the first block's load alone; blk > 0: compute block blk - 1 while loading block blk
        const int nxt = blk & 1;
        cur = nxt ^ 1;
        const int loads = blk < blocks ? load_items : 0;
        const int computes = blk > 0 ? compute_items : 0;
        const int iters = computes > loads ? computes : loads;
        const int o0 = (blk - 1) * CFG::PE;
        int r = 0, t = 0, in_base = 0, out_base = 0;
        int lp = 0, lt = 0, piece = 0, sub = 0;  // a block's weights start on a DDR word
        int cp = 0, cpiece = 0;                  // constant slot and beat being loaded
        int tt = 0, tsub = 0, tpiece = 0;        // table word, and its place in the DDR words
    items:
        for (int it = 0; it < iters; it++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_ITEMS
            if (it < loads) {
                if (it < const_items) {
                    // beats in order, low bits first: after CB beats the register holds the slot's 128 bits
                    ap_uint<WB> beat = s.read();
                    ap_uint<128> c;
                    if (CB == 1) {
                        c = beat;  // a wider word: its low 128 bits are the constants
                    } else {
                        cpart = (ap_uint<128>(beat) << CSH) | (cpart >> CSW);
                        c = cpart;
                    }
                    if (cpiece == CB - 1) {
                        cst[nxt][cp] = c;
                        cp++;
                        cpiece = 0;
                    } else {
                        cpiece++;
                    }
                } else if (it < const_items + table_items) {
                    // the block's column table starts on a DDR word, the weights on the next one
                    ap_uint<TW> tw;
                    bool write = true;
                    if (TW <= WB) {
                        if (tsub == 0) held = s.read();
                        tw = held.range(tsub * TW + TW - 1, tsub * TW);
                        tsub = tsub == TPER - 1 ? 0 : tsub + 1;
                    } else {
                        tpart = (ap_uint<TW>(s.read()) << (TW > WB ? TW - WB : 0)) | (tpart >> WB);
                        tw = tpart;
                        write = tpiece == TBEATS - 1;
                        tpiece = write ? 0 : tpiece + 1;
                    }
                    if (write) {
                        tbuf[nxt * CFG::MAX_STEPS + tt] = tw;
                        tt++;
                    }
                } else {
                    wword_t w;
                    bool write = true;
                    if (SW <= WB) {
                        if (sub == 0) held = s.read();
                        w = held.range(sub * SW + SW - 1, sub * SW);
                        sub = sub == PER - 1 ? 0 : sub + 1;
                    } else {
                        part = (wword_t(s.read()) << (SW > WB ? SW - WB : 0)) | (part >> WB);
                        w = part;
                        write = piece == BEATS - 1;
                        piece = write ? 0 : piece + 1;
                    }
                    if (write) {
                        wbuf[lp][nxt * CFG::MAX_STEPS + lt] = w;
                        if (lt == steps - 1) { lt = 0; lp++; } else { lt++; }
                    }
                }
            }
            if (it < computes) {
                if (r < rows && t < steps) {
                    bool lane_ok[CFG::SIMD];
#pragma HLS ARRAY_PARTITION variable=lane_ok complete
                    int addr[CFG::SIMD];
#pragma HLS ARRAY_PARTITION variable=addr complete
                    const ap_uint<TW> tw = tbuf[cur * CFG::MAX_STEPS + t];
                    for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
                        // padding lanes of the row's last word are no data; gathered: empty slots have
                        // zero weights, so any word of the row serves
                        lane_ok[l] = gather || t * L + l < in_dim;
                        // bank l's own word: step t (whole word), or the column table's entry for lane l
                        addr[l] = in_base + (gather ? (int)tw.range(l * CFG::INDEX_BITS + CFG::INDEX_BITS - 1,
                                                                    l * CFG::INDEX_BITS)
                                                    : t);
                    }
                    for (int p = 0; p < CFG::PE; p++) {
#pragma HLS UNROLL
                        wword_t w = wbuf[p][cur * CFG::MAX_STEPS + t];
                        sum_t partial = 0;
                        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
                            x_t x = in[addr[l]][l];  // lane l from bank l, one read per bank
                            if (lane_ok[l]) {
                                if (CFG::BINARY) {
                                    partial += w[l] ? sum_t(x) : sum_t(-x);
                                } else {
                                    ap_int<CFG::WBITS> wv = w.range(l * CFG::WBITS + CFG::WBITS - 1, l * CFG::WBITS);
                                    partial += sum_t(x * wv);
                                }
                            }
                        }
                        sum_t bias = ap_int<32>(cst[cur][p].range(31, 0));
                        acc[p] = (t == 0 ? bias : acc[p]) + partial;
                    }
                }
                if (r > 0 && t < drain) {
                    // EPI requantizers, requantizer e on slot t*EPI + e (scatter: requantizer 0 on slot t)
                    val_t val[CFG::EPI];
                    bool ok[CFG::EPI];
#pragma HLS ARRAY_PARTITION variable=val complete
#pragma HLS ARRAY_PARTITION variable=ok complete
                    int col0 = 0;
                    for (int e = 0; e < CFG::EPI; e++) {
#pragma HLS UNROLL
                        int p = scatter ? t : t * CFG::EPI + e;
                        ap_uint<128> c = cst[cur][p < CFG::PE ? p : 0];
                        int col = scatter ? (int)ap_int<32>(c.range(127, 96)) : o0 + p;
                        if (e == 0) col0 = col;
                        // scatter: an idle slot's column is -1 (block chunks end in idle slots mid-layer)
                        ok[e] = p < CFG::PE && o0 + p < slots && (scatter ? e == 0 && col >= 0 : true);
                        sum_t a = done[p < CFG::PE ? p : 0];
                        if (relu && a < 0) a = 0;
                        val[e] = a;
                        if (requant)
                            val[e] = requant_narrow<CFG::ACC_BITS>(a, ap_int<25>(c.range(63, 32)),
                                                                   ap_uint<6>(c.range(69, 64)), zp_out, out_lo, out_hi,
                                                                   rounding,
                                                  CFG::OFFSET ? ap_int<26>(c.range(95, 70)) : ap_int<26>(0));
                    }
                    // one store per bank: bank b takes requantizer b % EPI (scatter: requantizer 0) when the
                    // run-time lane of its first output matches: a constant data source, a run-time enable
                    const int word = out_base + col0 / L;
                    const int lane0 = col0 % L;
                    for (int b = 0; b < L; b++) {
#pragma HLS UNROLL
                        const int e = scatter ? 0 : b % CFG::EPI;
                        const bool hit = scatter ? lane0 == b : lane0 == b - b % CFG::EPI;
                        if (hit && ok[e]) {
                            if (requant) out_act[word][b] = val[e];
                            else out_acc[word][b] = val[e];
                        }
                    }
                }
                if (t == span - 1) {
                    for (int p = 0; p < CFG::PE; p++) {
#pragma HLS UNROLL
                        done[p] = acc[p];
                    }
                    t = 0;
                    if (r > 0) out_base += out_words;
                    r++;
                    in_base += in_words;
                } else {
                    t++;
                }
            }
        }
        VAQF_LOOP(iters, 1, blk == 0 ? CFG::LOAD_DEPTH : CFG::DEPTH);
    }

    // rows whose weights are all zero (pruned channels): the epilogue of the bias alone, one element per
    // cycle at its run-time (word, lane) from the row table. Per pruned row, phases 0 .. CB - 1 read its
    // constant's beats, phases CB - 1 .. CB + rows - 2 write its rows: rows + CB - 1 cycles
    const int phases = rows + CB - 1;
    ap_uint<128> c = 0;
    int r = 0, base = 0;
dead_rows:
    for (int i = 0; i < dead * phases; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_DEAD
        if (r < CB) {
            ap_uint<WB> beat = s.read();
            if (CB == 1) c = beat;
            else c = (ap_uint<128>(beat) << CSH) | (c >> CSW);
        }
        if (r >= CB - 1) {  // the constant is whole: row r - (CB - 1) of this pruned output
            sum_t a = ap_int<32>(c.range(31, 0));
            if (relu && a < 0) a = 0;
            int col = (int)ap_int<32>(c.range(127, 96));
            val_t v = a;
            if (requant)
                v = requant_narrow<CFG::ACC_BITS>(a, ap_int<25>(c.range(63, 32)), ap_uint<6>(c.range(69, 64)),
                                                  zp_out, out_lo, out_hi, rounding,
                                                  CFG::OFFSET ? ap_int<26>(c.range(95, 70)) : ap_int<26>(0));
            const int word = base + col / L;
            for (int b = 0; b < L; b++) {
#pragma HLS UNROLL
                if (col % L == b) {
                    if (requant) out_act[word][b] = v;
                    else out_acc[word][b] = v;
                }
            }
        }
        if (r == phases - 1) {
            r = 0;
            base = 0;
        } else {
            if (r >= CB - 1) base += out_words;
            r++;
        }
    }
    VAQF_LOOP(dead * phases, 1, CFG::DEAD_DEPTH);
}

// One dense layer: the reader and the compute process in one DATAFLOW region, descriptor fields by value.
template <class CFG, int WB, class act_t, class acc_t>
void dense(const ap_uint<WB>* ddr, const dense_desc d, const act_t in[][CFG::SIMD], act_t out_act[][CFG::SIMD],
           acc_t out_acc[][CFG::SIMD]) {
#pragma HLS INLINE
#pragma HLS DATAFLOW
    hls::stream<ap_uint<WB> > s;
#pragma HLS STREAM variable=s depth=4
    ddr_read<WB, CFG::MAX_WORDS>(ddr, d.ddr_offset, d.ddr_words, s);
    dense_compute<CFG, WB>(s, d.rows, d.in_dim, d.out_dim, d.in_words, d.out_words, d.steps, d.slots, d.dead,
                           d.scatter, d.n_blocks > 0, d.zp_out, d.out_lo, d.out_hi, d.rounding, d.relu, d.requant, in, out_act, out_acc);
}

}  // namespace vaqf

#endif
