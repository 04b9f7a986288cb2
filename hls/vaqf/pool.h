// vaqf kernel library: max and average pooling, NCHW activations.
#ifndef VAQF_POOL_H
#define VAQF_POOL_H

#include <ap_int.h>
#include "vaqf/conv.h"
#include "vaqf/qarith.h"

namespace vaqf {

struct pool_config {
    static const int LANES = 1;
};

template <class CFG, class in_t, class out_t>
void pool(const window_desc& d, int avg, int mant, int shift, int zp, int lo, int hi, const in_t* in, out_t* out) {
#pragma HLS INLINE off
channels:
    for (int c = 0; c < d.c; c++) {
        for (int y = 0; y < d.ho; y++) {
            for (int x = 0; x < d.wo; x++) {
                wide_t best = lo, sum = 0;
            window:
                for (int k = 0; k < d.kh * d.kw; k++) {
#pragma HLS PIPELINE II=1
                    int i = k / d.kw, j = k % d.kw;
                    int yy = y * d.sh + i - d.pt, xx = x * d.sw + j - d.pl;
                    if (yy >= 0 && yy < d.h && xx >= 0 && xx < d.w) {
                        wide_t v = in[(c * d.h + yy) * d.w + xx];
                        if (v > best) best = v;
                        sum += v - zp;
                    }
                }
                wide_t q = avg ? clamp(rshift_round(sum * wide_t(mant), shift, HALF_EVEN) + zp, lo, hi) : best;
                out[(c * d.ho + y) * d.wo + x] = q;
            }
        }
    }
}

}  // namespace vaqf

#endif
