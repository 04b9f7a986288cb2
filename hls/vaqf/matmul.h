// vaqf kernel library: activation x activation products (Q.K^T, A.V), batched over heads.
#ifndef VAQF_MATMUL_H
#define VAQF_MATMUL_H

#include <ap_int.h>
#include "vaqf/qarith.h"

namespace vaqf {

struct matmul_desc {
    int batch, m, k, n;
    int zp_a, zp_b;
    int mant, shift, zp_out, out_lo, out_hi, rounding;
    int relu, requant;
    // operand views: element (h, r, k) of A is a[a_base + h*a_sh + r*a_sr + k*a_sk]; likewise B (h, k, c)
    int a_base, a_sh, a_sr, a_sk;
    int b_base, b_sh, b_sr, b_sk;
    // output view: element (h, r, c) of the product is written at o_base + h*o_sh + r*o_sr + c*o_sc
    int o_base, o_sh, o_sr, o_sc;
};

struct matmul_config {
    static const int PE = 1;     // output columns in parallel
    static const int SIMD = 1;   // products per column per cycle
    static const int EPI = 1;    // requantizers draining the PE results in parallel
    static const int ACC_BITS = 32;
};

template <class CFG, class act_t, class acc_t>
void matmul(const matmul_desc& d, const act_t* a, const act_t* b, act_t* out_act, acc_t* out_acc) {
#pragma HLS INLINE off
    typedef ap_int<CFG::ACC_BITS> sum_t;
    typedef ap_int<act_t::width + 1> opd_t;
heads:
    for (int h = 0; h < d.batch; h++) {
        const act_t* ah = a + d.a_base + h * d.a_sh;
        const act_t* bh = b + d.b_base + h * d.b_sh;
    cols:
        for (int n0 = 0; n0 < d.n; n0 += CFG::PE) {
            // software-pipelined rows, as in dense.h: a row costs max(ceil(K/SIMD), ceil(PE/EPI)) cycles
            const int steps = (d.k + CFG::SIMD - 1) / CFG::SIMD;
            const int drain = (CFG::PE + CFG::EPI - 1) / CFG::EPI;
            const int span = steps > drain ? steps : drain;
            sum_t acc[CFG::PE], done[CFG::PE];
#pragma HLS ARRAY_PARTITION variable=acc complete
#pragma HLS ARRAY_PARTITION variable=done complete
        rows:
            for (int r = 0; r <= d.m; r++) {
            steps_loop:
                for (int t = 0; t < span; t++) {
#pragma HLS PIPELINE II=1
                    if (r < d.m && t < steps) {
                        const int k0 = t * CFG::SIMD;
                        for (int p = 0; p < CFG::PE; p++) {
#pragma HLS UNROLL
                            sum_t partial = 0;
                            for (int s = 0; s < CFG::SIMD; s++) {
#pragma HLS UNROLL
                                int kk = k0 + s, c = n0 + p;
                                if (kk < d.k && c < d.n) {
                                    opd_t x = opd_t(ah[r * d.a_sr + kk * d.a_sk]) - d.zp_a;
                                    opd_t y = opd_t(bh[kk * d.b_sr + c * d.b_sk]) - d.zp_b;
                                    partial += sum_t(x * y);
                                }
                            }
                            acc[p] = (t == 0 ? sum_t(0) : acc[p]) + partial;
                        }
                    }
                    if (r > 0 && t < drain) {
                        for (int e = 0; e < CFG::EPI; e++) {
#pragma HLS UNROLL
                            int p = t * CFG::EPI + e;
                            int c = n0 + p;
                            if (p < CFG::PE && c < d.n) {
                                wide_t v = done[p];
                                if (d.relu && v < 0) v = 0;
                                int o = d.o_base + h * d.o_sh + (r - 1) * d.o_sr + c * d.o_sc;
                                if (d.requant) {
                                    out_act[o] = requantize(v, d.mant, d.shift, d.zp_out, d.out_lo, d.out_hi, d.rounding);
                                } else {
                                    out_acc[o] = v;
                                }
                            }
                        }
                    }
                }
                for (int p = 0; p < CFG::PE; p++) {
#pragma HLS UNROLL
                    done[p] = acc[p];
                }
            }
        }
    }
}

}  // namespace vaqf

#endif
