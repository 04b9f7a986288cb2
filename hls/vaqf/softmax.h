// vaqf kernel library: integer softmax over rows (the arithmetic: vaqf/ops/softmax.py; the loops, their II
// and what the cost model charges for them: docs/hls-parts/softmax-layernorm.md).
//
// Buffers are act_t buf[WORDS][LANES], one bank per lane (vaqf/hw/layout.py): a row of n elements is
// `words` = ceil(n / LANES) consecutive words. Every loop below reads or writes one whole word per cycle,
// lane l always in bank l (a compile-time constant), so no loop ever needs a second port on a bank.
#ifndef VAQF_SOFTMAX_H
#define VAQF_SOFTMAX_H

#include <ap_int.h>
#include <hls_stream.h>
#include "vaqf/cycles.h"
#include "vaqf/ddr.h"

namespace vaqf {

struct softmax_desc {
    int rows, n, words;            // rows, elements per row, words per row
    int table_offset, table_size;  // exponential table: DDR word offset (ROM: first entry there), entries
    int mant, shift, out_bits;     // table index multiplier mant / 2^shift; output bits
};

// Defaults; the generated <unit>_cfg overrides every field (vaqf/units/softmax.py config).
struct softmax_config {
    static const int LANES = 1;
    static const int IN_BITS = 8;      // signed bits of every input element
    static const int MANT_BITS = 24;   // unsigned bits of the index multiplier
    static const int SUM_BITS = 32;    // unsigned bits of a row's sum of exponentials
    static const int MAX_ROWS = 1;
    static const int MAX_WORDS = 1;    // words per row
    static const int MAX_TABLE = 1024;
    static const int DEPTH_FILL = 3;   // pipeline depths, owned by the cost model
    static const int DEPTH_MAX = 3;
    static const int DEPTH_EXP = 10;
    static const int DEPTH_DIV = 2;
    static const int DEPTH_NORM = 7;
};

const int SOFTMAX_EXP_BITS = 17;    // table entries: round(2^16 exp(-i s_t)) <= 2^16
const int SOFTMAX_RECIP_BITS = 17;  // floor(2^32 / sum) <= 2^16, as the sum >= E[0] = 2^16

// x / 2^s rounded half to even, 0 <= s; exact for every W-bit x (s > W gives 0).
template <int W>
ap_uint<W> urshift_half_even(ap_uint<W> x, int s) {
#pragma HLS INLINE
    if (s == 0) return x;
    if (s > W) return 0;
    ap_uint<W + 1> xx = x;
    ap_uint<W + 1> one = 1;
    ap_uint<W + 1> q = xx >> s;
    ap_uint<W + 1> r = xx & ((one << s) - 1);
    ap_uint<W + 1> half = one << (s - 1);
    bool inc = r > half || (r == half && q[0] == 1);
    return ap_uint<W>(q + (inc ? 1 : 0));
}

template <class CFG>
struct softmax_lanes {
    ap_uint<SOFTMAX_EXP_BITS> v[CFG::LANES];
};

// Stage 1, per row: the maximum and the exponentials with their sum, one word per cycle in both passes.
// Padding lanes give exponential 0. The table holds a copy per lane (lane l reads copy l, one read per bank per
// cycle), the layer's entries from `first` on: a filled array (first 0) or the unit's ROM of every layer's table.
template <class CFG, int N, class entry_t, class in_t>
void softmax_rows(int rows, int n, int words, int first, int table_size, int mant, int shift,
                  const entry_t table[][N], in_t in[][CFG::LANES],
                  hls::stream<softmax_lanes<CFG> >& es, hls::stream<ap_uint<CFG::SUM_BITS> >& totals) {
#pragma HLS INLINE
    typedef ap_int<CFG::IN_BITS> x_t;
    typedef ap_uint<CFG::IN_BITS + CFG::MANT_BITS> p_t;
    const ap_uint<CFG::MANT_BITS> m = mant;
    const p_t last = table_size - 1;
    int base = 0;
rows:
    for (int r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_ROWS
        x_t xmax = x_t(in[base][0]);
    find_max:
        for (int w = 0, k0 = 0; w < words; w++, k0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_WORDS
            x_t mx = xmax;
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                x_t v = x_t(in[base + w][l]);
                if (k0 + l < n && v > mx) mx = v;
            }
            xmax = mx;
        }
        ap_uint<CFG::SUM_BITS> total = 0;
    exponentials:
        for (int w = 0, k0 = 0; w < words; w++, k0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_WORDS
            softmax_lanes<CFG> e;
            ap_uint<CFG::SUM_BITS> part = 0;
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                ap_uint<CFG::IN_BITS> diff = ap_int<CFG::IN_BITS + 1>(xmax) - ap_int<CFG::IN_BITS + 1>(x_t(in[base + w][l]));
                p_t idx = urshift_half_even<CFG::IN_BITS + CFG::MANT_BITS>(p_t(diff) * m, shift);
                if (idx > last) idx = last;
                ap_uint<SOFTMAX_EXP_BITS> ev = ap_uint<SOFTMAX_EXP_BITS>(table[l][first + (int)idx]);
                e.v[l] = k0 + l < n ? ev : ap_uint<SOFTMAX_EXP_BITS>(0);
                part += e.v[l];
            }
            es.write(e);
            total += part;
        }
        totals.write(total);
        VAQF_ROW(0, 2 * words + CFG::DEPTH_MAX + CFG::DEPTH_EXP);
        base += words;
    }
}

