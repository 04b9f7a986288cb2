// vaqf kernel library: max and average pooling over 2-D windows of an NCHW tensor.
//
// The tensor is stored as rows of W elements (docs/hls.md: row (c, y) is ceil(W / L) words). Windows read
// arbitrary (row, column) positions, so the unit reads ONE element per cycle at a run-time (word, lane):
// one port on every bank at the same address plus an L:1 read multiplexer (charged in vaqf/units/pool.py),
// and writes one output element per window at a run-time lane (a write-enable decode). The whole sweep
// (channels x output rows x output columns x window) is one flattened pipelined loop at II=1, so the
// pipeline fills once per layer; the running max / sum is a one-cycle recurrence.
#ifndef VAQF_POOL_H
#define VAQF_POOL_H

#include <ap_int.h>
#include "vaqf/cycles.h"
#include "vaqf/qarith.h"

namespace vaqf {

// Addresses are in words; every product of two run-time values is precomputed here so that the loop only
// adds (row_words: words of an input row; out_row_words: of an output row).
struct pool_desc {
    int trips;          // c * ho * wo * kh * kw
    int c, h, w, ho, wo, kh, kw, sh, sw, pt, pl;
    int row_words, out_row_words;
    int sh_rw, plane_words, pt_rw;  // sh * row_words, h * row_words, pt * row_words
    int in_acc, out_acc, avg, mant, shift, zp, lo, hi;
    int rnd;  // average pooling: the rounding mode of the shift (vaqf::Rounding)
};

struct pool_config {
    static const int SUM_BITS = 40;   // signed bits of a window sum (and of an element)
    static const int MAX_TRIPS = 1;
    static const int DEPTH = 6;
};

template <class CFG, int L, class act_t, class acc_t>
void pool(const pool_desc d, const act_t ia[][L], const acc_t ic[][L], act_t oa[][L], acc_t oc[][L]) {
#pragma HLS INLINE
    // window position (i, j), output position (c, y, x), and the input row word of (c, y*sh + i - pt)
    int i = 0, j = 0, x = 0, y = 0;
    int ytop = -d.pt, xleft = -d.pl;             // y*sh - pt, x*sw - pl
    int yy = -d.pt;                              // ytop + i
    int chan = 0;                                // c * h * row_words: the channel's first word
    int topw = -d.pt_rw;                         // (c * h + ytop) * row_words
    int yw = -d.pt_rw;                           // (c * h + yy) * row_words
    int orow = 0;                                // output row word base: (c * ho + y) * out_row_words
    ap_int<CFG::SUM_BITS> best = 0, sum = 0;
sweep:
    for (int t = 0; t < d.trips; t++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=CFG::MAX_TRIPS
        int xx = xleft + j;
        bool inside = yy >= 0 && yy < d.h && xx >= 0 && xx < d.w;
        ap_int<CFG::SUM_BITS> v = d.lo;
        if (inside) {
            int word = yw + xx / L;
            int lane = xx % L;
            v = d.in_acc ? ap_int<CFG::SUM_BITS>(ic[word][lane]) : ap_int<CFG::SUM_BITS>(ia[word][lane]);
        }
        bool first = i == 0 && j == 0;
        ap_int<CFG::SUM_BITS> contrib = inside ? ap_int<CFG::SUM_BITS>(v - d.zp) : ap_int<CFG::SUM_BITS>(0);
        best = first || v > best ? v : best;
        sum = first ? contrib : ap_int<CFG::SUM_BITS>(sum + contrib);
        if (i == d.kh - 1 && j == d.kw - 1) {
            wide_t q = d.avg ? clamp(rshift_round(wide_t(sum) * wide_t(d.mant), d.shift, d.rnd) + d.zp, d.lo, d.hi)
                             : wide_t(best);
            int ow = orow + x / L;
            if (d.out_acc) oc[ow][x % L] = q;
            else oa[ow][x % L] = q;
        }
        // advance (j, i, x, y, c), innermost first
        if (++j == d.kw) {
            j = 0;
            if (++i == d.kh) {
                i = 0;
                if (++x == d.wo) {
                    x = 0;
                    xleft = -d.pl;
                    orow += d.out_row_words;
                    if (++y == d.ho) {
                        y = 0;
                        ytop = -d.pt;
                        chan += d.plane_words;
                        topw = chan - d.pt_rw;
                    } else {
                        ytop += d.sh;
                        topw += d.sh_rw;
                    }
                } else {
                    xleft += d.sw;
                }
                yy = ytop;
                yw = topw;
            } else {
                yy++;
                yw += d.row_words;
            }
        }
    }
    VAQF_LOOP(d.trips, 1, CFG::DEPTH);
}

}  // namespace vaqf

#endif
