// vaqf kernel library: convolution windows (im2col into the GEMM unit), NCHW activations, on the mover.
#ifndef VAQF_CONV_H
#define VAQF_CONV_H

#include <ap_int.h>
#include "vaqf/cycles.h"
#include "vaqf/ddr.h"
#include "vaqf/move.h"

namespace vaqf {

// out[(ho*Wo + wo), (c*kh + i)*kw + j] = in[chans[c], ho*sh + i - pt, wo*sw + j - pl], or zp outside the
// image. The swept channels come as a table of first words (chans[c] * H * rw_in, vaqf/units/mover.py), read
// from DDR by one burst into a table of WB/32 banks before the window loop (no DDR read and no run-time bank
// in the compute pipeline but the one table read per cycle). Input element (c, y, x) is word
// base[c] + y * rw_in + x / L, lane x % L; output element (row, k) is word row * rw_out + k / L, lane k % L.
template <class CFG, int WB, class T, int L>
void im2col(const ap_uint<WB>* ddr, const T in[][L], T out[][L], const move_desc& d) {
#pragma HLS INLINE
    const int G = WB / 32;
    int base[CFG::MAX_CHANS];
#pragma HLS ARRAY_PARTITION variable=base cyclic factor=G
table:
    for (int i = 0; i < d.ddr_words; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_TABLE
        const ap_uint<WB> x = ddr[d.offset + i];
        for (int g = 0; g < G; g++) {
#pragma HLS UNROLL
            if (i * G + g < CFG::MAX_CHANS) base[i * G + g] = lane32<WB>(x, g);  // bank g
        }
    }
    VAQF_LOOP(d.ddr_words, 1, VAQF_DDR_LATENCY + CFG::FILL_DEPTH);
    // counters: tap (i, j), channel c, output position (y, x); xx = x*sw + j - pl, yy = y*sh + i - pt;
    // yw = yy * rw_in kept as a running sum (no multiplier); the output column k and the row's first word
    int i = 0, j = 0, c = 0, x = 0;
    int xx0 = -d.pl, yy0 = -d.pt, yw0 = d.in_c0, iw = 0;  // in_c0 = -pt * rw_in (no multiplier)
    int k = 0, orow = 0;
    const int cols = d.c * d.kh * d.kw;
window:
    for (int t = 0; t < d.n; t++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_WINDOW
        const int xx = xx0 + j, yy = yy0 + i;
        const bool inside = yy >= 0 && yy < d.h && xx >= 0 && xx < d.w;
        T v = T(d.zp);
        if (inside) {
            const int sw = base[c] + yw0 + iw + xx / L;
            T word[L];
#pragma HLS ARRAY_PARTITION variable=word complete
            for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
                word[l] = in[sw][l];  // bank l, one read
            }
            v = word[xx % L];  // L:1 lane multiplexer
        }
        const int dw = orow + k / L, dl = k % L;
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            if (l == dl) out[dw][l] = v;  // decoded write enable
        }
        if (++k == cols) {
            k = 0;
            orow += d.out_rw;
        }
        if (++j == d.kw) {
            j = 0;
            iw += d.in_rw;
            if (++i == d.kh) {
                i = 0;
                iw = 0;
                if (++c == d.c) {
                    c = 0;
                    xx0 += d.sw;
                    if (++x == d.wo) {
                        x = 0;
                        xx0 = -d.pl;
                        yy0 += d.sh;
                        yw0 += d.in_w0;  // in_w0 = sh * rw_in
                    }
                }
            }
        }
    }
    VAQF_LOOP(d.n, 1, CFG::WINDOW_DEPTH);
}

}  // namespace vaqf

#endif
