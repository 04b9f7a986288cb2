// vaqf dataflow kernels: the matrix-vector-activation unit (one per dense or conv layer).
//
// PE output channels x SIMD input elements per cycle. A frame is ROWS vectors of K elements arriving as
// SF = K / SIMD words of SIMD packed elements; each vector is used for NF = N / PE output folds: fold 0 reads
// the words from the stream and keeps them in ibuf, folds 1.. read ibuf. One flattened loop of
// ROWS x NF x SF trips per frame at II = 1 (docs/hls.md "dataflow: MVAU"):
//   - weights: per PE a ROM of NF x SF words of SIMD x W_BITS bits, split into WCHUNKS banks of WCHUNK_BITS <= 64
//     bits (partitioned by the caller on PE and bank): one read per bank per cycle at the counter `addr`;
//   - the PE accumulators are registers (one add carried per cycle);
//   - at the last fold step the epilogue turns each accumulator into the output element: thresholds
//     (out = LO + #{j : acc >= thr[pe][nf][j]}, one bank per (PE, threshold)), a dyadic requantizer
//     (qarith.h, bias, multiplier and shift per channel), or the biased accumulator itself.
#ifndef VAQF_DATAFLOW_MVAU_H
#define VAQF_DATAFLOW_MVAU_H

#include <ap_int.h>
#include <hls_stream.h>
#include "vaqf/qarith.h"
#include "vaqf/dataflow/counters.h"

namespace vaqf {
namespace df {

enum { EPI_THRESHOLDS = 0, EPI_REQUANT = 1, EPI_ACC = 2 };

// element e of a packed word, as a signed integer of BITS + 1 bits (an unsigned element is zero-extended)
template <int BITS, bool SIGNED, int WIDTH>
inline ap_int<BITS + 1> element(const ap_uint<WIDTH>& word, int e) {
#pragma HLS INLINE
    ap_uint<BITS> raw = word.range(e * BITS + BITS - 1, e * BITS);
    if (SIGNED) return ap_int<BITS + 1>(ap_int<BITS>(raw));
    return ap_int<BITS + 1>(raw);
}

// The ROM element types (C::w_t ...) are the exact widths under synthesis and plain integers in the
// C-simulation (the generated params header), so g++ does not build a constructor per weight word.
template <class C>
void mvau(hls::stream<ap_uint<C::SIMD * C::IN_BITS> >& in, hls::stream<ap_uint<C::PE * C::OUT_BITS> >& out,
          const typename C::w_t w[C::PE][C::WDEPTH][C::WCHUNKS], const typename C::thr_t thr[C::PE][C::NF][C::NTHR],
          const typename C::bias_t bias[C::PE][C::NF], const typename C::mant_t mant[C::PE][C::NF],
          const typename C::shift_t shift[C::PE][C::NF], int frames) {
#pragma HLS INLINE
    typedef ap_uint<C::SIMD * C::IN_BITS> in_word;
    typedef ap_uint<C::PE * C::OUT_BITS> out_word;
    in_word ibuf[C::SF];
    ap_int<C::ACC_BITS> acc[C::PE];
#pragma HLS ARRAY_PARTITION variable=acc complete
frames_loop:
    for (int f = 0; f < frames; f++) {
#pragma HLS LOOP_TRIPCOUNT max=1
        int sf = 0, nf = 0, addr = 0;
    steps:
        for (int i = 0; i < C::TRIPS; i++) {
#pragma HLS PIPELINE II=1
            in_word x;
            if (nf == 0) {
                x = in.read();
                ibuf[sf] = x;
            } else {
                x = ibuf[sf];  // written SF iterations earlier (fold 0 of this vector)
            }
            out_word o = 0;
            for (int pe = 0; pe < C::PE; pe++) {
#pragma HLS UNROLL
                ap_uint<C::WCHUNKS * C::WCHUNK_BITS> wv;
                for (int ch = 0; ch < C::WCHUNKS; ch++) {
#pragma HLS UNROLL
                    wv.range(C::WCHUNK_BITS * ch + C::WCHUNK_BITS - 1, C::WCHUNK_BITS * ch) =
                        ap_uint<C::WCHUNK_BITS>(w[pe][addr][ch]);
                }
                ap_int<C::ACC_BITS> dot = 0;
                for (int s = 0; s < C::SIMD; s++) {
#pragma HLS UNROLL
                    ap_int<C::IN_BITS + 1> xe = element<C::IN_BITS, C::IN_SIGNED>(x, s);
                    if (C::BIPOLAR) {
                        dot += wv[s] ? ap_int<C::IN_BITS + 2>(xe) : ap_int<C::IN_BITS + 2>(-xe);
                    } else {
                        ap_int<C::W_BITS> we = wv.range(s * C::W_BITS + C::W_BITS - 1, s * C::W_BITS);
                        dot += ap_int<C::W_BITS + C::IN_BITS + 1>(we * xe);
                    }
                }
                ap_int<C::ACC_BITS> a = (sf == 0 ? ap_int<C::ACC_BITS>(0) : acc[pe]) + dot;
                acc[pe] = a;
                ap_int<C::OUT_BITS> y;
                if (C::EPI == EPI_THRESHOLDS) {
                    ap_uint<8> n = 0;
                    for (int j = 0; j < C::NTHR; j++) {
#pragma HLS UNROLL
                        n += ap_int<C::CMP_BITS>(a) >= ap_int<C::CMP_BITS>(ap_int<C::THR_BITS>(thr[pe][nf][j])) ? 1 : 0;
                    }
                    y = ap_int<C::OUT_BITS>(C::LO + int(n));
                } else {
                    wide_t v = wide_t(a) + wide_t(ap_int<C::BIAS_BITS>(bias[pe][nf]));
                    if (C::RELU && v < 0) v = 0;
                    if (C::EPI == EPI_REQUANT)
                        v = requantize(v, int(ap_int<32>(mant[pe][nf])), int(ap_uint<6>(shift[pe][nf])), C::ZP, C::LO,
                                       C::HI, C::MODE);
                    y = ap_int<C::OUT_BITS>(v);
                }
                o.range(pe * C::OUT_BITS + C::OUT_BITS - 1, pe * C::OUT_BITS) = ap_uint<C::OUT_BITS>(y);
            }
            if (sf == C::SF - 1) out.write(o);
            // counters, not divisions: sf within the vector, nf the output fold, addr the weight word
            addr = addr == C::WDEPTH - 1 ? 0 : addr + 1;
            if (sf == C::SF - 1) {
                sf = 0;
                nf = nf == C::NF - 1 ? 0 : nf + 1;
            } else {
                sf++;
            }
        }
        VAQF_DF_FRAME(C::STAGE, C::TRIPS);
    }
    if (frames > 0) VAQF_DF_FILL(C::STAGE, C::DEPTH);
}

}  // namespace df
}  // namespace vaqf

#endif
