// vaqf kernel library: elementwise units (relu, standalone requantization).
#ifndef VAQF_ELTWISE_H
#define VAQF_ELTWISE_H

#include <ap_int.h>
#include "vaqf/ddr.h"
#include "vaqf/qarith.h"

namespace vaqf {

struct requant_desc {
    int n;             // elements
    int channels;      // multipliers cycle over the last axis
    int mant_offset;
    int shift_offset;
    int zp_in;
    int zp_out;
    int out_lo;
    int out_hi;
    int rounding;
};

struct eltwise_config {
    static const int LANES = 1;  // elements per cycle
};

template <class CFG, class in_t, class out_t>
void relu(const in_t* in, out_t* out, int n, int zero_point) {
#pragma HLS INLINE off
    for (int i0 = 0; i0 < n; i0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
        for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
            int i = i0 + l;
            if (i < n) {
                in_t v = in[i];
                out[i] = v < zero_point ? in_t(zero_point) : v;
            }
        }
    }
}

template <class CFG, int WB, class in_t, class out_t>
void requant(const ap_uint<WB>* ddr, const requant_desc& d, const in_t* in, out_t* out) {
#pragma HLS INLINE off
    for (int i0 = 0; i0 < d.n; i0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
        for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
            int i = i0 + l;
            if (i < d.n) {
                int c = i % d.channels;
                int m = read_lane32<WB>(ddr, d.mant_offset, c);
                int s = read_lane32<WB>(ddr, d.shift_offset, c);
                wide_t a = wide_t(in[i]) - d.zp_in;
                out[i] = requantize(a, m, s, d.zp_out, d.out_lo, d.out_hi, d.rounding);
            }
        }
    }
}

struct add_desc {
    int n;
    int ma, mb, shift;
    int zp_a, zp_b, zp_out, out_lo, out_hi;
};

// q = saturate(round(((a - zp_a) * ma + (b - zp_b) * mb) / 2^shift) + zp_out)
template <class CFG, class a_t, class b_t, class out_t>
void add(const add_desc& d, const a_t* a, const b_t* b, out_t* out) {
#pragma HLS INLINE off
    for (int i0 = 0; i0 < d.n; i0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
        for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
            int i = i0 + l;
            if (i < d.n) {
                wide_t s = (wide_t(a[i]) - d.zp_a) * wide_t(d.ma) + (wide_t(b[i]) - d.zp_b) * wide_t(d.mb);
                out[i] = clamp(rshift_round(s, d.shift, HALF_EVEN) + d.zp_out, d.out_lo, d.out_hi);
            }
        }
    }
}

struct lut_config {
    static const int LANES = 1;
    static const int MAX_TABLE = 4096;
};

struct lut_desc {
    int n, table_offset, table_size, in_min;
};

// y = table[x - in_min]; the table (already requantized outputs) comes from DDR
template <class CFG, int WB, class in_t, class out_t>
void lut(const ap_uint<WB>* ddr, const lut_desc& d, const in_t* in, out_t* out) {
#pragma HLS INLINE off
    out_t table[CFG::LANES][CFG::MAX_TABLE];  // a copy per lane: LANES lookups per cycle
#pragma HLS ARRAY_PARTITION variable=table complete dim=1
load_table:
    for (int i = 0; i < d.table_size; i++) {
#pragma HLS PIPELINE II=1
        out_t t = read_lane32<WB>(ddr, d.table_offset, i);
        for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
            table[l][i] = t;
        }
    }
lookup:
    for (int i0 = 0; i0 < d.n; i0 += CFG::LANES) {
#pragma HLS PIPELINE II=1
        for (int l = 0; l < CFG::LANES; l++) {
#pragma HLS UNROLL
            int i = i0 + l;
            if (i < d.n) out[i] = table[l][int(in[i]) - d.in_min];
        }
    }
}

}  // namespace vaqf

#endif
