// vaqf kernel library: the mover, one kernel for every data movement (strided copies for transpose, slice,
// concat, strided_copy and reshape; constants from DDR; im2col windows). docs/hls-parts/mover.md.
//
// Buffers are T buf[WORDS][L] partitioned complete on dim 2 (one bank per lane). Every pipelined loop below
// touches each bank at most once per cycle, at a compile-time bank: whole words at a run-time word index, or
// one element at a run-time lane (load: read the whole word, then an L:1 lane multiplexer; store: the lane
// decoded into per-bank write enables).
#ifndef VAQF_MOVE_H
#define VAQF_MOVE_H

#include <ap_int.h>
#include "vaqf/cycles.h"
#include "vaqf/ddr.h"

namespace vaqf {

const int COPY_DIMS = 8;
const int MOVE_COPY = 0, MOVE_CONST = 1, MOVE_IM2COL = 2;

// One layer's work on the mover (vaqf/units/mover.py MoveDesc, same order). Positions are (word of the
// row start, column within the row); a step adds a word delta and a column delta, carrying one row (rw
// words) when the column passes the row length d: no division in the loop.
struct move_desc {
    int mode;   // MOVE_COPY, MOVE_CONST, MOVE_IM2COL
    int acc;    // copy: between accumulator buffers (else activation buffers)
    int words;  // copy: whole words per trip (else one element)
    int n;      // trips of the main loop (copy: trips; im2col: output elements)
    int tail;   // copy, words: valid lanes of the last word of a run
    int dims[COPY_DIMS];  // copy: the box, outermost first
    int in_w[COPY_DIMS], in_c[COPY_DIMS], out_w[COPY_DIMS], out_c[COPY_DIMS];  // per-axis steps
    int in_w0, in_c0, out_w0, out_c0;  // start positions
    int in_d, in_rw, out_d, out_rw;    // row length (elements) and row words of each side
    int offset;     // const / im2col: first DDR word
    int ddr_words;  // const: DDR words; im2col: words of the channel table
    int parts;      // const: DDR words per on-chip word
    int c, h, w, ho, wo, kh, kw, sh, sw, pt, pl, zp;  // im2col geometry (c: swept channels)
};

struct move_config {
    static const int LOG2_ROT = 0;
};

// one step of a (word, column) position: column delta with one carry into the next row
inline void move_step(int& w, int& c, int dw, int dc, int d, int rw) {
#pragma HLS INLINE
    int nc = c + dc, nw = w + dw;
    if (nc >= d) {
        nc -= d;
        nw += rw;
    }
    w = nw;
    c = nc;
}

// COPY: the box of d.dims, one element or one word per cycle (II=1)
template <class CFG, class T, int L>
void move_copy(const T in[][L], T out[][L], const move_desc& d) {
#pragma HLS INLINE
    int idx[COPY_DIMS], iw[COPY_DIMS], ic[COPY_DIMS], ow[COPY_DIMS], oc[COPY_DIMS];
#pragma HLS ARRAY_PARTITION variable=idx complete
#pragma HLS ARRAY_PARTITION variable=iw complete
#pragma HLS ARRAY_PARTITION variable=ic complete
#pragma HLS ARRAY_PARTITION variable=ow complete
#pragma HLS ARRAY_PARTITION variable=oc complete
    for (int k = 0; k < COPY_DIMS; k++) {
#pragma HLS UNROLL
        idx[k] = 0;
        iw[k] = d.in_w0;
        ic[k] = d.in_c0;
        ow[k] = d.out_w0;
        oc[k] = d.out_c0;
    }
    const int inner = COPY_DIMS - 1;
copy:
    for (int t = 0; t < d.n; t++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_COPY
        // the position of this trip is the innermost axis's (all axes inside the advanced one copy it)
        const int sw = iw[inner] + ic[inner] / L, sl = ic[inner] % L;
        const int dw = ow[inner] + oc[inner] / L, dl = oc[inner] % L;
        T word[L];
#pragma HLS ARRAY_PARTITION variable=word complete
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            word[l] = in[sw][l];  // bank l, one read
        }
        const T v = word[sl];  // L:1 lane multiplexer (element mode)
        const int valid = idx[inner] == d.dims[inner] - 1 ? d.tail : L;
        // word mode: a run of at least L starts at lane 0 on both sides (sl = dl = 0); a shorter run sits at
        // multiples of its length, 2^LOG2_ROT at least, so it is rotated by rot x 2^LOG2_ROT lanes: an
        // (L >> LOG2_ROT):1 multiplexer per bank
        const int rot = ((sl - dl) & (L - 1)) >> CFG::LOG2_ROT;
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            // bank l, one write: the run's lane under the run's lane range, or the element at its decoded lane
            const T r = word[(l + (rot << CFG::LOG2_ROT)) & (L - 1)];
            if (d.words ? (l >= dl && l < dl + valid) : l == dl) out[dw][l] = d.words ? r : v;
        }
        // advance: the innermost axis that does not wrap steps; the axes inside it restart from its position
        int sel = -1;
        for (int k = 0; k < COPY_DIMS; k++) {
#pragma HLS UNROLL
            if (idx[k] + 1 < d.dims[k]) sel = k;
        }
        int aw = 0, ac = 0, bw = 0, bc = 0, s_iw = 0, s_ic = 0, s_ow = 0, s_oc = 0;
        for (int k = 0; k < COPY_DIMS; k++) {
#pragma HLS UNROLL
            if (k == sel) {
                aw = iw[k]; ac = ic[k]; bw = ow[k]; bc = oc[k];
                s_iw = d.in_w[k]; s_ic = d.in_c[k]; s_ow = d.out_w[k]; s_oc = d.out_c[k];
            }
        }
        move_step(aw, ac, s_iw, s_ic, d.in_d, d.in_rw);
        move_step(bw, bc, s_ow, s_oc, d.out_d, d.out_rw);
        for (int k = 0; k < COPY_DIMS; k++) {
#pragma HLS UNROLL
            if (sel >= 0 && k >= sel) {
                idx[k] = k == sel ? idx[k] + 1 : 0;
                iw[k] = aw; ic[k] = ac; ow[k] = bw; oc[k] = bc;
            }
        }
    }
    VAQF_LOOP(d.n, 1, CFG::COPY_DEPTH);
}

// CONST: d.ddr_words consecutive DDR words (one burst), d.parts of them per on-chip word; DDR lane g of part
// p is on-chip lane p*G+g, so bank l takes a compile-time DDR lane under a decoded write enable
template <class CFG, int WB, class T, int L>
void move_const(const ap_uint<WB>* ddr, T out[][L], const move_desc& d) {
#pragma HLS INLINE
    const int G = WB / 32;
    int part = 0, w = 0;
load:
    for (int i = 0; i < d.ddr_words; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_CONST
        const ap_uint<WB> x = ddr[d.offset + i];
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            if (l / G == part) out[w][l] = T(lane32<WB>(x, l % G));
        }
        if (++part == d.parts) {
            part = 0;
            w++;
        }
    }
    VAQF_LOOP(d.ddr_words, 1, VAQF_DDR_LATENCY + CFG::CONST_DEPTH);
}

}  // namespace vaqf

#endif
