// vaqf kernel library: reading the DDR image (layout documented in vaqf/ops/packing.py).
#ifndef VAQF_DDR_H
#define VAQF_DDR_H

#include <ap_int.h>

namespace vaqf {

// Lane `index` (a 32-bit two's-complement value) of a vector that starts at word `offset`.
template <int WB>
inline int read_lane32(const ap_uint<WB>* ddr, int offset, int index) {
#pragma HLS INLINE
    const int lanes = WB / 32;
    ap_uint<WB> w = ddr[offset + index / lanes];
    int l = index % lanes;
    ap_uint<32> bits = w.range(32 * l + 31, 32 * l);
    ap_int<32> v = bits;
    return (int)v;
}

}  // namespace vaqf

#endif
