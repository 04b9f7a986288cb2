// vaqf kernel library: integer rounding, saturation and requantization.
// Bit-exact twin of vaqf/sim/qarith.py; mode numbers follow vaqf.sim.qarith.Rounding.
#ifndef VAQF_QARITH_H
#define VAQF_QARITH_H

#include <ap_int.h>

namespace vaqf {

enum Rounding {
    HALF_EVEN = 0, HALF_UP = 1, HALF_DOWN = 2, HALF_CEIL = 3, CEIL = 4, FLOOR = 5, UP = 6, DOWN = 7
};

typedef ap_int<64> wide_t;

// Whether a right shift that floors must add one to round with `mode`, from the facts about the dropped
// bits: the value is negative, the remainder is non-zero, above or exactly half, the floored quotient odd.
// One rule for every rounding shifter of the library (this 64-bit one and the narrow requantizers).
inline bool round_up(bool neg, bool nonzero, bool above, bool tie, bool odd, int mode) {
#pragma HLS INLINE
    switch (mode) {
    case FLOOR: return false;
    case CEIL: return nonzero;
    case DOWN: return nonzero && neg;
    case UP: return nonzero && !neg;
    case HALF_UP: return above || (tie && !neg);
    case HALF_DOWN: return above || (tie && neg);
    case HALF_CEIL: return above || tie;
    default: return above || (tie && odd);  // HALF_EVEN
    }
}

// x / 2^shift rounded with `mode`; 0 <= shift <= 62.
inline wide_t rshift_round(wide_t x, int shift, int mode) {
#pragma HLS INLINE
    if (shift == 0) return x;
    wide_t q = x >> shift;  // arithmetic shift: floor
    ap_uint<64> r = x - (q << shift);
    ap_uint<64> half = ap_uint<64>(1) << (shift - 1);
    return round_up(x < 0, r != 0, r > half, r == half, (q & 1) == 1, mode) ? wide_t(q + 1) : q;
}

// x / 2^shift rounded with `mode` at the width x has (W bits): every shift past W + 1 rounds the same as
// W + 1 (|x| < 2^(W-1): the quotient floors to 0 or -1 and the remainder sits on the same side of half), so the
// shifter spans W + 2 bits, not 64. Bit-exact with rshift_round for 0 <= shift <= 62.
template <int W>
inline ap_int<W + 1> rshift_round_narrow(ap_int<W> x, int shift, int mode) {
#pragma HLS INLINE
    const int s = shift > W + 1 ? W + 1 : shift;
    if (s == 0) return x;
    ap_int<W + 2> one = 1;
    ap_int<W + 2> q = ap_int<W + 2>(x) >> s;
    ap_int<W + 2> r = ap_int<W + 2>(x) - (q << s);  // 0 <= r < 2^s
    ap_int<W + 2> half = one << (s - 1);
    return round_up(x < 0, r != 0, r > half, r == half, q[0] == 1, mode) ? ap_int<W + 1>(q + 1) : ap_int<W + 1>(q);
}

inline wide_t clamp(wide_t x, wide_t lo, wide_t hi) {
#pragma HLS INLINE
    return x < lo ? lo : (x > hi ? hi : x);
}

// saturate(round(acc * mantissa / 2^shift) + zero_point) to [lo, hi]
inline wide_t requantize(wide_t acc, int mantissa, int shift, int zero_point, int lo, int hi, int mode) {
#pragma HLS INLINE
    wide_t prod = acc * wide_t(mantissa);
    return clamp(rshift_round(prod, shift, mode) + zero_point, lo, hi);
}

// saturate(round((acc * mantissa + offset) / 2^shift) + zero_point), at the widths it needs (HLS-REVIEW
// M15): |mantissa| < 2^24 and |offset| < 2^24 (a bias finer than one accumulator step, 0 but for a folded
// BatchNormalization), so the sum has AB + 25 bits; shifts past it give the same result as AB + 26
// (docs/hls.md, GEMM unit), so the barrel shifter and the rounding compare are AB + 27 bits, not 64.
// Bit-exact with vaqf.ir.qarith.requantize.
template <int AB>
inline int requant_narrow(ap_int<AB> acc, ap_int<25> mant, ap_uint<6> shift, int zp, int lo, int hi, int mode,
                          ap_int<26> offset = 0) {
#pragma HLS INLINE
    const int PB = AB + 25;       // acc x mantissa + offset
    const int W = PB + 2;         // room for q << s with s <= PB + 1
    const int V = W + 2 > 34 ? W + 2 : 34;  // plus a 32-bit zero point
    ap_int<W> x = ap_int<PB>(acc * mant + offset);
    int s = shift > PB + 1 ? PB + 1 : (int)shift;
    ap_int<W + 1> r = 0, q = x;
    bool inc = false;
    if (s > 0) {
        ap_int<W + 1> one = 1;
        q = x >> s;
        r = ap_int<W + 1>(x) - (q << s);          // 0 <= r < 2^s
        ap_int<W + 1> half = one << (s - 1);
        inc = round_up(x < 0, r != 0, r > half, r == half, q[0] == 1, mode);
    }
    ap_int<V> v = q + (inc ? 1 : 0) + zp;
    return v < lo ? lo : (v > hi ? hi : (int)v);
}

}  // namespace vaqf

#endif