// Stage 1 with the table from DDR: the fill (one entry per cycle from the reader stage, into every lane's
// copy), the lead "row" of the counters, then the rows.
template <class CFG, int WB, class in_t>
void softmax_exp(int rows, int n, int words, int table_size, int mant, int shift, hls::stream<ap_uint<WB> >& tw,
                 in_t in[][CFG::LANES], hls::stream<softmax_lanes<CFG> >& es,
                 hls::stream<ap_uint<CFG::SUM_BITS> >& totals) {
    const int P = WB / 32;  // table entries per DDR word
    ap_uint<SOFTMAX_EXP_BITS> table[CFG::LANES][CFG::MAX_TABLE];  // a copy per lane: one read per bank per cycle
#pragma HLS ARRAY_PARTITION variable=table complete dim=1
    ap_uint<WB> word = 0;
    int j = 0;
fill:
    for (int i = 0; i < table_size; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_TABLE
        if (j == 0) word = tw.read();
        ap_uint<SOFTMAX_EXP_BITS> t = word(SOFTMAX_EXP_BITS - 1, 0);
        word = word >> 32;  // a constant shift: the next entry is always the low lane
        for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
            table[l][i] = t;
        }
        j = j == P - 1 ? 0 : j + 1;
    }
    VAQF_ROW(0, VAQF_DDR_LATENCY + table_size + CFG::DEPTH_FILL);  // the lead "row": the fill precedes row 0
    softmax_rows<CFG, CFG::MAX_TABLE, ap_uint<SOFTMAX_EXP_BITS>, in_t>(rows, n, words, 0, table_size, mant, shift, table,
                                                                   in, es, totals);
}

// Stage 1 with the table in the unit's ROM (the generated project's constants, every layer's table from its
// `first` entry): nothing to fill, a lead row of 0 cycles. rom_t is ap_uint<17> under synthesis and a plain
// unsigned in the C-simulation (the generated code's choice: g++ would build a constructor per entry).
template <class CFG, int R, class rom_t, class in_t>
void softmax_exp_rom(int rows, int n, int words, int first, int table_size, int mant, int shift,
                     const rom_t rom[][R], in_t in[][CFG::LANES],
                     hls::stream<softmax_lanes<CFG> >& es, hls::stream<ap_uint<CFG::SUM_BITS> >& totals) {
    VAQF_ROW(0, 0);
    softmax_rows<CFG, R, rom_t, in_t>(rows, n, words, first, table_size, mant, shift, rom, in, es, totals);
}

// Stage 2, per row: R = floor(2^32 / sum) by a restoring divider, one quotient bit per cycle. The quotient has
// SOFTMAX_RECIP_BITS bits (sum >= 2^16), so the division starts from 2^32 >> 17 = 2^15 < sum.
template <class CFG>
void softmax_recip(int rows, hls::stream<ap_uint<CFG::SUM_BITS> >& totals,
                   hls::stream<ap_uint<SOFTMAX_RECIP_BITS> >& recips) {
    VAQF_ROW(1, 0);
rows:
    for (int r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_ROWS
        ap_uint<CFG::SUM_BITS> total = totals.read();
        ap_uint<CFG::SUM_BITS + 1> rem = ap_uint<CFG::SUM_BITS + 1>(1) << (32 - SOFTMAX_RECIP_BITS);
        ap_uint<SOFTMAX_RECIP_BITS> q = 0;
    divide:
        for (int i = 0; i < SOFTMAX_RECIP_BITS; i++) {
#pragma HLS PIPELINE II=1
            rem = rem << 1;  // the dividend's remaining bits are all zero
            bool ge = rem >= total;
            if (ge) rem -= total;
            q = (q << 1) | ap_uint<SOFTMAX_RECIP_BITS>(ge ? 1 : 0);
        }
        recips.write(q);
        VAQF_ROW(1, SOFTMAX_RECIP_BITS + CFG::DEPTH_DIV);
    }
}

