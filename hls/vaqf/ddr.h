// vaqf kernel library: reading the DDR image (layout documented in vaqf/ops/packing.py).
//
// Every DDR read of a kernel goes through a reader loop over consecutive word addresses that depend on
// nothing it reads (so HLS infers one burst sequence on the bundle), one word per cycle, feeding the
// compute through an hls::stream inside a DATAFLOW region, or filling an on-chip table before the compute
// starts. No kernel reads DDR at a data-dependent address inside a compute pipeline.
#ifndef VAQF_DDR_H
#define VAQF_DDR_H

#include <ap_int.h>
#include <hls_stream.h>
#include "vaqf/cycles.h"

namespace vaqf {

// Lane `l` (0 <= l < WB/32) of a word, as a 32-bit two's-complement value.
template <int WB>
inline int lane32(const ap_uint<WB>& w, int l) {
#pragma HLS INLINE
    ap_int<32> v = w.range(32 * l + 31, 32 * l);
    return (int)v;
}

// Reader stage: `words` consecutive words from word `offset` into `out`, one per cycle (II=1, sequential
// addresses: a burst). MAX_WORDS bounds the trip count for the csynth report.
template <int WB, int MAX_WORDS>
void ddr_read(const ap_uint<WB>* ddr, int offset, int words, hls::stream<ap_uint<WB> >& out) {
#pragma HLS INLINE off
read:
    for (int i = 0; i < words; i++) {
#pragma HLS PIPELINE II=1
#pragma HLS LOOP_TRIPCOUNT max=MAX_WORDS
        out.write(ddr[offset + i]);
    }
}

}  // namespace vaqf

#endif
