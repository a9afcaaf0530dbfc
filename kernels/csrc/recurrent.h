/* recurrent.h: the C loops behind kernels/recurrent.pyx -- the pointwise gate math of one
 * time step of an LSTM, GRU or Elman RNN, after the step's GEMMs (done by NumPy/BLAS).
 *
 *   lnn_lstm_fwd_*  gates = [sig(z_i), sig(z_f), tanh(z_g), sig(z_o)], c = f c' + i g, h = o tanh(c)
 *   lnn_lstm_bwd_*  dz (4 blocks), dc <- dL/dc', dh <- what bypasses the recurrent GEMM
 *   lnn_gru_fwd_*   gates = [z, r, n, a_n], h = (1 - z) n + z h'
 *   lnn_gru_bwd_*   dxz, dhz (3 blocks), dh <- d z
 *   lnn_rnn_fwd_*   h = tanh(xz + hz)
 *   lnn_rnn_bwd_*   dz = d (1 - h^2)
 *
 * The spec of each kernel (and the meaning of mask, gy, dh_rec, dh) is its NumPy twin in
 * lepton_nn/backend/reference.py, section "recurrent cells". Arrays are C-contiguous rows of
 * B samples; mask and gy may be NULL (all ones / no output gradient).
 *
 * Pointers are restrict: no two arrays of one call overlap (the ops allocate each one).
 * Math: float uses a branch-free exp (round to k = x / ln2, a degree-7 polynomial for
 * expm1 of the remainder, 2^k from bits), so gcc vectorizes the gate loops; double (used by
 * gradient checks, not for speed) calls libm. sigmoid(z) = {1 or e} / (1 + e), e = exp(-|z|);
 * tanh(z) = sign(z) (-m) / (2 + m), m = expm1(-2|z|): no cancellation near 0.
 */
#ifndef LNN_RECURRENT_TEMPLATE

#ifndef LNN_RECURRENT_H
#define LNN_RECURRENT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(LEPTON_NO_SIMD) /* a portable-only build (simd_act.h) */
#define LNN_REC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LNN_REC_CLONES
#endif

#if defined(_MSC_VER)
#define LNN_REC_RESTRICT __restrict
#else
#define LNN_REC_RESTRICT __restrict__
#endif

/* x in [-87, 0] split as x = k ln2 + r, |r| <= ln2/2: *s = 2^k, *q = expm1(r), so that
 * exp(x) = s + s q and expm1(x) = (s - 1) + s q (each without cancellation). */
static inline void lnn_rec_exp_parts(float x, float *s, float *q)
{
    x = x < -87.0f ? -87.0f : x;
    const float magic = 12582912.0f; /* 1.5 * 2^23: t's low bits hold round(x / ln2) */
    const float t = x * 1.44269504088896341f + magic;
    const float k = t - magic;
    const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f; /* ln2 = hi + lo, k hi exact */
    /* q = r + r^2/2! + ... + r^7/7!, Horner */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    *q = p * r;
    int32_t tb, mb;
    memcpy(&tb, &t, 4);
    memcpy(&mb, &magic, 4);
    const int32_t sb = (tb - mb + 127) << 23; /* the bits of 2^k */
    memcpy(s, &sb, 4);
}

static inline float lnn_rec_sigmoidf(float z)
{
    float s, q;
    lnn_rec_exp_parts(-fabsf(z), &s, &q);
    const float e = s + s * q; /* exp(-|z|) */
    return (z >= 0.0f ? 1.0f : e) / (1.0f + e);
}

static inline float lnn_rec_tanhf(float z)
{
    float s, q;
    lnn_rec_exp_parts(-2.0f * fabsf(z), &s, &q);
    const float m = (s - 1.0f) + s * q; /* expm1(-2|z|) */
    return copysignf(-m / (2.0f + m), z);
}

static inline double lnn_rec_sigmoid(double z)
{
    const double e = exp(-fabs(z));
    return (z >= 0.0 ? 1.0 : e) / (1.0 + e);
}

#define T float
#define LNN_RNAME(name) name##_f32
#define LNN_SIG lnn_rec_sigmoidf
#define LNN_TANH lnn_rec_tanhf
#define LNN_RECURRENT_TEMPLATE
#include "recurrent.h"
#undef LNN_RECURRENT_TEMPLATE
#undef T
#undef LNN_RNAME
#undef LNN_SIG
#undef LNN_TANH

