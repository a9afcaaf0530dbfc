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
 * The product: at batch 1 each weight byte is used once, so the work is streaming W (0.5 MB
 * for 784-512-256-10, L2-resident) through the multipliers. qgemm_avx2.h's tile kernel
 * widens both operands to int16 for vpmaddwd (16 multiply-adds per multiply uop, plus a
 * widening uop per 16 weights and the A widening pass); here the activations are made signed,
 *     a'[k] = q[k] - 128 in [-128, 127]     (q ^ 0x80),
 *     sum_k (q[k] - zp) w[n, k] = sum_k a'[k] w[n, k] - (zp - 128) colsum[n],
 * and vpmaddubsw (uint8 x int8 pairs summed in int16: 32 multiply-adds per uop) gets the
 * magnitude |a'| in 0..128 as its unsigned operand and the weight, bitwise negated where
 * a' < 0, as its signed one (m = 0xFF where a' < 0, else 0; ~w = -w - 1):
 *     |a'| (w ^ m) = a' w                 (a' >= 0)
 *                  = -a' (-w - 1) = a' w + a'   (a' < 0)
 * so  sum_k |a'[k]| (w[n, k] ^ m[k]) = sum_k a'[k] w[n, k] + C,  C = sum_k min(a'[k], 0),
 * one number per row, subtracted from every column. (vpsignb would give a' w directly but
 * runs on the multiply pipes on Zen 3: 1.5 cycles per 32 weights instead of ~1.15; and it
 * would saturate -(-128).)
 * vpmaddubsw saturates its int16 pair sums; here they cannot leave [-32768, 32767] for any
 * int8 weights (-128 included): where a' >= 0, |a'| <= 127 and w in [-128, 127] give
 * products in [-16256, 16129]; where a' < 0, |a'| <= 128 and w ^ m = ~w in [-128, 127] give
 * [-16384, 16256]; so a pair sums to [-32768, 32512] (tests/test_qgemv.py checks every
 * (a', w) pair of int8 values). vpmaddwd with ones then adds the pairs of a column in
 * int32, exact while 128 * 128 * K < 2^31 (qgemm.pyx refuses K > 65793 anyway), and the
 * epilogue is qgemm.h's own (qg_epi256), so every output is bit for bit what qlinear gives.
 *
 * Cost model (Zen 3): per ymm of weights (8 columns x 4 k) a load and 4 vector uops (vpxor,
 * vpmaddubsw, vpmaddwd, vpaddd; 2 of them on the two multiply pipes): ~1 cycle per 32
 * multiply-adds = 32 bytes of W, about what L2 delivers per cycle; measured ~1.15. The
 * 784-512-256-10 layers (535k multiply-adds with N padded to 16) need >= ~16.7k cycles.
 * Columns run 64 at a time (8 accumulators, 4 sequential 64-byte streams of W); rows one
 * after another (each re-reads W from L2: the chain is meant for a few rows at most).
 *
 * Only the AVX2 path uses this GEMV (the VNNI / AMX paths have an exact u8 x s8 instruction
 * and keep qg_run, which at M = 1 is already one pass over W); every other case runs qg_run,
 * so the chain gives qlinear's bits on every ISA. */
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

#if LA_X86
/* Keeps v in a ymm register here: without it gcc 12 hoisted all eight loads + vpxor of a
 * step ahead of the multiplies and spilled two accumulators to the stack (25 % slower). */
#define QV_IN_REGISTER(v) __asm__("" : "+x"(v))

/* The columns [16 nb0, 16 (nb0 + NV)) of row m: acc[v] (8 columns each) over every 4-k group,
 * then the epilogue. ua / ma: the row's |a'| and sign mask (4-byte groups, zero past K);
 * c = C = sum min(a', 0) (the rows' share the xor adds, see the top). */
static inline __attribute__((target("avx2,fma"), always_inline)) void
qv_tile(const qg_args *p, int64_t m, int64_t nb0, const int NV, const uint8_t *ua,
        const uint8_t *ma, int32_t c, int32_t off, float xs) {
    const int64_t Kp = qg_kp(p->K), G = Kp >> 2, bstep = 16 * Kp;
    const int8_t *bp = p->b + nb0 * bstep;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[8];
#pragma GCC unroll 8
    for (int v = 0; v < 2 * NV; v++) acc[v] = _mm256_setzero_si256();
    for (int64_t g = 0; g < G; g++) {
        /* |a'[4g : 4g + 4]| and its sign mask in every 4-byte lane */
        const __m256i av = _mm256_set1_epi32((int)qg_load4(ua + 4 * g)),
                      mv = _mm256_set1_epi32((int)qg_load4(ma + 4 * g));
#pragma GCC unroll 8
        for (int v = 0; v < 2 * NV; v++) {
            /* NumPy: acc[v] += a'[4g : 4g + 4] @ w[n_v : n_v + 8, 4g : 4g + 4].T + C's
             * share, as |a'| (w ^ m) in int16 pairs (exact: |w| <= 127), then int32 */
            const __m256i w = _mm256_loadu_si256(
                (const __m256i *)(bp + (v >> 1) * bstep + g * 64 + 32 * (v & 1)));
            const __m256i pr = _mm256_maddubs_epi16(av, _mm256_xor_si256(w, mv));
            acc[v] = _mm256_add_epi32(acc[v], _mm256_madd_epi16(pr, ones));
            QV_IN_REGISTER(acc[v]);
        }
    }
    /* spill once with constant indices (keeps acc in registers inside the loop above);
     * NumPy: acc -= C */
    __m256i done[8];
    const __m256i cv = _mm256_set1_epi32(c);
#pragma GCC unroll 8
    for (int v = 0; v < 2 * NV; v++) done[v] = _mm256_sub_epi32(acc[v], cv);
    for (int v = 0; v < 2 * NV; v++) {
        const int64_t n = (nb0 + (v >> 1)) * 16 + 8 * (v & 1);
        if (n < p->N) qg_epi256(p, m, n, done[v], off, xs);
    }
}

/* Row m of p (uint8 activations, p->M rows) over all its columns; ua, ma: Kp bytes each. */
__attribute__((target("avx2,fma"))) static void qv_gemv_avx2(const qg_args *p, int64_t m,
                                                             uint8_t *ua, uint8_t *ma) {
    const int64_t K = p->K, Kp = qg_kp(K), NB = (p->N + 15) >> 4;
    const uint8_t *a = p->a + m * K;
    /* NumPy: s = (q - 128).astype(int8) (q ^ 0x80); ua = |s| as uint8; ma = 0xFF where s < 0;
     * C = s[s < 0].sum(); zero for k >= K */
    const __m256i flip = _mm256_set1_epi8((char)0x80), zero = _mm256_setzero_si256();
    __m256i neg = zero; /* sum of |s| where s < 0, in 4 uint64 lanes */
    int64_t k = 0, c = 0;
    for (; k + 32 <= K; k += 32) {
        const __m256i s = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(a + k)), flip);
        const __m256i u = _mm256_abs_epi8(s), mk = _mm256_cmpgt_epi8(zero, s);
        _mm256_storeu_si256((__m256i *)(ua + k), u);
        _mm256_storeu_si256((__m256i *)(ma + k), mk);
        neg = _mm256_add_epi64(neg, _mm256_sad_epu8(_mm256_and_si256(u, mk), zero));
    }
    for (; k < Kp; k++) {
        const int s = k < K ? (int)a[k] - 128 : 0; /* q - 128 */
        ua[k] = (uint8_t)(s < 0 ? -s : s);
        ma[k] = s < 0 ? 0xFF : 0;
        c += s < 0 ? s : 0;
    }
    int64_t nb4[4];
    memcpy(nb4, &neg, sizeof nb4);
    c -= nb4[0] + nb4[1] + nb4[2] + nb4[3];
    const int32_t off = qg_off(p, m) - 128; /* sum (q - zp) w = sum a' w - (zp - 128) cs */
    const float xs = p->xs[m * p->xs_step];
    int64_t nb = 0;
    for (; nb + 4 <= NB; nb += 4) qv_tile(p, m, nb, 4, ua, ma, (int32_t)c, off, xs);
    switch (NB - nb) {
    case 3: qv_tile(p, m, nb, 3, ua, ma, (int32_t)c, off, xs); break;
    case 2: qv_tile(p, m, nb, 2, ua, ma, (int32_t)c, off, xs); break;
    case 1: qv_tile(p, m, nb, 1, ua, ma, (int32_t)c, off, xs); break;
    default: break;
    }
}
#endif

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
            for (int64_t r = 0; r < m; r++) qv_gemv_avx2(&p, r, ua, ma);
        } else
#endif
            qg_run(&p, 1);
        h = outs[l];
    }
}

#endif /* LEPTON_QGEMV_H */
