// vaqf kernel library: integer softmax over rows (see vaqf/ops/softmax.py for the arithmetic).
#ifndef VAQF_SOFTMAX_H
#define VAQF_SOFTMAX_H

#include <ap_int.h>
#include <hls_stream.h>
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

template <class CFG>
struct softmax_lanes {
    ap_uint<17> v[CFG::LANES];
};

// Stage 1, per row: the maximum, then the exponentials (table lookups, a table copy per lane) and their
// sum; the exponentials go to stage 3, the sum to stage 2. LANES elements per cycle in both passes.
template <class CFG, int WB, class in_t>
void softmax_exp(const ap_uint<WB>* ddr, const softmax_desc& d, const in_t* in,
                 hls::stream<softmax_lanes<CFG> >& es, hls::stream<ap_uint<64> >& totals) {
    ap_uint<17> table[CFG::LANES][CFG::MAX_TABLE];
#pragma HLS ARRAY_PARTITION variable=table complete dim=1
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
            softmax_lanes<CFG> e;
            ap_uint<64> part = 0;
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                e.v[l] = 0;
                int i = i0 + l;
                if (i < d.n) {
                    wide_t diff = wide_t(xmax) - wide_t(x[i]);
                    wide_t idx = rshift_round(diff * wide_t(d.mant), d.shift, HALF_EVEN);
                    if (idx > d.table_size - 1) idx = d.table_size - 1;
                    e.v[l] = table[l][(int)idx];
                    part += e.v[l];
                }
            }
            es.write(e);
            total += part;
        }
        totals.write(total);
    }
}

// Stage 2, per row: the reciprocal of the sum (a sequential divider, one row at a time).
inline void softmax_recip(const softmax_desc& d, hls::stream<ap_uint<64> >& totals,
                          hls::stream<ap_uint<64> >& recips) {
rows:
    for (int r = 0; r < d.rows; r++) {
        ap_uint<64> total = totals.read();
        recips.write((ap_uint<64>(1) << 32) / total);
    }
}

// Stage 3, per row: each exponential times the reciprocal, rounded, LANES per cycle.
template <class CFG, class out_t>
void softmax_norm(const softmax_desc& d, hls::stream<softmax_lanes<CFG> >& es, hls::stream<ap_uint<64> >& recips,
                  out_t* out) {
    const wide_t top = (wide_t(1) << d.out_bits) - 1;
rows:
    for (int r = 0; r < d.rows; r++) {
        ap_uint<64> recip = recips.read();
    normalize:
        for (int i0 = 0; i0 < d.n; i0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
            softmax_lanes<CFG> e = es.read();
            for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
                int i = i0 + l;
                if (i < d.n) {
                    wide_t y = rshift_round(wide_t(e.v[l]) * wide_t(recip), 32 - d.out_bits, HALF_EVEN);
                    out[r * d.n + i] = y > top ? top : y;
                }
            }
        }
    }
}

// Softmax over rows as a three-stage row pipeline (DATAFLOW): while stage 3 normalizes row r and stage 2
// divides for row r + 1, stage 1 already computes row r + 2's exponentials. The exponentials wait in a
// FIFO of two rows. Integer max and sums do not depend on the order: the result is the same for every LANES.
template <class CFG, int WB, class in_t, class out_t>
void softmax(const ap_uint<WB>* ddr, const softmax_desc& d, const in_t* in, out_t* out) {
#pragma HLS INLINE off
#pragma HLS DATAFLOW
    hls::stream<softmax_lanes<CFG> > es("softmax_exponentials");
#pragma HLS STREAM variable=es depth=2*((CFG::MAX_ROW+CFG::LANES-1)/CFG::LANES)
    hls::stream<ap_uint<64> > totals("softmax_totals"), recips("softmax_reciprocals");
#pragma HLS STREAM variable=totals depth=2
#pragma HLS STREAM variable=recips depth=2
    softmax_exp<CFG, WB, in_t>(ddr, d, in, es, totals);
    softmax_recip(d, totals, recips);
    softmax_norm<CFG, out_t>(d, es, recips, out);
}

}  // namespace vaqf

#endif
