// vaqf kernel library: the elementwise unit (relu, requant, add: one datapath, one descriptor) and the
// table unit (lut: GELU and other elementwise functions of a narrow integer).
//
// Activations are T buf[WORDS][L] with L banks (docs/hls.md): every loop here walks whole words, its
// unrolled lane loop touching lane l = bank l, so one access per bank per cycle at II=1. Tensors of the
// same shape are stored in the same words (padded rows), so a word-for-word walk pairs the right elements.
// Padding lanes are computed like data lanes; nothing reads them as data, and every table index is
// truncated so that a padding lane's value can never address outside a table.
#ifndef VAQF_ELTWISE_H
#define VAQF_ELTWISE_H

#include <ap_int.h>
#include "vaqf/cycles.h"
#include "vaqf/ddr.h"
#include "vaqf/qarith.h"

namespace vaqf {

// One layer of the elementwise unit:
//   out = clamp(round(((a - zp_a) * m + (b - zp_b) * mb) / 2^s) + zp_out, lo, hi)
// relu: m = 1, s = 0, mb = 0, lo = its zero point (a clamp from below is max(a, zp));
// requant: m, s per channel (the last axis, = lanes of a row's words) from on-chip tables, mb = 0;
// add: m = ma, s = shift, b read.
struct eltwise_desc {
    int words;        // words of the tensor (rows x row_words)
    int row_words;    // words per row: the channel tables' index wraps here
    int a_acc;        // 1: a is in an accumulator buffer
    int b_used;       // 1: add (b read)
    int b_acc;        // 1: b is in an accumulator buffer
    int out_acc;      // 1: the output goes to an accumulator buffer
    int per_lane;     // 1: m and s from the channel tables (requant)
    int const_offset; // DDR word of the tables (mantissas then shifts, L lanes per table word)
    int fill_words;   // DDR words of both tables
    int zp_a, zp_b, ma, mb, shift, zp_out, lo, hi, rounding;
};

struct eltwise_config {
    static const int A_BITS = 32;        // signed bits of any a or b value
    static const int HAS_B = 1;          // some layer adds (the second product exists)
    static const int HAS_TABLE = 1;      // some layer requantizes per channel
    static const int MAX_ROW_WORDS = 1;  // channel-table words
    static const int MAX_WORDS = 1;      // trip-count bound of the word loop
    static const int MAX_FILL = 1;       // trip-count bound of the table fill
    static const int DEPTH = 8;          // pipeline depth of the word loop (vaqf/units/eltwise.py)
    static const int FILL_DEPTH = 3;     // pipeline depth of the table fill after the DDR latency
};

// The channel tables hold lane l of table word j = channel j*L + l. In DDR they are laid out table word by
// table word, each over Q = ceil(L / P) DDR words of P = WB/32 int32 lanes: DDR word i fills lanes
// (i % Q) * P ... of table word i / Q, so bank l is always written from DDR lane l % P (a compile-time
// wire) under a write enable, one write per bank per cycle.
template <class CFG, int L, int WB, class act_t, class acc_t>
void eltwise(const eltwise_desc d, const ap_uint<WB>* ddr, const act_t ia[][L], const acc_t ic[][L],
             const act_t ib[][L], const acc_t ibc[][L], act_t oa[][L], acc_t oc[][L]) {
#pragma HLS INLINE
    const int P = WB / 32;
    const int Q = (L + P - 1) / P;
    int mant[CFG::MAX_ROW_WORDS][L];
    ap_uint<6> shf[CFG::MAX_ROW_WORDS][L];
#pragma HLS ARRAY_PARTITION variable=mant complete dim=2
#pragma HLS ARRAY_PARTITION variable=shf complete dim=2
    if (CFG::HAS_TABLE && d.per_lane) {
        int j = 0, q = 0;
    fill:
        for (int i = 0; i < d.fill_words; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_FILL
            ap_uint<WB> w = ddr[d.const_offset + i];
            bool second = j >= d.row_words;  // the shifts follow the mantissas
            int jj = second ? j - d.row_words : j;
            for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
                if (l / P == q) {
                    int v = lane32<WB>(w, l % P);
                    if (second) shf[jj][l] = v;
                    else mant[jj][l] = v;
                }
            }
            if (++q == Q) { q = 0; j++; }
        }
        VAQF_LOOP(d.fill_words, 1, VAQF_DDR_LATENCY + CFG::FILL_DEPTH);
    }
    const int PW = CFG::A_BITS + 33 + CFG::HAS_B < 64 ? CFG::A_BITS + 33 + CFG::HAS_B : 64;
    int j = 0;
words:
    for (int w = 0; w < d.words; w++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_WORDS
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            ap_int<CFG::A_BITS> a = d.a_acc ? ap_int<CFG::A_BITS>(ic[w][l]) : ap_int<CFG::A_BITS>(ia[w][l]);
            ap_int<CFG::A_BITS + 1> xa = a - d.zp_a;
            ap_int<32> m = d.per_lane ? ap_int<32>(mant[j][l]) : ap_int<32>(d.ma);
            int s = d.per_lane ? int(shf[j][l]) : d.shift;
            // the products at the width they need: (A+1) x 32 bits is A + 33, their sum one more (PW), at most
            // the 64 bits vaqf.sim.qarith computes in; the rounding shift at PW + 2 (rshift_round_narrow)
            ap_int<PW> p = ap_int<PW>(xa * m);
            if (CFG::HAS_B && d.b_used) {
                ap_int<CFG::A_BITS> b = d.b_acc ? ap_int<CFG::A_BITS>(ibc[w][l]) : ap_int<CFG::A_BITS>(ib[w][l]);
                ap_int<CFG::A_BITS + 1> xb = b - d.zp_b;
                p += ap_int<PW>(xb * ap_int<32>(d.mb));
            }
            wide_t q = clamp(wide_t(rshift_round_narrow<PW>(p, s, d.rounding)) + d.zp_out, d.lo, d.hi);
            if (d.out_acc) oc[w][l] = q;
            else oa[w][l] = q;
        }
        if (++j == d.row_words) j = 0;
    }
    VAQF_LOOP(d.words, 1, CFG::DEPTH);
}

