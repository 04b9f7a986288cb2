// vaqf kernel library: activation x activation products (Q.K^T, A.V), batched over heads.
//
// Weight-stationary, like a GEMM (docs/hls-parts/matmul.md). For each head and block of PE output columns:
//   load: the block's PE columns of B (each a k-vector) go into a local buffer bl[KW][PE][L], one bank per
//         (column, lane); one source word (or one element) per cycle;
//   mac:  one flattened pipeline over (row, step) streams the rows of A, one whole word (L lanes) or one
//         element per cycle, PE x L products per word, and drains the previous row's PE results, one word or
//         one element per cycle, while the current row accumulates.
// Every operand and the output are walked with the same affine (word, column) walker: the element at axis
// counters (i, j, k) is lane (c & (L-1)) of word (w + (c >> LOG2L)), where (w, c) starts at (x_w, x_c) and
// steps by a constant (word, column) pair per axis; w is a multiple of the source's row words, c a column of
// the source row. "word" operands have their k-vectors starting at lane 0 and walk whole words.
#ifndef VAQF_MATMUL_H
#define VAQF_MATMUL_H

#include <ap_int.h>
#include "vaqf/cycles.h"
#include "vaqf/qarith.h"

namespace vaqf {

struct matmul_desc {
    int batch, m, k, n, kw;  // heads, rows of A, k, columns of B, words of a k-vector: ceil(k / L)
    int zp_a, zp_b;
    int mant, shift, zp_out, out_lo, out_hi, rounding;
    int relu, requant;
    // A, axes (head, row, k): word mode (1) reads kw whole words per row; element mode (0) one element per k
    int a_word, a_w, a_c, a_hw, a_hc, a_rw, a_rc, a_kw, a_kc;
    // B, axes (head, column, k); b_word 2: the columns are consecutive lanes (one word holds L columns)
    int b_word, b_w, b_c, b_hw, b_hc, b_cw, b_cc, b_kw, b_kc;
    // output, axes (head, row, column): word mode writes ceil(nc / L) whole words per row, else nc elements
    int o_word, o_w, o_c, o_hw, o_hc, o_rw, o_rc, o_cw, o_cc;
};

struct matmul_config {
    static const int PE = 1;        // output columns per block (each with L multipliers)
    static const int L = 1;         // lanes of an activation word (ACT_LANES): products per column per cycle
    static const int LOG2L = 0;
    static const int OPD_BITS = 10;  // operand width after the zero point is subtracted
    static const int ACC_BITS = 32;
    static const int O_WORD = 0;     // whole-word output path present (PE a multiple of L)
    static const int KW_MAX = 1, K_MAX = 1, M_MAX = 1, N_MAX = 1, BATCH_MAX = 1;  // trip-count maxima
    static const int LOAD_DEPTH = 3, MAC_DEPTH = 16;  // pipeline depths, owned by vaqf/units/matmul.py
};

// relu, then requantization (requant_narrow: the ACC_BITS x 25-bit product and its rounding shift at
// ACC_BITS + 27 bits, bit-exact with vaqf::requantize; the mantissa is checked < 2^24 in Python), or the
// accumulator itself
template <class CFG>
inline wide_t matmul_epilogue(wide_t v, const matmul_desc& d) {
#pragma HLS INLINE
    if (d.relu && v < 0) v = 0;
    if (!d.requant) return v;
    return requant_narrow<CFG::ACC_BITS>(ap_int<CFG::ACC_BITS>(v), ap_int<25>(d.mant), ap_uint<6>(d.shift),
                                         d.zp_out, d.out_lo, d.out_hi, d.rounding);
}

template <class CFG, class act_t, class acc_t>
void matmul(const matmul_desc d, const act_t a[][CFG::L], const act_t b[][CFG::L], act_t out_act[][CFG::L],
            acc_t out_acc[][CFG::L]) {
#pragma HLS INLINE
    const int L = CFG::L;
    const int PE = CFG::PE;
    const int MASK = L - 1;
    typedef ap_int<CFG::OPD_BITS> opd_t;
    typedef ap_int<CFG::ACC_BITS> sum_t;
    // B block: bank (p, s) holds lane s of column p's k-words, the zero point already subtracted (at load: L
    // subtractors on the source word, not PE x L in the mac); the mac reads every bank at one address
    opd_t bl[CFG::KW_MAX][PE][L];
#pragma HLS ARRAY_PARTITION variable=bl complete dim=2
#pragma HLS ARRAY_PARTITION variable=bl complete dim=3
    sum_t acc[PE], done[PE];
#pragma HLS ARRAY_PARTITION variable=acc complete
#pragma HLS ARRAY_PARTITION variable=done complete
    act_t areg[L];
#pragma HLS ARRAY_PARTITION variable=areg complete
    int ah_w = d.a_w, ah_c = d.a_c, bh_w = d.b_w, bh_c = d.b_c, oh_w = d.o_w, oh_c = d.o_c;
heads:
    for (int h = 0; h < d.batch; h++) {
#pragma HLS LOOP_TRIPCOUNT max=CFG::BATCH_MAX
        int bb_w = bh_w, bb_c = bh_c, ob_w = oh_w, ob_c = oh_c;
    blocks:
        for (int c0 = 0; c0 < d.n; c0 += PE) {
#pragma HLS LOOP_TRIPCOUNT max=(CFG::N_MAX + CFG::PE - 1) / CFG::PE
            const int nc = d.n - c0 < PE ? d.n - c0 : PE;
            // ---- load the block's columns of B: b_word 1, each column's k-words (one word per cycle);
            // 0, its elements (one per cycle); 2, the block's columns are consecutive in a source row: one
            // word per cycle holds L columns at one k, scattered to lane k % L of L columns ----
            if (d.b_word == 2) {
                const int qn = (nc + L - 1) >> CFG::LOG2L;
                const int ltrips = d.k * qn;
                int kk = 0, q = 0;
                int rw = bb_w, rc = bb_c;  // the block's first column at k = kk
            load_t:
                for (int i = 0; i < ltrips; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::K_MAX * (CFG::PE + CFG::L - 1) / CFG::L
                    const int w = rw + (rc >> CFG::LOG2L) + q;
                    for (int s = 0; s < L; s++) {
#pragma HLS UNROLL
                        const int p = q * L + s;  // < PE: PE is a multiple of L in this mode
                        if (p < PE) bl[kk >> CFG::LOG2L][p][kk & MASK] = opd_t(b[w][s] - d.zp_b);
                    }
                    if (q == qn - 1) {
                        q = 0;
                        kk++;
                        rw += d.b_kw;
                        rc += d.b_kc;
                    } else {
                        q++;
                    }
                }
                VAQF_LOOP(ltrips, 1, CFG::LOAD_DEPTH);
            } else {
                const int bsteps = d.b_word ? d.kw : d.k;
                const int ltrips = nc * bsteps;
                int p = 0, t = 0;
                int cw = bb_w, cc = bb_c, ew = bb_w, ec = bb_c;
            load:
                for (int i = 0; i < ltrips; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::PE * CFG::K_MAX
                    if (d.b_word) {
                        const int w = cw + (cc >> CFG::LOG2L) + t;
                        for (int s = 0; s < L; s++) {
#pragma HLS UNROLL
                            bl[t][p][s] = opd_t(b[w][s] - d.zp_b);  // one source word; p decodes the write enables
                        }
                    } else {
                        bl[t >> CFG::LOG2L][p][t & MASK] = opd_t(b[ew + (ec >> CFG::LOG2L)][ec & MASK] - d.zp_b);  // L:1 mux
                    }
                    if (t == bsteps - 1) {
                        t = 0;
                        p++;
                        cw += d.b_cw;
                        cc += d.b_cc;
                        ew = cw;
                        ec = cc;
                    } else {
                        t++;
                        ew += d.b_kw;
                        ec += d.b_kc;
                    }
                }
                VAQF_LOOP(ltrips, 1, CFG::LOAD_DEPTH);
            }
            // ---- stream the rows of A; drain row r-1 while row r accumulates ----
            const int steps = d.a_word ? d.kw : d.k;
            const int drain = (CFG::O_WORD && d.o_word) ? (nc + L - 1) >> CFG::LOG2L : nc;
            const int span = steps > drain ? steps : drain;
            const int mtrips = (d.m + 1) * span;
            {
                int r = 0, t = 0;
                int aw = ah_w, ac = ah_c, ew = ah_w, ec = ah_c;     // A: row r's start, the element walker
                int orw = ob_w, orc = ob_c, ow = ob_w, oc = ob_c;  // output: row r-1's start, the walker
            mac:
                for (int i = 0; i < mtrips; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=(CFG::M_MAX + 1) * (CFG::K_MAX > CFG::PE ? CFG::K_MAX : CFG::PE)
                    if (r < d.m && t < steps) {
                        bool fire;
                        int j;
                        if (d.a_word) {
                            const int w = aw + (ac >> CFG::LOG2L) + t;
                            for (int s = 0; s < L; s++) {
#pragma HLS UNROLL
                                areg[s] = a[w][s];
                            }
                            fire = true;
                            j = t;
                        } else {
                            areg[t & MASK] = a[ew + (ec >> CFG::LOG2L)][ec & MASK];  // L:1 mux; lane k % L of the register
                            fire = (t & MASK) == MASK || t == d.k - 1;
                            j = t >> CFG::LOG2L;
                        }
                        if (fire) {
                            for (int p = 0; p < PE; p++) {
#pragma HLS UNROLL
                                sum_t partial = 0;
                                for (int s = 0; s < L; s++) {
#pragma HLS UNROLL
                                    // lanes past k hold other columns (or padding): their products are zero
                                    opd_t x = j * L + s < d.k ? opd_t(areg[s] - d.zp_a) : opd_t(0);
                                    opd_t y = bl[j][p][s];
                                    partial += sum_t(x * y);
                                }
                                acc[p] = (j == 0 ? sum_t(0) : acc[p]) + partial;
                            }
                        }
                    }
                    if (r > 0 && t < drain) {
                        if (CFG::O_WORD && d.o_word) {
                            const int w = orw + (orc >> CFG::LOG2L) + t;
                            for (int s = 0; s < L; s++) {
#pragma HLS UNROLL
                                const int p = t * L + s;  // a (PE/L):1 mux per lane
                                wide_t v = p < nc ? matmul_epilogue<CFG>(wide_t(done[p]), d) : wide_t(0);
                                if (d.requant) out_act[w][s] = v;
                                else out_acc[w][s] = v;
                            }
                        } else {
                            wide_t v = matmul_epilogue<CFG>(wide_t(done[t]), d);  // a PE:1 mux
                            const int w = ow + (oc >> CFG::LOG2L);
                            if (d.requant) out_act[w][oc & MASK] = v;
                            else out_acc[w][oc & MASK] = v;
                        }
                    }
                    if (t == span - 1) {
                        for (int p = 0; p < PE; p++) {
#pragma HLS UNROLL
                            done[p] = acc[p];
                        }
                        if (r > 0) {
                            orw += d.o_rw;
                            orc += d.o_rc;
                        }
                        t = 0;
                        r++;
                        aw += d.a_rw;
                        ac += d.a_rc;
                        ew = aw;
                        ec = ac;
                        ow = orw;
                        oc = orc;
                    } else {
                        t++;
                        ew += d.a_kw;
                        ec += d.a_kc;
                        ow += d.o_cw;
                        oc += d.o_cc;
                    }
                }
                VAQF_LOOP(mtrips, 1, CFG::MAC_DEPTH);
            }
            bb_w += PE * d.b_cw;
            bb_c += PE * d.b_cc;
            ob_w += PE * d.o_cw;
            ob_c += PE * d.o_cc;
        }
        ah_w += d.a_hw;
        ah_c += d.a_hc;
        bh_w += d.b_hw;
        bh_c += d.b_hc;
        oh_w += d.o_hw;
        oh_c += d.o_hc;
    }
}

}  // namespace vaqf

#endif