#define T double
#define LNN_RNAME(name) name##_f64
#define LNN_SIG lnn_rec_sigmoid
#define LNN_TANH tanh
#define LNN_RECURRENT_TEMPLATE
#include "recurrent.h"
#undef LNN_RECURRENT_TEMPLATE
#undef T
#undef LNN_RNAME
#undef LNN_SIG
#undef LNN_TANH

#endif /* LNN_RECURRENT_H */

#else /* LNN_RECURRENT_TEMPLATE: the kernels for one element type T ------------------------ */

/* restrict pointers: read-only (IN) and written (OUT, maybe also read) arrays of one call */
#define LNN_IN const T *LNN_REC_RESTRICT
#define LNN_OUT T *LNN_REC_RESTRICT

/* xz, hz, gates: (b, 4u); c_prev, h_prev, c, h: (b, u) */
static LNN_REC_CLONES void LNN_RNAME(lnn_lstm_fwd)(LNN_IN xz, LNN_IN hz, LNN_IN c_prev,
                                                   LNN_IN h_prev, LNN_IN mask, LNN_OUT gates,
                                                   LNN_OUT c, LNN_OUT h, ptrdiff_t b, ptrdiff_t u)
{
    for (ptrdiff_t row = 0; row < b; row++) {
        LNN_IN xr = xz + row * 4 * u;
        LNN_IN hr = hz + row * 4 * u;
        LNN_IN cp = c_prev + row * u;
        LNN_IN hp = h_prev + row * u;
        LNN_OUT g = gates + row * 4 * u;
        LNN_OUT cr = c + row * u;
        LNN_OUT hrow = h + row * u;
        /* z = xz + hz; i, f = sigmoid(z[:, :2u]); g = tanh(z[:, 2u:3u]); o = sigmoid(z[:, 3u:]) */
        for (ptrdiff_t j = 0; j < 2 * u; j++) g[j] = LNN_SIG(xr[j] + hr[j]);
        for (ptrdiff_t j = 2 * u; j < 3 * u; j++) g[j] = LNN_TANH(xr[j] + hr[j]);
        for (ptrdiff_t j = 3 * u; j < 4 * u; j++) g[j] = LNN_SIG(xr[j] + hr[j]);
        if (mask && !(mask[row] > 0)) { /* c, h = c_prev, h_prev where mask is 0 */
            memcpy(cr, cp, (size_t)u * sizeof(T));
            memcpy(hrow, hp, (size_t)u * sizeof(T));
            continue;
        }
        /* c = f * c_prev + i * g;  h = o * tanh(c) */
        for (ptrdiff_t j = 0; j < u; j++) {
            const T cv = g[u + j] * cp[j] + g[j] * g[2 * u + j];
            cr[j] = cv;
            hrow[j] = g[3 * u + j] * LNN_TANH(cv);
        }
    }
}

