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

template <class CFG, int WB, class in_t, class out_t>
void softmax(const ap_uint<WB>* ddr, const softmax_desc& d, const in_t* in, out_t* out) {
#pragma HLS INLINE off
    ap_uint<17> table[CFG::MAX_TABLE];
    ap_uint<17> e[CFG::MAX_ROW];
load_table:
    for (int i = 0; i < d.table_size; i++) {
#pragma HLS PIPELINE II=1
        table[i] = read_lane32<WB>(ddr, d.table_offset, i);
    }
rows:
    for (int r = 0; r < d.rows; r++) {
        const in_t* x = in + r * d.n;
        in_t xmax = x[0];
    find_max:
        for (int i = 1; i < d.n; i++) {
#pragma HLS PIPELINE II=1
            if (x[i] > xmax) xmax = x[i];
        }
        ap_uint<64> total = 0;
    exponentials:
        for (int i = 0; i < d.n; i++) {
#pragma HLS PIPELINE II=1
            wide_t diff = wide_t(xmax) - wide_t(x[i]);
            wide_t idx = rshift_round(diff * wide_t(d.mant), d.shift, HALF_EVEN);
            if (idx > d.table_size - 1) idx = d.table_size - 1;
            e[i] = table[(int)idx];
            total += e[i];
        }
        ap_uint<64> recip = (ap_uint<64>(1) << 32) / total;
        wide_t top = (wide_t(1) << d.out_bits) - 1;
    normalize:
        for (int i = 0; i < d.n; i++) {
#pragma HLS PIPELINE II=1
            wide_t y = rshift_round(wide_t(e[i]) * wide_t(recip), 32 - d.out_bits, HALF_EVEN);
            out[r * d.n + i] = y > top ? top : y;
        }
    }
}

}  // namespace vaqf

#endif
