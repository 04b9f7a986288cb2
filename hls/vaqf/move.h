// vaqf kernel library: data movement (transpose, slice, concat, constants from DDR).
#ifndef VAQF_MOVE_H
#define VAQF_MOVE_H

#include <ap_int.h>
#include "vaqf/ddr.h"

namespace vaqf {

const int COPY_DIMS = 8;

// Visit every index o of the box dims (row-major) and copy
// in[in_base + sum(o * in_strides)] to out[out_base + sum(o * out_strides)].
struct copy_desc {
    int dims[COPY_DIMS];
    int in_strides[COPY_DIMS];
    int out_strides[COPY_DIMS];
    int in_base;
    int out_base;
    int n;
};

struct move_config {};

template <class CFG, class in_t, class out_t>
void strided_copy(const in_t* in, out_t* out, const copy_desc& d) {
#pragma HLS INLINE off
    int idx[COPY_DIMS];
#pragma HLS ARRAY_PARTITION variable=idx complete
    for (int k = 0; k < COPY_DIMS; k++) idx[k] = 0;
    int src = d.in_base, dst = d.out_base;
copy:
    for (int i = 0; i < d.n; i++) {
#pragma HLS PIPELINE II=1
        out[dst] = in[src];
        // advance the innermost counter, carrying outward
        bool carry = true;
        for (int k = COPY_DIMS - 1; k >= 0; k--) {
#pragma HLS UNROLL
            if (carry) {
                idx[k]++;
                src += d.in_strides[k];
                dst += d.out_strides[k];
                if (idx[k] == d.dims[k]) {
                    src -= d.in_strides[k] * d.dims[k];
                    dst -= d.out_strides[k] * d.dims[k];
                    idx[k] = 0;
                } else {
                    carry = false;
                }
            }
        }
    }
}

template <class CFG, int WB, class out_t>
void load_const(const ap_uint<WB>* ddr, int offset, int n, out_t* out) {
#pragma HLS INLINE off
    for (int i = 0; i < n; i++) {
#pragma HLS PIPELINE II=1
        out[i] = read_lane32<WB>(ddr, offset, i);
    }
}

}  // namespace vaqf

#endif