/* gy (or NULL), dh_rec, dh, dc, c, c_prev: (b, u); gates, dz: (b, 4u) */
static LNN_REC_CLONES void LNN_RNAME(lnn_lstm_bwd)(LNN_IN gy, LNN_IN dh_rec, LNN_OUT dh,
                                                   LNN_OUT dc, LNN_IN gates, LNN_IN c,
                                                   LNN_IN c_prev, LNN_IN mask, LNN_OUT dz,
                                                   ptrdiff_t b, ptrdiff_t u)
{
    for (ptrdiff_t row = 0; row < b; row++) {
        const T m = mask ? mask[row] : (T)1;
        LNN_IN dr = dh_rec + row * u;
        LNN_IN g = gates + row * 4 * u;
        LNN_IN cr = c + row * u;
        LNN_IN cp = c_prev + row * u;
        LNN_OUT dhr = dh + row * u;
        LNN_OUT dcr = dc + row * u;
        LNN_OUT dzr = dz + row * 4 * u;
        if (!(m > 0)) { /* masked: dz = 0; dh <- d = dh_rec + dh; dc unchanged */
            memset(dzr, 0, (size_t)(4 * u) * sizeof(T));
            for (ptrdiff_t j = 0; j < u; j++) dhr[j] = dr[j] + dhr[j];
            continue;
        }
        if (gy) { /* dh += m gy (outside the main loop, which then vectorizes) */
            LNN_IN gyr = gy + row * u;
            for (ptrdiff_t j = 0; j < u; j++) dhr[j] += m * gyr[j];
        }
        for (ptrdiff_t j = 0; j < u; j++) {
            const T d = dr[j] + dhr[j]; /* d = dh_rec + dh + m gy */
            const T i = g[j], f = g[u + j], gg = g[2 * u + j], o = g[3 * u + j];
            const T tc = LNN_TANH(cr[j]);
            /* dct = dc + d o (1 - tanh(c)^2) */
            const T dct = dcr[j] + d * o * (1 - tc * tc);
            /* dz = [dct g i(1-i), dct c_prev f(1-f), dct i (1-g^2), d tanh(c) o(1-o)] */
            dzr[j] = dct * gg * i * (1 - i);
            dzr[u + j] = dct * cp[j] * f * (1 - f);
            dzr[2 * u + j] = dct * i * (1 - gg * gg);
            dzr[3 * u + j] = d * tc * o * (1 - o);
            dcr[j] = dct * f; /* dc <- dct f */
            dhr[j] = 0;       /* dh <- 0: all of dL/dh_prev goes through the GEMM */
        }
    }
}

/* xz, hz: (b, 3u); bhh: (3u) or NULL; h_prev, h: (b, u); gates: (b, 4u) */
static LNN_REC_CLONES void LNN_RNAME(lnn_gru_fwd)(LNN_IN xz, LNN_IN hz, LNN_IN bhh,
                                                  LNN_IN h_prev, LNN_IN mask, LNN_OUT gates,
                                                  LNN_OUT h, ptrdiff_t b, ptrdiff_t u)
{
    for (ptrdiff_t row = 0; row < b; row++) {
        LNN_IN xr = xz + row * 3 * u;
        LNN_IN hr = hz + row * 3 * u;
        LNN_IN hp = h_prev + row * u;
        LNN_OUT g = gates + row * 4 * u;
        LNN_OUT hrow = h + row * u;
        /* a = hz + bhh (a_n kept in gates[:, 3u:]);  z, r = sigmoid(xz[:, :2u] + a[:, :2u]) */
        if (bhh) {
            for (ptrdiff_t j = 0; j < 2 * u; j++) g[j] = LNN_SIG(xr[j] + (hr[j] + bhh[j]));
            for (ptrdiff_t j = 0; j < u; j++) g[3 * u + j] = hr[2 * u + j] + bhh[2 * u + j];
        } else {
            for (ptrdiff_t j = 0; j < 2 * u; j++) g[j] = LNN_SIG(xr[j] + hr[j]);
            for (ptrdiff_t j = 0; j < u; j++) g[3 * u + j] = hr[2 * u + j];
        }
        /* n = tanh(xz_n + r a_n) */
        for (ptrdiff_t j = 0; j < u; j++)
            g[2 * u + j] = LNN_TANH(xr[2 * u + j] + g[u + j] * g[3 * u + j]);
        if (mask && !(mask[row] > 0)) { /* h = h_prev where mask is 0 */
            memcpy(hrow, hp, (size_t)u * sizeof(T));
            continue;
        }
        /* h = (1 - z) n + z h_prev */
        for (ptrdiff_t j = 0; j < u; j++) hrow[j] = (1 - g[j]) * g[2 * u + j] + g[j] * hp[j];
    }
}

