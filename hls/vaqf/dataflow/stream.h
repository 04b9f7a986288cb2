// vaqf dataflow kernels: the sliding-window generator, streaming max pool, width converters and the AXI
// reader/writer. Every stage is one pipelined loop per frame at II = 1 with counters instead of divisions;
// docs/hls.md ("dataflow") says why each reaches it.
#ifndef VAQF_DATAFLOW_STREAM_H
#define VAQF_DATAFLOW_STREAM_H

#include <ap_int.h>
#include <hls_stream.h>
#include "vaqf/dataflow/counters.h"

namespace vaqf {
namespace df {

// Sliding windows of a K x K, stride-1 convolution over an H x W image of C channels arriving pixel by pixel
// (SIMD channels a word, CF = C / SIMD words a pixel). A line buffer of K image rows: the loop first reads
// the PRE leading rows, then makes HO passes of T = max(W*CF, WO*K*K*CF) iterations; pass r reads image row
// r - PT + K - 1 (if it exists) into the ring slot of the row no window needs any more, and emits the WO
// windows of output row r in (kernel row, kernel column, channel word) order. A window's bottom-row word is
// read (K-1)*K*CF iterations or more before it is emitted, so one write and one read port per cycle suffice.
template <class C>
void swg(hls::stream<ap_uint<C::SIMD * C::BITS> >& in, hls::stream<ap_uint<C::SIMD * C::BITS> >& out, int frames) {
#pragma HLS INLINE
    typedef ap_uint<C::SIMD * C::BITS> word;
    static word lbuf[C::K * C::W * C::CF];
#pragma HLS DEPENDENCE variable=lbuf inter false
    word pad = 0;
    for (int e = 0; e < C::SIMD; e++) {
#pragma HLS UNROLL
        pad.range(e * C::BITS + C::BITS - 1, e * C::BITS) = ap_uint<C::BITS>(C::ZP);
    }
    const int row_words = C::W * C::CF;
frames_loop:
    for (int f = 0; f < frames; f++) {
#pragma HLS LOOP_TRIPCOUNT max=1
        int pre = 0;           // words read in the lead-in
        int r = 0, j = 0;      // pass (output row) and iteration within it
        int top = (C::K - C::PT % C::K) % C::K;  // ring slot of image row r - PT
        int oc = 0, kh = 0, kw = 0, cf = 0;      // the emitted word: output column, kernel row/column, channel word
    steps:
        for (int i = 0; i < C::TRIPS; i++) {
#pragma HLS PIPELINE II=1
            if (pre < C::PRE * row_words) {
                lbuf[pre] = in.read();  // rows 0 .. PRE-1 sit in slots 0 .. PRE-1
                pre++;
                continue;
            }
            const int rin = r - C::PT + C::K - 1;
            if (j < row_words && rin >= 0 && rin < C::H) {
                int slot = top + C::K - 1;
                if (slot >= C::K) slot -= C::K;
                lbuf[slot * row_words + j] = in.read();
            }
            if (j < C::WO * C::K * C::K * C::CF) {
                const int iy = r - C::PT + kh, ix = oc - C::PL + kw;
                word y = pad;
                if (iy >= 0 && iy < C::H && ix >= 0 && ix < C::W) {
                    int slot = top + kh;
                    if (slot >= C::K) slot -= C::K;
                    y = lbuf[slot * row_words + ix * C::CF + cf];
                }
                out.write(y);
                if (cf == C::CF - 1) {
                    cf = 0;
                    if (kw == C::K - 1) {
                        kw = 0;
                        if (kh == C::K - 1) {
                            kh = 0;
                            oc++;
                        } else {
                            kh++;
                        }
                    } else {
                        kw++;
                    }
                } else {
                    cf++;
                }
            }
            if (j == C::T - 1) {
                j = 0;
                r++;
                oc = 0;
                top = top == C::K - 1 ? 0 : top + 1;
            } else {
                j++;
            }
        }
        VAQF_DF_FRAME(C::STAGE, C::TRIPS);
    }
    if (frames > 0) VAQF_DF_FILL(C::STAGE, C::DEPTH);
}

template <int BITS, bool SIGNED>
inline ap_uint<BITS> lane_max(ap_uint<BITS> a, ap_uint<BITS> b) {
#pragma HLS INLINE
    if (SIGNED) return ap_int<BITS>(a) >= ap_int<BITS>(b) ? a : b;
    return a >= b ? a : b;
}

template <int P, int BITS, bool SIGNED>
inline ap_uint<P * BITS> word_max(const ap_uint<P * BITS>& a, const ap_uint<P * BITS>& b) {
#pragma HLS INLINE
    ap_uint<P * BITS> m;
    for (int e = 0; e < P; e++) {
#pragma HLS UNROLL
        m.range(e * BITS + BITS - 1, e * BITS) = lane_max<BITS, SIGNED>(a.range(e * BITS + BITS - 1, e * BITS),
                                                                         b.range(e * BITS + BITS - 1, e * BITS));
    }
    return m;
}

// Max pooling, window = stride = K, no padding: one input word (P channels) a cycle. The running maxima of an
// output row sit in buf[WO * CF]; a window's K columns meet in the register `hreg` when CF = 1 (consecutive
// words of one window), else in buf itself, whose read-modify-write of one address is CF >= 2 iterations
// apart. Pixels past the last whole window are read and dropped.
template <class C>
void pool(hls::stream<ap_uint<C::P * C::BITS> >& in, hls::stream<ap_uint<C::P * C::BITS> >& out, int frames) {
#pragma HLS INLINE
    typedef ap_uint<C::P * C::BITS> word;
    static word buf[C::WO * C::CF];
    word hreg = 0;
frames_loop:
    for (int f = 0; f < frames; f++) {
#pragma HLS LOOP_TRIPCOUNT max=1
        int h = 0, w = 0, cf = 0, ky = 0, kx = 0, ow = 0;
    steps:
        for (int i = 0; i < C::TRIPS; i++) {
#pragma HLS PIPELINE II=1
            word x = in.read();
            if (h < C::HO * C::K && w < C::WO * C::K) {
                const int a = ow * C::CF + cf;
                if (C::CF == 1) {
                    word m = kx == 0 ? x : word_max<C::P, C::BITS, C::SIGNED>(hreg, x);
                    hreg = m;
                    if (kx == C::K - 1) {
                        word v = ky == 0 ? m : word_max<C::P, C::BITS, C::SIGNED>(buf[a], m);
                        if (ky == C::K - 1) out.write(v);
                        else buf[a] = v;
                    }
                } else {
                    word v = (kx == 0 && ky == 0) ? x : word_max<C::P, C::BITS, C::SIGNED>(buf[a], x);
                    if (kx == C::K - 1 && ky == C::K - 1) out.write(v);
                    else buf[a] = v;
                }
            }
            // counters: channel word, pixel column (and its window column kx, output column ow), row
            if (cf == C::CF - 1) {
                cf = 0;
                if (w == C::W - 1) {
                    w = 0;
                    kx = 0;
                    ow = 0;
                    h++;
                    ky = ky == C::K - 1 ? 0 : ky + 1;
                } else {
                    w++;
                    if (kx == C::K - 1) {
                        kx = 0;
                        ow++;
                    } else {
                        kx++;
                    }
                }
            } else {
                cf++;
            }
        }
        VAQF_DF_FRAME(C::STAGE, C::TRIPS);
    }
    if (frames > 0) VAQF_DF_FILL(C::STAGE, C::DEPTH);
}

// Width converter from A-element to B-element words (one divides the other), ELEMS elements a frame.
template <int A, int B, int BITS, int ELEMS, int STAGE, int DEPTH>
void dwc(hls::stream<ap_uint<A * BITS> >& in, hls::stream<ap_uint<B * BITS> >& out, int frames) {
#pragma HLS INLINE
    const int trips = ELEMS / A > ELEMS / B ? ELEMS / A : ELEMS / B;
frames_loop:
    for (int f = 0; f < frames; f++) {
#pragma HLS LOOP_TRIPCOUNT max=1
        ap_uint<(A > B ? A : B) * BITS> sr = 0;
        int k = 0;
    steps:
        for (int i = 0; i < trips; i++) {
#pragma HLS PIPELINE II=1
            if (B > A) {  // gather B / A input words, the first ending in the low lanes
                sr = sr >> (A * BITS);
                sr.range(B * BITS - 1, (B - A) * BITS) = in.read();
                if (k == B / A - 1) {
                    out.write(ap_uint<B * BITS>(sr));
                    k = 0;
                } else {
                    k++;
                }
            } else {      // split an input word into A / B output words, low lanes first
                if (k == 0) sr = in.read();
                out.write(ap_uint<B * BITS>(sr.range(B * BITS - 1, 0)));
                sr = sr >> (B * BITS);
                k = k == A / B - 1 ? 0 : k + 1;
            }
        }
        VAQF_DF_FRAME(STAGE, trips);
    }
    if (frames > 0) VAQF_DF_FILL(STAGE, DEPTH);
}

// The input reader: frames of stream words from consecutive bus words (one burst sequence over the call).
// A bus word holds PER = BUS / (S * BITS) stream words (low first; a frame starts on a new bus word), or a
// stream word takes BEATS = ceil(S * BITS / BUS) bus words.
template <int BUS, int S, int BITS, int WORDS, int STAGE, int DEPTH, int LATENCY>
void reader(const ap_uint<BUS>* src, hls::stream<ap_uint<S * BITS> >& out, int frames) {
#pragma HLS INLINE
    const int PER = S * BITS <= BUS ? BUS / (S * BITS) : 1;
    const int BEATS = S * BITS <= BUS ? 1 : (S * BITS + BUS - 1) / BUS;
    const int trips = WORDS * BEATS;
    long pos = 0;
frames_loop:
    for (int f = 0; f < frames; f++) {
#pragma HLS LOOP_TRIPCOUNT max=1
        ap_uint<BUS> bus = 0;
        const int L = (S * BITS > BUS ? S * BITS : BUS) + BUS;
        ap_uint<L> acc = 0;
        int k = 0;
    steps:
        for (int i = 0; i < trips; i++) {
#pragma HLS PIPELINE II=1
            if (BEATS == 1) {
                if (k == 0) bus = src[pos++];
                out.write(ap_uint<S * BITS>(bus.range(S * BITS - 1, 0)));
                bus = bus >> (S * BITS);
                k = k == PER - 1 ? 0 : k + 1;
            } else {
                acc = acc >> BUS;
                acc.range(L - 1, L - BUS) = src[pos++];
                if (k == BEATS - 1) {
                    out.write(ap_uint<S * BITS>(acc >> (L - BEATS * BUS)));
                    k = 0;
                } else {
                    k++;
                }
            }
        }
        VAQF_DF_FRAME(STAGE, trips);
    }
    if (frames > 0) VAQF_DF_FILL(STAGE, DEPTH + LATENCY);
}

// The output writer, the reader's mirror: stream words packed into consecutive bus words.
template <int BUS, int S, int BITS, int WORDS, int STAGE, int DEPTH>
void writer(hls::stream<ap_uint<S * BITS> >& in, ap_uint<BUS>* dst, int frames) {
#pragma HLS INLINE
    const int PER = S * BITS <= BUS ? BUS / (S * BITS) : 1;
    const int BEATS = S * BITS <= BUS ? 1 : (S * BITS + BUS - 1) / BUS;
    const int trips = WORDS * BEATS;
    long pos = 0;
frames_loop:
    for (int f = 0; f < frames; f++) {
#pragma HLS LOOP_TRIPCOUNT max=1
        ap_uint<BUS> bus = 0;
        ap_uint<BEATS * BUS> wide = 0;
        int k = 0;
    steps:
        for (int i = 0; i < trips; i++) {
#pragma HLS PIPELINE II=1
            if (BEATS == 1) {
                ap_uint<S * BITS> x = in.read();
                // the newest stream word enters at slot PER - 1 and moves down a slot per word
                bus = (bus >> (S * BITS)) | (ap_uint<BUS>(x) << ((PER - 1) * S * BITS));
                if (k == PER - 1 || i == trips - 1) {
                    // the frame's last bus word may hold fewer stream words: align them to the low lanes
                    dst[pos++] = bus >> ((PER - 1 - k) * S * BITS);
                    bus = 0;
                    k = 0;
                } else {
                    k++;
                }
            } else {
                if (k == 0) wide = ap_uint<BEATS * BUS>(in.read());
                dst[pos++] = ap_uint<BUS>(wide.range(BUS - 1, 0));
                wide = wide >> BUS;
                k = k == BEATS - 1 ? 0 : k + 1;
            }
        }
        VAQF_DF_FRAME(STAGE, trips);
    }
    if (frames > 0) VAQF_DF_FILL(STAGE, DEPTH);
}

}  // namespace df
}  // namespace vaqf

#endif
