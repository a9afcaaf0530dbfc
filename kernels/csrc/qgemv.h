/* qgemv.h -- int8 Dense layers at a small batch, a whole chain of them in one call.
 *
 * Included by kernels/qgemm.pyx (through qgemv.pxi) after qgemm.h, whose packed weights,
 * activation quantization (qg_quantize_u8), epilogue (qg_epi256) and per-ISA GEMMs (qg_run)
 * it reuses. The spec is ReferenceBackend.qdense_chain_forward: for each layer l,
 *
 *     q, s, zp = quantize_rows(h)              (dynamic, per row; or the static pair)
 *     h = outs[l] = act(((q - zp) @ w_q.T) * (s * w_scale) + bias)      (m, N_l) float32
 *
 * i.e. exactly quantize_rows + qlinear per layer, with no Python in between and the
 * scratch (q, the rows' scale and zero point) allocated once by the caller.
 *
 * The product: on the AVX2 path the signed-activation GEMV of qgemm_avx2.h (qv_gemv_avx2,
 * called here with the chain's scratch, one row after another); on the VNNI / AMX paths
 * qg_run (their tile kernels: an exact u8 x s8 instruction, at M = 1 already one pass over
 * W). Either gives qlinear's bits, on every ISA. */
#ifndef LEPTON_QGEMV_H
#define LEPTON_QGEMV_H

#include "qgemm.h"

/* One layer of a chain: qg_args with the weights, scales, bias and activation set once
 * (N, K, b, ws, cs, bias, act); a, M, xs, zp and outf are set per call. */
typedef struct {
    qg_args g;
    const float *fixed_scale; /* static activations: the calibrated pair (1,), else NULL */
    const int32_t *fixed_zp;
} qv_layer;

/* Bytes of scratch qv_chain needs for m rows of layers whose widest input is kmax:
 * q (m kmax) + ua, ma (2 (kmax + 3)), 4-byte aligned pieces; plus m scales and zero points. */
static inline int64_t qv_scratch_bytes(int64_t m, int64_t kmax) {
    return ((m * kmax + 3) & ~(int64_t)3) + 2 * qg_kp(kmax) + 8 * m;
}

/* The chain: layer l reads h (m, K_l) (x for l = 0, outs[l - 1] after) and writes outs[l]
 * (m, N_l) = qlinear(quantize_rows(h)). scratch: qv_scratch_bytes(m, max K_l), 4-byte
 * aligned. */
static void qv_chain(const float *x, int64_t m, int64_t layers, const qv_layer *ls,
                     float *const *outs, uint8_t *scratch, int64_t kmax) {
    uint8_t *q = scratch;
    uint8_t *ua = q + ((m * kmax + 3) & ~(int64_t)3), *ma = ua + qg_kp(kmax);
    float *scale = (float *)(ma + qg_kp(kmax));
    int32_t *zp = (int32_t *)(scale + m);
    const float *h = x;
    for (int64_t l = 0; l < layers; l++) {
        qg_args p = ls[l].g;
        const int fixed = ls[l].fixed_scale != NULL;
        /* NumPy: q, s, zp = quantize_rows(h)  (the static pair: one for the whole tensor) */
        const float *s = fixed ? ls[l].fixed_scale : scale;
        const int32_t *z = fixed ? ls[l].fixed_zp : zp;
        qg_quantize_u8(h, m, p.K, !fixed, fixed, q, (float *)s, (int32_t *)z);
        p.a = q;
        p.M = m;
        p.a_signed = 0;
        p.xs = s;
        p.xs_step = fixed ? 0 : 1;
        p.zp = z;
        p.zp_step = fixed ? 0 : 1;
        p.outf = outs[l];
        p.outi = NULL;
        /* NumPy: outs[l] = act(((q - zp) @ w_q.T) * (s * w_scale) + bias) */
#if LA_X86
        if (qg_active == QG_AVX2 && p.K > 0) {
            for (int64_t r = 0; r < m; r++) qv_gemv_avx2(&p, r, 0, (p.N + 15) >> 4, ua, ma);
        } else
#endif
            qg_run(&p, 1);
        h = outs[l];
    }
}

#endif /* LEPTON_QGEMV_H */
