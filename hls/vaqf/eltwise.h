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

}  // namespace vaqf

#endif