/* gy (or NULL), dh_rec, dh, h_prev: (b, u); gates: (b, 4u); dxz, dhz: (b, 3u) */
static LNN_REC_CLONES void LNN_RNAME(lnn_gru_bwd)(LNN_IN gy, LNN_IN dh_rec, LNN_OUT dh,
                                                  LNN_IN gates, LNN_IN h_prev, LNN_IN mask,
                                                  LNN_OUT dxz, LNN_OUT dhz, ptrdiff_t b,
                                                  ptrdiff_t u)
{
    for (ptrdiff_t row = 0; row < b; row++) {
        const T m = mask ? mask[row] : (T)1;
        LNN_IN dr = dh_rec + row * u;
        LNN_IN g = gates + row * 4 * u;
        LNN_IN hp = h_prev + row * u;
        LNN_OUT dhr = dh + row * u;
        LNN_OUT dx = dxz + row * 3 * u;
        LNN_OUT dhh = dhz + row * 3 * u;
        if (!(m > 0)) { /* masked: dxz = dhz = 0; dh <- dh_rec + dh */
            memset(dx, 0, (size_t)(3 * u) * sizeof(T));
            memset(dhh, 0, (size_t)(3 * u) * sizeof(T));
            for (ptrdiff_t j = 0; j < u; j++) dhr[j] = dr[j] + dhr[j];
            continue;
        }
        if (gy) { /* dh += m gy */
            LNN_IN gyr = gy + row * u;
            for (ptrdiff_t j = 0; j < u; j++) dhr[j] += m * gyr[j];
        }
        for (ptrdiff_t j = 0; j < u; j++) {
            const T d = dr[j] + dhr[j]; /* d = dh_rec + dh + m gy */
            const T z = g[j], r = g[u + j], n = g[2 * u + j], an = g[3 * u + j];
            const T dn = d * (1 - z) * (1 - n * n);       /* dn = d (1 - z) (1 - n^2) */
            const T dzz = d * (hp[j] - n) * z * (1 - z); /* dzz = d (h_prev - n) z (1 - z) */
            const T drr = dn * an * r * (1 - r);          /* dr = dn a_n r (1 - r) */
            dx[j] = dzz;
            dx[u + j] = drr;
            dx[2 * u + j] = dn;
            dhh[j] = dzz;
            dhh[u + j] = drr;
            dhh[2 * u + j] = dn * r;
            dhr[j] = d * z; /* dh <- d z */
        }
    }
}

/* xz, hz, h_prev, h: (b, u) */
static LNN_REC_CLONES void LNN_RNAME(lnn_rnn_fwd)(LNN_IN xz, LNN_IN hz, LNN_IN h_prev,
                                                  LNN_IN mask, LNN_OUT h, ptrdiff_t b,
                                                  ptrdiff_t u)
{
    for (ptrdiff_t row = 0; row < b; row++) {
        LNN_OUT hrow = h + row * u;
        if (mask && !(mask[row] > 0)) { /* h = h_prev where mask is 0 */
            memcpy(hrow, h_prev + row * u, (size_t)u * sizeof(T));
            continue;
        }
        LNN_IN xr = xz + row * u;
        LNN_IN hr = hz + row * u;
        for (ptrdiff_t j = 0; j < u; j++) hrow[j] = LNN_TANH(xr[j] + hr[j]); /* tanh(xz + hz) */
    }
}

/* gy (or NULL), dh_rec, dh, h, dz: (b, u) */
static LNN_REC_CLONES void LNN_RNAME(lnn_rnn_bwd)(LNN_IN gy, LNN_IN dh_rec, LNN_OUT dh, LNN_IN h,
                                                  LNN_IN mask, LNN_OUT dz, ptrdiff_t b,
                                                  ptrdiff_t u)
{
    for (ptrdiff_t row = 0; row < b; row++) {
        const T m = mask ? mask[row] : (T)1;
        LNN_IN dr = dh_rec + row * u;
        LNN_IN hr = h + row * u;
        LNN_OUT dhr = dh + row * u;
        LNN_OUT dzr = dz + row * u;
        if (!(m > 0)) { /* masked: dz = 0; dh <- dh_rec + dh */
            memset(dzr, 0, (size_t)u * sizeof(T));
            for (ptrdiff_t j = 0; j < u; j++) dhr[j] = dr[j] + dhr[j];
            continue;
        }
        if (gy) { /* dh += m gy */
            LNN_IN gyr = gy + row * u;
            for (ptrdiff_t j = 0; j < u; j++) dhr[j] += m * gyr[j];
        }
        for (ptrdiff_t j = 0; j < u; j++) {
            const T d = dr[j] + dhr[j];       /* d = dh_rec + dh + m gy */
            dzr[j] = d * (1 - hr[j] * hr[j]); /* dz = d (1 - h^2) */
            dhr[j] = 0;
        }
    }
}

#undef LNN_IN
#undef LNN_OUT

#endif /* LNN_RECURRENT_TEMPLATE */