// Stage 3, per row: y = min(round(e * R / 2^(32 - b)), 2^b - 1), one whole word per cycle (padding lanes 0).
template <class CFG, class out_t>
void softmax_norm(int rows, int words, int out_bits, hls::stream<softmax_lanes<CFG> >& es,
                  hls::stream<ap_uint<SOFTMAX_RECIP_BITS> >& recips, out_t out[][CFG::LANES]) {
    typedef ap_uint<SOFTMAX_EXP_BITS + SOFTMAX_RECIP_BITS> y_t;
    const y_t top = (y_t(1) << out_bits) - 1;
    const int shift = 32 - out_bits;
    VAQF_ROW(2, 0);
    int base = 0;
rows:
    for (int r = 0; r < rows; r++) {
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_ROWS
        const ap_uint<SOFTMAX_RECIP_BITS> recip = recips.read();
    normalize:
        for (int w = 0; w < words; w++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_WORDS
            softmax_lanes<CFG> e = es.read();
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                y_t y = urshift_half_even<SOFTMAX_EXP_BITS + SOFTMAX_RECIP_BITS>(y_t(e.v[l]) * recip, shift);
                out[base + w][l] = out_t(y > top ? top : y);
            }
        }
        VAQF_ROW(2, words + CFG::DEPTH_NORM);
        base += words;
    }
}

// Softmax over rows as a row pipeline (HLS DATAFLOW, canonical: scalars by value, every channel one producer
// and one consumer, the input and output buffers distinct): the DDR reader feeds the table fill; then
// while stage 3 normalizes row r and stage 2 divides for row r + 1, stage 1 computes row r + 2. The
// exponentials wait in a FIFO of two rows. Integer max and sums do not depend on the order: the result is
// the same for every LANES.
template <class CFG, int WB, class in_t, class out_t>
void softmax(const ap_uint<WB>* ddr, int rows, int n, int words, int table_offset, int table_size, int table_words,
             int mant, int shift, int out_bits, in_t in[][CFG::LANES], out_t out[][CFG::LANES]) {
#pragma HLS INLINE off
#pragma HLS DATAFLOW
    hls::stream<ap_uint<WB> > tw("softmax_table_words");
    hls::stream<softmax_lanes<CFG> > es("softmax_exponentials");
#pragma HLS STREAM variable=es depth=2*CFG::MAX_WORDS
    hls::stream<ap_uint<CFG::SUM_BITS> > totals("softmax_totals");
    hls::stream<ap_uint<SOFTMAX_RECIP_BITS> > recips("softmax_reciprocals");
#pragma HLS STREAM variable=totals depth=2
#pragma HLS STREAM variable=recips depth=2
    ddr_read<WB, (CFG::MAX_TABLE + WB / 32 - 1) / (WB / 32)>(ddr, table_offset, table_words, tw);
    softmax_exp<CFG, WB, in_t>(rows, n, words, table_size, mant, shift, tw, in, es, totals);
    softmax_recip<CFG>(rows, totals, recips);
    softmax_norm<CFG, out_t>(rows, words, out_bits, es, recips, out);
}

// The same row pipeline with the exponential tables in a ROM of R entries per lane copy (`rom[l]`, one copy
// per lane, partitioned by the caller): the layer's table starts at entry `first`; no DDR read, no fill.
template <class CFG, int R, class rom_t, class in_t, class out_t>
void softmax_rom(const rom_t rom[][R], int rows, int n, int words, int first, int table_size,
                 int mant, int shift, int out_bits, in_t in[][CFG::LANES], out_t out[][CFG::LANES]) {
#pragma HLS INLINE off
#pragma HLS DATAFLOW
    hls::stream<softmax_lanes<CFG> > es("softmax_exponentials");
#pragma HLS STREAM variable=es depth=2*CFG::MAX_WORDS
    hls::stream<ap_uint<CFG::SUM_BITS> > totals("softmax_totals");
    hls::stream<ap_uint<SOFTMAX_RECIP_BITS> > recips("softmax_reciprocals");
#pragma HLS STREAM variable=totals depth=2
#pragma HLS STREAM variable=recips depth=2
    softmax_exp_rom<CFG, R, rom_t, in_t>(rows, n, words, first, table_size, mant, shift, rom, in, es, totals);
    softmax_recip<CFG>(rows, totals, recips);
    softmax_norm<CFG, out_t>(rows, words, out_bits, es, recips, out);
}

}  // namespace vaqf

#endif
