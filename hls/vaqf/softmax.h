// vaqf kernel library: integer softmax over rows (see vaqf/ops/softmax.py for the arithmetic).
#ifndef VAQF_SOFTMAX_H
#define VAQF_SOFTMAX_H

#include <ap_int.h>
#include "vaqf/ddr.h"
#include "vaqf/qarith.h"

namespace vaqf {

struct softmax_desc {
    int rows, n;
    int table_offset, table_size;
    int mant, shift, out_bits;
};

struct softmax_config {
    static const int LANES = 1;
    static const int MAX_ROW = 1;
    static const int MAX_TABLE = 1024;
};

// LANES elements per cycle in each of the three passes over a row (max, exponentials + sum, normalize),
// each lane with its own copy of the exponential table; one reciprocal per row. Integer max and sums do
// not depend on the order, so the result is the same for every LANES.
template <class CFG, int WB, class in_t, class out_t>
void softmax(const ap_uint<WB>* ddr, const softmax_desc& d, const in_t* in, out_t* out) {
#pragma HLS INLINE off
    ap_uint<17> table[CFG::LANES][CFG::MAX_TABLE];
#pragma HLS ARRAY_PARTITION variable=table complete dim=1
    ap_uint<17> e[CFG::MAX_ROW];
#pragma HLS ARRAY_PARTITION variable=e cyclic factor=CFG::LANES
load_table:
    for (int i = 0; i < d.table_size; i++) {
#pragma HLS PIPELINE II=1
        ap_uint<17> t = read_lane32<WB>(ddr, d.table_offset, i);
        for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
            table[l][i] = t;
        }
    }
rows:
    for (int r = 0; r < d.rows; r++) {
        const in_t* x = in + r * d.n;
        in_t xmax = x[0];
    find_max:
        for (int i0 = 0; i0 < d.n; i0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
            in_t m = x[i0];
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                if (i0 + l < d.n && x[i0 + l] > m) m = x[i0 + l];
            }
            if (m > xmax) xmax = m;
        }
        ap_uint<64> total = 0;
    exponentials:
        for (int i0 = 0; i0 < d.n; i0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
            ap_uint<64> part = 0;
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                int i = i0 + l;
                if (i < d.n) {
                    wide_t diff = wide_t(xmax) - wide_t(x[i]);
                    wide_t idx = rshift_round(diff * wide_t(d.mant), d.shift, HALF_EVEN);
                    if (idx > d.table_size - 1) idx = d.table_size - 1;
                    e[i] = table[l][(int)idx];
                    part += e[i];
                }
            }
            total += part;
        }
        ap_uint<64> recip = (ap_uint<64>(1) << 32) / total;
        wide_t top = (wide_t(1) << d.out_bits) - 1;
    normalize:
        for (int i0 = 0; i0 < d.n; i0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                int i = i0 + l;
                if (i < d.n) {
                    wide_t y = rshift_round(wide_t(e[i]) * wide_t(recip), 32 - d.out_bits, HALF_EVEN);
                    out[r * d.n + i] = y > top ? top : y;
                }
            }
        }
    }
}

}  // namespace vaqf

#endif
