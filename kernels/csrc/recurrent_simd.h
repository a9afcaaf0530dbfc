/* recurrent_simd.h: float32 gate math on 8 lanes (AVX2 + FMA), for the fused sequence
 * kernel (recurrent_rows.h) and the per-step forward kernels of recurrent.pyx.
 *
 * sigmoid and tanh are those of recurrent.h (x = k ln2 + r, a polynomial for expm1(r), 2^k
 * from bits; sigmoid(z) = {1 or e} / (1 + e), e = exp(-|z|); tanh(z) = sign(z) (-m) / (2 +
 * m), m = expm1(-2|z|)), with FMA and fewer operations (lnn_rr_exp_parts_n: a one-step
 * reduction, a degree-5 polynomial): a few float32 ulps of the exact values, no
 * cancellation near 0 (tests: test_recurrent.py, "accurate").
 * lnn_{lstm,gru,rnn}_fwd_f32_any run the AVX2 step kernel where the CPU has AVX2 and FMA,
 * else the plain loops of recurrent.h (same spec: the NumPy twins in reference.py).
 */
#ifndef LNN_RECURRENT_SIMD_H
#define LNN_RECURRENT_SIMD_H

#include <stddef.h>
#include <string.h>

#include "recurrent.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(LEPTON_NO_SIMD)
#define LNN_RR_AVX2 1
#include <immintrin.h>

#define LNN_RV 8 /* lanes of a vector */

#define LNN_RR_T __attribute__((target("avx2,fma")))
#define LNN_RR_TI __attribute__((target("avx2,fma"), always_inline))
/* the tile loops over rows and gates unrolled: the accumulators then live in registers */
#define LNN_RR_UNROLL _Pragma("GCC unroll 8")

/* exp parts of n vectors at once (n <= 4, known when inlined), in lockstep: each operation
 * for all n before the next, so that n independent chains sit side by side in the
 * instruction stream and the core overlaps them. x in [-87, 0] -> s = 2^k, q = expm1(r),
 * x = k ln2 + r, |r| <= ln2/2, exp(x) = s + s q. With FMA the reduction is one step
 * (r = x - k fl(ln2) rounded once: off by k |ln2 - fl(ln2)| <= 126 x 1.9e-9, under 0.5 ulp
 * for |x| < 20), and expm1(r) = r P(r) with P of degree 5 fitted for least relative error
 * on [-ln2/2, ln2/2] (1.3e-8; 1.6 ulp evaluated in float32): 9 multiplies or FMAs an
 * activation, against 11-12 for recurrent.h's two-step split and degree-7 Taylor series.
 * The gate math of a step is bound by these (the FMA ports), not by latency. */
static inline LNN_RR_TI void lnn_rr_exp_parts_n(const int n, __m256 *x, __m256 *s, __m256 *q)
{
    const __m256 magic = _mm256_set1_ps(12582912.0f); /* 1.5 * 2^23: t's low bits, round(x / ln2) */
    /* 2^k's bits = (t's bits - magic's + 127) << 23, one integer add */
    const __m256i bias = _mm256_set1_epi32(127 - 0x4B400000);
    __m256 t[4], r[4], p[4];
    LNN_RR_UNROLL
    for (int j = 0; j < n; j++) x[j] = _mm256_max_ps(_mm256_set1_ps(-87.0f), x[j]); /* NaN passes */
    LNN_RR_UNROLL
    for (int j = 0; j < n; j++)
        t[j] = _mm256_fmadd_ps(x[j], _mm256_set1_ps(1.44269504088896341f), magic);
    LNN_RR_UNROLL
    for (int j = 0; j < n; j++)
        r[j] = _mm256_fnmadd_ps(_mm256_sub_ps(t[j], magic), _mm256_set1_ps(0.693147182464599609f),
                                x[j]);
    LNN_RR_UNROLL
    for (int j = 0; j < n; j++)
        p[j] = _mm256_fmadd_ps(_mm256_set1_ps(1.38825097e-3f), r[j], _mm256_set1_ps(8.36658012e-3f));
    LNN_RR_UNROLL
    for (int j = 0; j < n; j++) p[j] = _mm256_fmadd_ps(p[j], r[j], _mm256_set1_ps(4.16672006e-2f));
    LNN_RR_UNROLL
    for (int j = 0; j < n; j++) p[j] = _mm256_fmadd_ps(p[j], r[j], _mm256_set1_ps(1.66665435e-1f));
    LNN_RR_UNROLL
    for (int j = 0; j < n; j++) p[j] = _mm256_fmadd_ps(p[j], r[j], _mm256_set1_ps(4.99999970e-1f));
    LNN_RR_UNROLL
    for (int j = 0; j < n; j++) p[j] = _mm256_fmadd_ps(p[j], r[j], _mm256_set1_ps(1.0f));
    LNN_RR_UNROLL
    for (int j = 0; j < n; j++) {
        q[j] = _mm256_mul_ps(p[j], r[j]);
        const __m256i e = _mm256_add_epi32(_mm256_castps_si256(t[j]), bias);
        s[j] = _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
    }
}