// One layer of the table unit: out = table[a - in_min]. Each lane has its own copy of the table, split
// into P sub-banks (entry t in sub-bank t % P at address t / P), so the fill writes one DDR word (P
// entries) per cycle into every copy with one write per bank, and a lookup reads all P sub-banks of its
// lane's copy at address t / P and selects with a P:1 multiplexer (charged in vaqf/units/lut.py).
struct lut_desc {
    int words, a_acc, table_offset, table_words, in_min;
};

struct lut_config {
    static const int A_BITS = 32;
    static const int T_BITS = 9;       // signed bits of a table entry
    static const int IDX_BITS = 8;     // table index bits: 2^IDX_BITS >= every table
    static const int MAX_WORDS = 1;
    static const int MAX_TABLE_WORDS = 1;
    static const int DEPTH = 4;
    static const int FILL_DEPTH = 3;
};

template <class CFG, int L, int WB, class act_t, class acc_t>
void lut(const lut_desc d, const ap_uint<WB>* ddr, const act_t ia[][L], const acc_t ic[][L], act_t oa[][L]) {
#pragma HLS INLINE
    const int P = WB / 32;
    const int SUB = ((1 << CFG::IDX_BITS) + P - 1) / P;
    ap_int<CFG::T_BITS> table[L][P][SUB];
#pragma HLS ARRAY_PARTITION variable=table complete dim=1
#pragma HLS ARRAY_PARTITION variable=table complete dim=2
fill:
    for (int i = 0; i < d.table_words; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_TABLE_WORDS
        ap_uint<WB> w = ddr[d.table_offset + i];
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            for (int p = 0; p < P; p++) {
#pragma HLS UNROLL
                table[l][p][i] = lane32<WB>(w, p);
            }
        }
    }
    VAQF_LOOP(d.table_words, 1, VAQF_DDR_LATENCY + CFG::FILL_DEPTH);
lookup:
    for (int w = 0; w < d.words; w++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_WORDS
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            ap_int<CFG::A_BITS> a = d.a_acc ? ap_int<CFG::A_BITS>(ic[w][l]) : ap_int<CFG::A_BITS>(ia[w][l]);
            // truncation to IDX_BITS is free and keeps a padding lane's index inside the table
            ap_uint<CFG::IDX_BITS> t = ap_uint<CFG::IDX_BITS>(a - d.in_min);
            int addr = int(t) / P;
            int sub = int(t) % P;
            if (addr >= SUB) addr = SUB - 1;  // only when P does not divide 2^IDX_BITS (pruned otherwise)
            oa[w][l] = table[l][sub][addr];
        }
    }
    VAQF_LOOP(d.words, 1, CFG::DEPTH);
}

}  // namespace vaqf

#endif
