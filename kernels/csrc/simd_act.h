/* simd_act.h -- vectorized activations for the fused epilogues of qgemm.h and sparse.h.
 *
 * Activation codes match lepton_nn.backend.reference.ACTIVATIONS:
 *   0 identity, 1 relu, 2 sigmoid, 3 tanh, 4 gelu (tanh approximation).
 *
 * Scalar versions use libm (the portable path). AVX-512 and AVX2 versions use one exp
 * approximation (Cody-Waite range reduction, degree-6 Taylor polynomial, ~2 ulp) and
 * the identities
 *     sigmoid(z) = 1 / (1 + exp(-z))
 *     tanh(z)    = sign(z) (1 - e) / (1 + e),  e = exp(-2|z|)   (odd series for |z| < 1/8)
 *     gelu(z)    = 0.5 z (1 + tanh(u)) = z * sigmoid(2u),  u = c (z + 0.044715 z^3)
 * Every SIMD function carries its own target attribute, so this header compiles on any
 * compiler; the SIMD parts only on GNU-compatible x86 compilers (LA_X86), unless
 * LEPTON_NO_SIMD is defined (a portable-only build, as on other CPUs).
 */
#ifndef LEPTON_SIMD_ACT_H
#define LEPTON_SIMD_ACT_H

#include <math.h>
#include <stdint.h>

#define LA_IDENTITY 0
#define LA_RELU 1
#define LA_SIGMOID 2
#define LA_TANH 3
#define LA_GELU 4

#define LA_GELU_C 0.7978845608028654f
#define LA_GELU_A 0.044715f

/* The SIMD exp's clamp: x = min(HI, max(LO, x)). A NaN passes through it (vmaxps and vminps
 * return their SECOND operand when either one is NaN, so x goes second), and so through every
 * activation built on it, as in NumPy. exp(LO) = 2^-126 (the smallest normal float); from
 * x > 88.38 n = 128 and 2^n = +inf, so exp(x) = +inf (exactly: from 88.72), sigmoid(z) = 0
 * from z < -88.38 and gelu(-inf) = -inf * 0 = NaN, as the NumPy twin gives. */
#define LA_EXP_LO -87.3f
#define LA_EXP_HI 88.7f

#if defined(__GNUC__) || defined(__clang__)
#define LA_UNUSED __attribute__((unused))
#else
#define LA_UNUSED
#endif

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) &&     \
    !defined(LEPTON_NO_SIMD)
#define LA_X86 1
#include <immintrin.h>
#else
#define LA_X86 0
#endif

/* ---------------------------------------------------------------- scalar (libm) */
static inline float la_act1(float z, int act) {
    switch (act) {
    case LA_RELU: return z < 0.0f ? 0.0f : z; /* NaN stays NaN, as np.maximum(z, 0) */
    case LA_SIGMOID: return z >= 0.0f ? 1.0f / (1.0f + expf(-z)) : expf(z) / (1.0f + expf(z));
    case LA_TANH: return tanhf(z);
    case LA_GELU: return 0.5f * z * (1.0f + tanhf(LA_GELU_C * (z + LA_GELU_A * z * z * z)));
    default: return z;
    }
}

/* y[i] = act(y[i] + bias[i]) for i < n; bias may be NULL */
LA_UNUSED static void la_bias_act_row_scalar(float *y, const float *bias, int64_t n, int act) {
    for (int64_t i = 0; i < n; i++) y[i] = la_act1(y[i] + (bias ? bias[i] : 0.0f), act);
}

#if LA_X86
/* ---------------------------------------------------------------- AVX-512 (16 lanes) */
#define LA_T512 __attribute__((target("avx512f"), always_inline))

static inline LA_T512 __m512 la_exp512(__m512 x) {
    /* exp(x) = 2^n * p(r), n = round(x / ln2), r = x - n ln2 (two-part ln2) */
    x = _mm512_min_ps(_mm512_set1_ps(LA_EXP_HI), _mm512_max_ps(_mm512_set1_ps(LA_EXP_LO), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n); /* n = 128: +inf */
}

static inline LA_T512 __m512 la_sigmoid512(__m512 z) {
    __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, la_exp512(_mm512_sub_ps(_mm512_setzero_ps(), z))));
}

static inline LA_T512 __m512 la_tanh512(__m512 z) {
    __m512 one = _mm512_set1_ps(1.0f);
    __m512 az = _mm512_abs_ps(z);
    __m512 e = la_exp512(_mm512_mul_ps(az, _mm512_set1_ps(-2.0f)));
    __m512 t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
    /* small |z|: z (1 - z^2/3 + 2 z^4/15 - 17 z^6/315) avoids the 1 - e cancellation */
    __m512 z2 = _mm512_mul_ps(z, z);
    __m512 q = _mm512_set1_ps(-17.0f / 315.0f);
    q = _mm512_fmadd_ps(q, z2, _mm512_set1_ps(2.0f / 15.0f));
    q = _mm512_fmadd_ps(q, z2, _mm512_set1_ps(-1.0f / 3.0f));
    q = _mm512_fmadd_ps(q, z2, one);
    __m512 small = _mm512_mul_ps(q, z);
    /* copy the sign of z onto t */
    __m512 sgn = _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32((int)0x80000000u)));
    t = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), _mm512_castps_si512(sgn)));
    __mmask16 is_small = _mm512_cmp_ps_mask(az, _mm512_set1_ps(0.125f), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(is_small, t, small);
}