/* z[j] <- sigmoid(z[j]), or tanh(z[j]) where bit j of `tanhs` is set, for j < n (n <= 4), in
 * lockstep (lnn_rr_exp_parts_n):
 *   sigmoid(z) = {1 or e} / (1 + e), e = exp(-|z|);  tanh(z) = sign(z) (-m) / (2 + m),
 *   m = expm1(-2|z|). */
static inline LNN_RR_TI void lnn_rr_act_n(const int n, const int tanhs, __m256 *z)
{
    const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    __m256 a[4], s[4], q[4];
    LNN_RR_UNROLL
    for (int j = 0; j < n; j++) /* -|z|, or -2|z| for tanh */
    { /* -2|z| = -|z| + -|z| (exact) on the adders, the FMA ports left to the exp */
        a[j] = _mm256_or_ps(z[j], sign);
        if (tanhs >> j & 1) a[j] = _mm256_add_ps(a[j], a[j]);
    }
    lnn_rr_exp_parts_n(n, a, s, q);
    LNN_RR_UNROLL
    for (int j = 0; j < n; j++) {
        if (tanhs >> j & 1) {
            const __m256 m = _mm256_fmadd_ps(s[j], q[j], _mm256_sub_ps(s[j], one));
            const __m256 den = _mm256_add_ps(_mm256_set1_ps(2.0f), m);
            const __m256 t = _mm256_div_ps(_mm256_xor_ps(m, sign), den);
            z[j] = _mm256_or_ps(t, _mm256_and_ps(z[j], sign));
        } else {
            const __m256 e = _mm256_fmadd_ps(s[j], q[j], s[j]);
            const __m256 num = _mm256_blendv_ps(one, e, z[j]); /* z's sign bit set: e */
            z[j] = _mm256_div_ps(num, _mm256_add_ps(one, e));
        }
    }
}

/* sigmoid(z) (lnn_rr_act_n) */
static inline LNN_RR_TI __m256 lnn_rr_sigmoid(__m256 z)
{
    lnn_rr_act_n(1, 0, &z);
    return z;
}

/* tanh(z) (lnn_rr_act_n) */
static inline LNN_RR_TI __m256 lnn_rr_tanh(__m256 z)
{
    lnn_rr_act_n(1, 1, &z);
    return z;
}

/* the AVX2 kernels run where the CPU has AVX2 and FMA, unless lnn_rr_simd_on is 0 (tests of
 * the plain loops on an AVX2 machine: recurrent.pyx use_simd) */
static int lnn_rr_simd_on = 1;

static int lnn_rr_has_avx2(void)
{
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return known && lnn_rr_simd_on;
}

/* lanes j .. j+7 of a row (the first n < 8 only when partial) */
#define LNN_RR_LOAD(p) (partial ? _mm256_maskload_ps((p), lanes) : _mm256_loadu_ps(p))
#define LNN_RR_STORE(p, v)                                                                       \
    do {                                                                                         \
        if (partial) _mm256_maskstore_ps((p), lanes, (v));                                       \
        else _mm256_storeu_ps((p), (v));                                                         \
    } while (0)

