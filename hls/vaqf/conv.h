// vaqf kernel library: convolution windows (im2col into the GEMM unit), NCHW activations.
#ifndef VAQF_CONV_H
#define VAQF_CONV_H

#include <ap_int.h>
#include "vaqf/qarith.h"

namespace vaqf {

struct window_desc {
    int c, h, w, ho, wo, kh, kw, sh, sw, pt, pl;
};

// out[(ho*Wo + wo), (c*kh + i)*kw + j] = in[chans[c], ho*sh + i - pt, wo*sw + j - pl], or zp outside the
// image; d.c counts the swept channels, chans lists them (input channels no GEMM column reads are skipped)
template <class CFG, class in_t, class out_t>
void im2col(const window_desc& d, int zp, const int* chans, const in_t* in, out_t* out) {
#pragma HLS INLINE off
    const int cols = d.c * d.kh * d.kw;
    int o = 0;
rows:
    for (int y = 0; y < d.ho; y++) {
        for (int x = 0; x < d.wo; x++) {
        patch:
            for (int k = 0; k < cols; k++) {
#pragma HLS PIPELINE II=1
                int c = k / (d.kh * d.kw), r = k % (d.kh * d.kw), i = r / d.kw, j = r % d.kw;
                int yy = y * d.sh + i - d.pt, xx = x * d.sw + j - d.pl;
                bool inside = yy >= 0 && yy < d.h && xx >= 0 && xx < d.w;
                out[o++] = inside ? out_t(in[(chans[c] * d.h + yy) * d.w + xx]) : out_t(zp);
            }
        }
    }
}

}  // namespace vaqf

#endif