static inline LA_T512 __m512 la_act512(__m512 z, int act) {
    switch (act) {
    case LA_RELU: return _mm512_max_ps(_mm512_setzero_ps(), z); /* NaN: z (see LA_EXP_LO) */
    case LA_SIGMOID: return la_sigmoid512(z);
    case LA_TANH: return la_tanh512(z);
    case LA_GELU: {
        /* z * sigmoid(2 c (z + a z^3)) */
        __m512 z3 = _mm512_mul_ps(_mm512_mul_ps(z, z), z);
        __m512 u = _mm512_fmadd_ps(z3, _mm512_set1_ps(LA_GELU_A), z);
        return _mm512_mul_ps(z, la_sigmoid512(_mm512_mul_ps(u, _mm512_set1_ps(2.0f * LA_GELU_C))));
    }
    default: return z;
    }
}

__attribute__((target("avx512f"))) LA_UNUSED static void
la_bias_act_row512(float *y, const float *bias, int64_t n, int act) {
    /* y = act(y + bias) */
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, y + i);
        if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + i));
        _mm512_mask_storeu_ps(y + i, m, la_act512(v, act));
    }
}

/* ---------------------------------------------------------------- AVX2 (8 lanes) */
#define LA_T256 __attribute__((target("avx2,fma"), always_inline))

static inline LA_T256 __m256 la_exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_set1_ps(LA_EXP_HI), _mm256_max_ps(_mm256_set1_ps(LA_EXP_LO), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* 2^n from the exponent bits: n in [-126, 128] after the clamp above, 2^128 = +inf */
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline LA_T256 __m256 la_sigmoid256(__m256 z) {
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, la_exp256(_mm256_sub_ps(_mm256_setzero_ps(), z))));
}

static inline LA_T256 __m256 la_tanh256(__m256 z) {
    __m256 one = _mm256_set1_ps(1.0f);
    __m256 signbit = _mm256_set1_ps(-0.0f);
    __m256 az = _mm256_andnot_ps(signbit, z);
    __m256 e = la_exp256(_mm256_mul_ps(az, _mm256_set1_ps(-2.0f)));
    __m256 t = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
    __m256 z2 = _mm256_mul_ps(z, z);
    __m256 q = _mm256_set1_ps(-17.0f / 315.0f);
    q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(2.0f / 15.0f));
    q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(-1.0f / 3.0f));
    q = _mm256_fmadd_ps(q, z2, one);
    __m256 small = _mm256_mul_ps(q, z);
    t = _mm256_or_ps(t, _mm256_and_ps(z, signbit));
    return _mm256_blendv_ps(t, small, _mm256_cmp_ps(az, _mm256_set1_ps(0.125f), _CMP_LT_OQ));
}

static inline LA_T256 __m256 la_act256(__m256 z, int act) {
    switch (act) {
    case LA_RELU: return _mm256_max_ps(_mm256_setzero_ps(), z); /* NaN: z (see LA_EXP_LO) */
    case LA_SIGMOID: return la_sigmoid256(z);
    case LA_TANH: return la_tanh256(z);
    case LA_GELU: {
        __m256 z3 = _mm256_mul_ps(_mm256_mul_ps(z, z), z);
        __m256 u = _mm256_fmadd_ps(z3, _mm256_set1_ps(LA_GELU_A), z);
        return _mm256_mul_ps(z, la_sigmoid256(_mm256_mul_ps(u, _mm256_set1_ps(2.0f * LA_GELU_C))));
    }
    default: return z;
    }
}

/* lane mask for the first n (< 8) lanes, as AVX2 maskload/maskstore want it */
static inline LA_T256 __m256i la_mask256(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

__attribute__((target("avx2,fma"))) LA_UNUSED static void
la_bias_act_row256(float *y, const float *bias, int64_t n, int act) {
    /* y = act(y + bias) */
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(y + i);
        if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
        _mm256_storeu_ps(y + i, la_act256(v, act));
    }
    if (i < n) {
        __m256i m = la_mask256(n - i);
        __m256 v = _mm256_maskload_ps(y + i, m);
        if (bias) v = _mm256_add_ps(v, _mm256_maskload_ps(bias + i, m));
        _mm256_maskstore_ps(y + i, m, la_act256(v, act));
    }
}
#endif /* LA_X86 */

#endif /* LEPTON_SIMD_ACT_H */