static inline LNN_RR_TI __m256i lnn_rr_lanes(ptrdiff_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* lnn_lstm_fwd_f32 (recurrent.h) on 8 lanes at a time */
static LNN_RR_T void lnn_lstm_fwd_avx2(const float *xz, const float *hz, const float *c_prev,
                                       const float *h_prev, const float *mask, float *gates,
                                       float *c, float *h, ptrdiff_t b, ptrdiff_t u)
{
    for (ptrdiff_t row = 0; row < b; row++) {
        const float *xr = xz + row * 4 * u, *hr = hz + row * 4 * u;
        const float *cp = c_prev + row * u, *hp = h_prev + row * u;
        float *g = gates + row * 4 * u, *cr = c + row * u, *hrow = h + row * u;
        const int keep = mask && !(mask[row] > 0); /* c, h = c_prev, h_prev */
        for (ptrdiff_t j = 0; j < u; j += LNN_RV) {
            const int partial = u - j < LNN_RV;
            const __m256i lanes = lnn_rr_lanes(u - j);
            /* i, f, o = sigmoid(xz + hz), g = tanh(xz + hz), per block */
            const __m256 iv = lnn_rr_sigmoid(_mm256_add_ps(LNN_RR_LOAD(xr + j), LNN_RR_LOAD(hr + j)));
            const __m256 fv = lnn_rr_sigmoid(
                _mm256_add_ps(LNN_RR_LOAD(xr + u + j), LNN_RR_LOAD(hr + u + j)));
            const __m256 gv = lnn_rr_tanh(
                _mm256_add_ps(LNN_RR_LOAD(xr + 2 * u + j), LNN_RR_LOAD(hr + 2 * u + j)));
            const __m256 ov = lnn_rr_sigmoid(
                _mm256_add_ps(LNN_RR_LOAD(xr + 3 * u + j), LNN_RR_LOAD(hr + 3 * u + j)));
            LNN_RR_STORE(g + j, iv);
            LNN_RR_STORE(g + u + j, fv);
            LNN_RR_STORE(g + 2 * u + j, gv);
            LNN_RR_STORE(g + 3 * u + j, ov);
            const __m256 cpv = LNN_RR_LOAD(cp + j);
            __m256 cv = _mm256_fmadd_ps(fv, cpv, _mm256_mul_ps(iv, gv)); /* f c' + i g */
            __m256 hv = _mm256_mul_ps(ov, lnn_rr_tanh(cv));                /* o tanh(c) */
            if (keep) {
                cv = cpv;
                hv = LNN_RR_LOAD(hp + j);
            }
            LNN_RR_STORE(cr + j, cv);
            LNN_RR_STORE(hrow + j, hv);
        }
    }
}

/* lnn_gru_fwd_f32 (recurrent.h) on 8 lanes at a time */
static LNN_RR_T void lnn_gru_fwd_avx2(const float *xz, const float *hz, const float *bhh,
                                      const float *h_prev, const float *mask, float *gates,
                                      float *h, ptrdiff_t b, ptrdiff_t u)
{
    for (ptrdiff_t row = 0; row < b; row++) {
        const float *xr = xz + row * 3 * u, *hr = hz + row * 3 * u, *hp = h_prev + row * u;
        float *g = gates + row * 4 * u, *hrow = h + row * u;
        const int keep = mask && !(mask[row] > 0); /* h = h_prev */
        for (ptrdiff_t j = 0; j < u; j += LNN_RV) {
            const int partial = u - j < LNN_RV;
            const __m256i lanes = lnn_rr_lanes(u - j);
            __m256 a[3]; /* a = hz + bhh */
            for (int k = 0; k < 3; k++) {
                a[k] = LNN_RR_LOAD(hr + k * u + j);
                if (bhh) a[k] = _mm256_add_ps(a[k], LNN_RR_LOAD(bhh + k * u + j));
            }
            /* z, r = sigmoid(xz + a);  n = tanh(xz_n + r a_n) */
            const __m256 zv = lnn_rr_sigmoid(_mm256_add_ps(LNN_RR_LOAD(xr + j), a[0]));
            const __m256 rv = lnn_rr_sigmoid(_mm256_add_ps(LNN_RR_LOAD(xr + u + j), a[1]));
            const __m256 nv = lnn_rr_tanh(_mm256_fmadd_ps(rv, a[2], LNN_RR_LOAD(xr + 2 * u + j)));
            LNN_RR_STORE(g + j, zv);
            LNN_RR_STORE(g + u + j, rv);
            LNN_RR_STORE(g + 2 * u + j, nv);
            LNN_RR_STORE(g + 3 * u + j, a[2]);
            const __m256 hpv = LNN_RR_LOAD(hp + j); /* h = (1 - z) n + z h' = n + z (h' - n) */
            LNN_RR_STORE(hrow + j, keep ? hpv : _mm256_fmadd_ps(zv, _mm256_sub_ps(hpv, nv), nv));
        }
    }
}

/* lnn_rnn_fwd_f32 (recurrent.h) on 8 lanes at a time */
static LNN_RR_T void lnn_rnn_fwd_avx2(const float *xz, const float *hz, const float *h_prev,
                                      const float *mask, float *h, ptrdiff_t b, ptrdiff_t u)
{
    for (ptrdiff_t row = 0; row < b; row++) {
        float *hrow = h + row * u;
        if (mask && !(mask[row] > 0)) { /* h = h_prev */
            memcpy(hrow, h_prev + row * u, (size_t)u * sizeof(float));
            continue;
        }
        for (ptrdiff_t j = 0; j < u; j += LNN_RV) {
            const int partial = u - j < LNN_RV;
            const __m256i lanes = lnn_rr_lanes(u - j);
            const __m256 z = _mm256_add_ps(LNN_RR_LOAD(xz + row * u + j), LNN_RR_LOAD(hz + row * u + j));
            LNN_RR_STORE(hrow + j, lnn_rr_tanh(z)); /* tanh(xz + hz) */
        }
    }
}
#else
#define LNN_RR_AVX2 0
static int lnn_rr_simd_on = 1;
#endif

static void lnn_rr_set_simd(int on) { lnn_rr_simd_on = on; }

static void lnn_lstm_fwd_f32_any(const float *xz, const float *hz, const float *c_prev,
                                 const float *h_prev, const float *mask, float *gates, float *c,
                                 float *h, ptrdiff_t b, ptrdiff_t u)
{
#if LNN_RR_AVX2
    if (lnn_rr_has_avx2()) {
        lnn_lstm_fwd_avx2(xz, hz, c_prev, h_prev, mask, gates, c, h, b, u);
        return;
    }
#endif
    lnn_lstm_fwd_f32(xz, hz, c_prev, h_prev, mask, gates, c, h, b, u);
}

static void lnn_gru_fwd_f32_any(const float *xz, const float *hz, const float *bhh,
                                const float *h_prev, const float *mask, float *gates, float *h,
                                ptrdiff_t b, ptrdiff_t u)
{
#if LNN_RR_AVX2
    if (lnn_rr_has_avx2()) {
        lnn_gru_fwd_avx2(xz, hz, bhh, h_prev, mask, gates, h, b, u);
        return;
    }
#endif
    lnn_gru_fwd_f32(xz, hz, bhh, h_prev, mask, gates, h, b, u);
}

static void lnn_rnn_fwd_f32_any(const float *xz, const float *hz, const float *h_prev,
                                const float *mask, float *h, ptrdiff_t b, ptrdiff_t u)
{
#if LNN_RR_AVX2
    if (lnn_rr_has_avx2()) {
        lnn_rnn_fwd_avx2(xz, hz, h_prev, mask, h, b, u);
        return;
    }
#endif
    lnn_rnn_fwd_f32(xz, hz, h_prev, mask, h, b, u);
}

#endif /* LNN_RECURRENT_SIMD_H */
