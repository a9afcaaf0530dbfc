/* dense.h: the C loops behind kernels/dense.pyx.
 *
 *   lnn_bias_act_forward_*     out = f(z + bias), bias along axis 1 of (n, m) or (n, m, inner)
 *   lnn_bias_act_backward_*    gz = gy * f'(z + bias),  gbias = gz summed over all axes but 1
 *   lnn_softmax_xent_forward_* probs = softmax(logits), loss = logsumexp - logit[label]
 *   lnn_softmax_xent_backward_* glogits = (probs - onehot(labels)) * gloss
 *   lnn_adam_step_*            one Adam/AdamW update in a single pass over p, g, m, v
 *
 * The spec of each kernel is its NumPy twin in lepton_nn/backend/reference.py.
 *
 * Each kernel is written once, for an element type T, in the template part at the bottom of
 * this file; the header includes itself twice to stamp out a float (_f32) and a double (_f64)
 * version. Arrays are C-contiguous; a (N, M) array is N rows of M elements.
 *
 * Vectorization: gcc vectorizes these loops at -O3. Pointers that may alias an output
 * (out/z, gz/gy, glogits/probs) carry no `restrict`, and the in-place case (same pointer) has
 * its own loop that reads the output array only, so neither case needs a run-time overlap
 * check to take the vector path. exp, expm1, tanh and sigmoid are branch-free polynomial code,
 * because libm calls would keep the loops scalar (glibc's vector math needs -ffast-math).
 * On x86-64 Linux with gcc, each kernel is compiled for AVX-512F, AVX2 and baseline x86-64 and
 * the best is picked at load time (target_clones); elsewhere it is plain C.
 */
#ifndef LNN_DENSE_TEMPLATE

#ifndef LNN_DENSE_H
#define LNN_DENSE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(LEPTON_NO_SIMD) /* a portable-only build (simd_act.h) */
#define LNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LNN_CLONES
#endif

#if defined(_MSC_VER)
#define LNN_RESTRICT __restrict
#elif defined(__GNUC__) || defined(__clang__)
#define LNN_RESTRICT __restrict__
#else
#define LNN_RESTRICT restrict
#endif

/* activation codes, as in reference.ACTIVATIONS */
enum { LNN_IDENTITY = 0, LNN_RELU = 1, LNN_SIGMOID = 2, LNN_TANH = 3, LNN_GELU = 4 };

/* gelu, tanh approximation: 0.5 s (1 + tanh(C (s + A s^3))) */
#define LNN_GELU_C 0.7978845608028654 /* sqrt(2 / pi) */
#define LNN_GELU_A 0.044715

#define LNN_LOG2E 1.4426950408889634

/* 1 / k! for the Taylor series of expm1 on |r| <= ln2 / 2 */
static const double lnn_inv_fact[14] = {
    1.0,
    1.0,
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40320.0,
    1.0 / 362880.0,
    1.0 / 3628800.0,
    1.0 / 39916800.0,
    1.0 / 479001600.0,
    1.0 / 6227020800.0,
};

/* One row, j = 0..m-1: o[j] = F(zr[j] + bias[j]), or F(zr[j]) without a bias. In place
 * (o == zr) the loop reads o itself, so it vectorizes without an overlap check. */
#define LNN_ROW_MAP(F)                                                                     \
    do {                                                                                   \
        if (bias && o == zr) {                                                             \
            for (ptrdiff_t j = 0; j < m; j++) o[j] = F(o[j] + bias[j]);                    \
        } else if (bias) {                                                                 \
            for (ptrdiff_t j = 0; j < m; j++) o[j] = F(zr[j] + bias[j]);                   \
        } else if (o == zr) {                                                              \
            for (ptrdiff_t j = 0; j < m; j++) o[j] = F(o[j]);                              \
        } else {                                                                           \
            for (ptrdiff_t j = 0; j < m; j++) o[j] = F(zr[j]);                             \
        }                                                                                  \
    } while (0)

/* One row of a backward map: o[j] = EXPR, where EXPR reads the upstream gradient as gj
 * (from g, or from o itself when o == g). */
#define LNN_GRAD_MAP(EXPR)                                                                 \
    do {                                                                                   \
        if (o == g) {                                                                      \
            for (ptrdiff_t j = 0; j < m; j++) {                                            \
                T gj = o[j];                                                               \
                o[j] = (EXPR);                                                             \
            }                                                                              \
        } else {                                                                           \
            for (ptrdiff_t j = 0; j < m; j++) {                                            \
                T gj = g[j];                                                               \
                o[j] = (EXPR);                                                             \
            }                                                                              \
        }                                                                                  \
    } while (0)

/* float instance: |r| <= ln2/2 needs terms up to r^7/7! (error ~1e-8 relative) */
#define T float
#define LNN_NAME(name) name##_f32
#define LNN_UINT uint32_t
#define LNN_MANT_BITS 23
#define LNN_EXP_BIAS 127
#define LNN_EXP_LO (-87.0f)          /* exp(-87) ~ 1.6e-38, still a normal float */
#define LNN_ROUND_MAGIC 12582912.0f  /* 1.5 * 2^23: adding it rounds to an integer */
#define LNN_LN2_HI 0.693359375f      /* ln 2 = LN2_HI + LN2_LO, LN2_HI has 9 bits */
#define LNN_LN2_LO (-2.12194440e-4f)
#define LNN_EXPM1_TERMS 7
#define LNN_SQRT sqrtf
#define LNN_LOG logf
#define LNN_FABS fabsf
#define LNN_COPYSIGN copysignf
#define LNN_DENSE_TEMPLATE
#include "dense.h"
#undef LNN_DENSE_TEMPLATE
#undef T
#undef LNN_NAME
#undef LNN_UINT
#undef LNN_MANT_BITS
#undef LNN_EXP_BIAS
#undef LNN_EXP_LO
#undef LNN_ROUND_MAGIC
#undef LNN_LN2_HI
#undef LNN_LN2_LO
#undef LNN_EXPM1_TERMS
#undef LNN_SQRT
#undef LNN_LOG
#undef LNN_FABS
#undef LNN_COPYSIGN

/* double instance: terms up to r^13/13! (error ~1e-17 relative) */
#define T double
#define LNN_NAME(name) name##_f64
#define LNN_UINT uint64_t
#define LNN_MANT_BITS 52
#define LNN_EXP_BIAS 1023
#define LNN_EXP_LO (-708.0)                 /* exp(-708) ~ 3.3e-308, still normal */
#define LNN_ROUND_MAGIC 6755399441055744.0  /* 1.5 * 2^52 */
#define LNN_LN2_HI 6.93147180369123816490e-01 /* 32 significant bits */
#define LNN_LN2_LO 1.90821492927058770002e-10
#define LNN_EXPM1_TERMS 13
#define LNN_SQRT sqrt
#define LNN_LOG log
#define LNN_FABS fabs
#define LNN_COPYSIGN copysign
#define LNN_DENSE_TEMPLATE
#include "dense.h"
#undef LNN_DENSE_TEMPLATE
#undef T
#undef LNN_NAME
#undef LNN_UINT
#undef LNN_MANT_BITS
#undef LNN_EXP_BIAS
#undef LNN_EXP_LO
#undef LNN_ROUND_MAGIC
#undef LNN_LN2_HI
#undef LNN_LN2_LO
#undef LNN_EXPM1_TERMS
#undef LNN_SQRT
#undef LNN_LOG
#undef LNN_FABS
#undef LNN_COPYSIGN

#endif /* LNN_DENSE_H */

#else /* LNN_DENSE_TEMPLATE: the kernels for one element type T ----------------------------- */

/* ---- elementwise math (inlined into the loops, so it must stay branch-free) ---- */

typedef struct {
    T q; /* expm1(r) */
    T s; /* 2^n */
} LNN_NAME(lnn_exp_split);

/* x <= 0 as x = n ln2 + r with |r| <= ln2/2: exp(x) = s (1 + q), expm1(x) = (s - 1) + s q.
 * Valid for LNN_EXP_LO <= x <= 0 (callers clamp). */
static inline LNN_NAME(lnn_exp_split) LNN_NAME(lnn_exp_parts)(T x)
{
    LNN_NAME(lnn_exp_split) out;
    T t = x * (T)LNN_LOG2E + LNN_ROUND_MAGIC; /* t - MAGIC = round(x / ln2) */
    T n = t - LNN_ROUND_MAGIC;
    T r = (x - n * LNN_LN2_HI) - n * LNN_LN2_LO; /* n * LN2_HI is exact */
    /* q = r + r^2/2! + ... + r^K/K!, by Horner */
    T p = (T)lnn_inv_fact[LNN_EXPM1_TERMS];
    for (int k = LNN_EXPM1_TERMS - 1; k >= 1; k--) p = p * r + (T)lnn_inv_fact[k];
    out.q = p * r;
    /* s = 2^n built from bits: the low bits of t hold n (t stays in one binade) */
    T magic = LNN_ROUND_MAGIC;
    LNN_UINT tb, mb;
    memcpy(&tb, &t, sizeof tb);
    memcpy(&mb, &magic, sizeof mb);
    LNN_UINT sb = (tb - mb + (LNN_UINT)LNN_EXP_BIAS) << LNN_MANT_BITS;
    memcpy(&out.s, &sb, sizeof sb);
    return out;
}

/* exp(x) for x <= 0 (NaN stays NaN; below LNN_EXP_LO gives 0) */
static inline T LNN_NAME(lnn_exp_nonpos)(T x)
{
    T xc = x < LNN_EXP_LO ? LNN_EXP_LO : x;
    LNN_NAME(lnn_exp_split) e = LNN_NAME(lnn_exp_parts)(xc);
    T r = e.s + e.s * e.q;
    return x < LNN_EXP_LO ? (T)0 : r;
}

/* expm1(x) = exp(x) - 1 for x <= 0, accurate near 0 (no cancellation) */
static inline T LNN_NAME(lnn_expm1_nonpos)(T x)
{
    T xc = x < LNN_EXP_LO ? LNN_EXP_LO : x;
    LNN_NAME(lnn_exp_split) e = LNN_NAME(lnn_exp_parts)(xc);
    T r = (e.s - (T)1) + e.s * e.q;
    return x < LNN_EXP_LO ? (T)-1 : r;
}

/* sigmoid(x), stable: exp only of -|x|; 1/(1+e) for x >= 0, e/(1+e) below */
static inline T LNN_NAME(lnn_sigmoid)(T x)
{
    T e = LNN_NAME(lnn_exp_nonpos)(-LNN_FABS(x));
    T num = x >= 0 ? (T)1 : e;
    return num / ((T)1 + e);
}

/* tanh(x) = sign(x) (1 - e^{-2|x|}) / (1 + e^{-2|x|}) = -sign(x) em / (2 + em),
 * em = expm1(-2|x|): no overflow, and accurate near 0 */
static inline T LNN_NAME(lnn_tanh)(T x)
{
    T em = LNN_NAME(lnn_expm1_nonpos)((T)-2 * LNN_FABS(x));
    return LNN_COPYSIGN(-em / ((T)2 + em), x);
}

static inline T LNN_NAME(lnn_act_identity)(T s) { return s; }

/* np.maximum(s, 0) (NaN passes through) */
static inline T LNN_NAME(lnn_act_relu)(T s) { return s < 0 ? (T)0 : s; }

/* 0.5 * s * (1 + tanh(C * (s + A * s * s * s))) */
static inline T LNN_NAME(lnn_act_gelu)(T s)
{
    T u = (T)LNN_GELU_C * (s + (T)LNN_GELU_A * s * s * s);
    return (T)0.5 * s * ((T)1 + LNN_NAME(lnn_tanh)(u));
}

/* d gelu / ds = 0.5 (1 + t) + 0.5 s (1 - t^2) C (1 + 3 A s^2), t = tanh(C (s + A s^3));
 * the second term is 0 where 1 - t^2 is (not 0 * inf = NaN once s^2 overflows) */
static inline T LNN_NAME(lnn_gelu_grad)(T s)
{
    T t = LNN_NAME(lnn_tanh)((T)LNN_GELU_C * (s + (T)LNN_GELU_A * (s * s * s)));
    T sech2 = (T)1 - t * t;
    T second = (T)0.5 * s * sech2 * (T)LNN_GELU_C * ((T)1 + (T)(3 * LNN_GELU_A) * s * s);
    return (T)0.5 * ((T)1 + t) + (sech2 == (T)0 ? (T)0 : second);
}

/* ---- bias + activation ---------------------------------------------------------------- */

/* One plane of a forward map with a scalar bias b: o[q] = F(zr[q] + b), q < inner. */
#define LNN_PLANE_MAP(F)                                                                   \
    do {                                                                                   \
        if (o == zr) {                                                                     \
            for (ptrdiff_t q = 0; q < inner; q++) o[q] = F(o[q] + b);                      \
        } else {                                                                           \
            for (ptrdiff_t q = 0; q < inner; q++) o[q] = F(zr[q] + b);                     \
        }                                                                                  \
    } while (0)

/* out = f(z + bias); z, out: (n, m, inner), out may be z; bias: (m,) or NULL, along axis 1.
 * inner = 1 is a Dense layer's (n, m) output (bias per column); inner > 1 a convolution's
 * (images, channels, pixels) output (one bias per plane of inner pixels). */
static LNN_CLONES void LNN_NAME(lnn_bias_act_forward)(const T *z, const T *LNN_RESTRICT bias,
                                                      int act, T *out, ptrdiff_t n, ptrdiff_t m,
                                                      ptrdiff_t inner)
{
    if (inner != 1) { /* planes: out[i, j] = f(z[i, j] + bias[j]) */
        for (ptrdiff_t r = 0; r < n * m; r++) {
            const T *zr = z + r * inner;
            T *o = out + r * inner;
            const T b = bias ? bias[r % m] : (T)0;
            switch (act) {
            case LNN_IDENTITY:
                if (bias || o != zr) LNN_PLANE_MAP(LNN_NAME(lnn_act_identity));
                break;
            case LNN_RELU:
                LNN_PLANE_MAP(LNN_NAME(lnn_act_relu));
                break;
            case LNN_SIGMOID:
                LNN_PLANE_MAP(LNN_NAME(lnn_sigmoid));
                break;
            case LNN_TANH:
                LNN_PLANE_MAP(LNN_NAME(lnn_tanh));
                break;
            default:
                LNN_PLANE_MAP(LNN_NAME(lnn_act_gelu));
                break;
            }
        }
        return;
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *zr = z + i * m;
        T *o = out + i * m;
        switch (act) {
        case LNN_IDENTITY: /* out = z + bias */
            if (bias || o != zr) LNN_ROW_MAP(LNN_NAME(lnn_act_identity));
            break;
        case LNN_RELU: /* out = np.maximum(z + bias, 0) */
            LNN_ROW_MAP(LNN_NAME(lnn_act_relu));
            break;
        case LNN_SIGMOID: /* out = _sigmoid(z + bias) */
            LNN_ROW_MAP(LNN_NAME(lnn_sigmoid));
            break;
        case LNN_TANH: /* out = np.tanh(z + bias) */
            LNN_ROW_MAP(LNN_NAME(lnn_tanh));
            break;
        default: /* out = 0.5 * s * (1 + np.tanh(C * (s + A * s**3))), s = z + bias */
            LNN_ROW_MAP(LNN_NAME(lnn_act_gelu));
            break;
        }
    }
}

/* gz = gy * f'(z + bias) (gz may be gy); gbias = gz.sum over every axis but 1 unless gbias is
 * NULL. Shapes as in the forward: (n, m, inner), bias and gbias (m,).
 * relu/sigmoid/tanh read the forward output y; gelu recomputes from z + bias. */
static LNN_CLONES void LNN_NAME(lnn_bias_act_backward)(
    const T *gy, const T *LNN_RESTRICT y, const T *LNN_RESTRICT z, const T *LNN_RESTRICT bias,
    int act, T *gz, T *LNN_RESTRICT gbias, ptrdiff_t n, ptrdiff_t m, ptrdiff_t inner)
{
    if (gbias)
        for (ptrdiff_t j = 0; j < m; j++) gbias[j] = 0;
    if (inner != 1) { /* planes of inner pixels: the rows' formulas below, bias b = bias[j] */
        for (ptrdiff_t r = 0; r < n * m; r++) {
            const T *g = gy + r * inner;
            const T *yr = y + r * inner;
            const T *zr = z + r * inner;
            T *o = gz + r * inner;
            const T b = bias ? bias[r % m] : (T)0;
            switch (act) {
            case LNN_IDENTITY:
                if (o != g)
                    for (ptrdiff_t q = 0; q < inner; q++) o[q] = g[q];
                break;
            case LNN_RELU:
                for (ptrdiff_t q = 0; q < inner; q++) o[q] = g[q] * (T)(yr[q] > 0);
                break;
            case LNN_SIGMOID:
                for (ptrdiff_t q = 0; q < inner; q++) o[q] = g[q] * yr[q] * ((T)1 - yr[q]);
                break;
            case LNN_TANH:
                for (ptrdiff_t q = 0; q < inner; q++) o[q] = g[q] * ((T)1 - yr[q] * yr[q]);
                break;
            default:
                for (ptrdiff_t q = 0; q < inner; q++)
                    o[q] = g[q] * LNN_NAME(lnn_gelu_grad)(zr[q] + b);
                break;
            }
            if (gbias) { /* gbias[j] += gz[i, j].sum(): 16 partial sums, then the lanes */
                T acc[16] = {0};
                ptrdiff_t q = 0;
                for (; q + 16 <= inner; q += 16)
                    for (int l = 0; l < 16; l++) acc[l] += o[q + l];
                T sum = 0;
                for (int l = 0; l < 16; l++) sum += acc[l];
                for (; q < inner; q++) sum += o[q];
                gbias[r % m] += sum;
            }
        }
        return;
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *g = gy + i * m;
        const T *yr = y + i * m;
        const T *zr = z + i * m;
        T *o = gz + i * m;
        switch (act) {
        case LNN_IDENTITY: /* gz = gy */
            if (o != g)
                for (ptrdiff_t j = 0; j < m; j++) o[j] = g[j];
            break;
        case LNN_RELU: /* gz = gy * (y > 0) */
            LNN_GRAD_MAP(gj * (T)(yr[j] > 0));
            break;
        case LNN_SIGMOID: /* gz = gy * y * (1 - y) */
            LNN_GRAD_MAP(gj * yr[j] * ((T)1 - yr[j]));
            break;
        case LNN_TANH: /* gz = gy * (1 - y * y) */
            LNN_GRAD_MAP(gj * ((T)1 - yr[j] * yr[j]));
            break;
        default: /* gz = gy * gelu'(z + bias) */
            if (bias)
                LNN_GRAD_MAP(gj * LNN_NAME(lnn_gelu_grad)(zr[j] + bias[j]));
            else
                LNN_GRAD_MAP(gj * LNN_NAME(lnn_gelu_grad)(zr[j]));
            break;
        }
        /* gbias += gz[i]  (rows in order, as NumPy sums axis 0) */
        if (gbias)
            for (ptrdiff_t j = 0; j < m; j++) gbias[j] += o[j];
    }
}

/* ---- softmax cross-entropy -------------------------------------------------------------- */

#define LNN_LANES 16 /* independent accumulators: lets gcc vectorize max and sum exactly */

/* x.max() for c >= 1 */
static inline T LNN_NAME(lnn_row_max)(const T *LNN_RESTRICT x, ptrdiff_t c)
{
    T acc[LNN_LANES];
    for (int k = 0; k < LNN_LANES; k++) acc[k] = x[0];
    ptrdiff_t j = 0;
    for (; j + LNN_LANES <= c; j += LNN_LANES)
        for (int k = 0; k < LNN_LANES; k++) {
            T a = acc[k], d = x[j + k];
            acc[k] = a < d ? d : a;
        }
    for (; j < c; j++) acc[0] = acc[0] < x[j] ? x[j] : acc[0];
    T r = acc[0];
    for (int k = 1; k < LNN_LANES; k++) r = r < acc[k] ? acc[k] : r;
    return r;
}

/* x.sum(), in LNN_LANES partial sums (like NumPy's pairwise sum, not left to right) */
static inline T LNN_NAME(lnn_row_sum)(const T *LNN_RESTRICT x, ptrdiff_t c)
{
    T acc[LNN_LANES] = {0};
    ptrdiff_t j = 0;
    for (; j + LNN_LANES <= c; j += LNN_LANES)
        for (int k = 0; k < LNN_LANES; k++) acc[k] += x[j + k];
    for (; j < c; j++) acc[0] += x[j];
    for (int w = LNN_LANES / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) acc[k] += acc[k + w];
    return acc[0];
}

/* probs = softmax(logits) per row (shifted by the row max); loss[i] = log(sum e) + max -
 * logits[i, labels[i]]. logits, probs: (n, c), c >= 1 when n >= 1; labels int64 in [0, c). */
static LNN_CLONES void LNN_NAME(lnn_softmax_xent_forward)(const T *logits,
                                                          const int64_t *LNN_RESTRICT labels,
                                                          T *probs, T *LNN_RESTRICT loss,
                                                          ptrdiff_t n, ptrdiff_t c)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *x = logits + i * c;
        T *p = probs + i * c;
        T mx = LNN_NAME(lnn_row_max)(x, c);   /* m = logits.max(axis=1) */
        T xl = x[labels[i]];                   /* logits[rows, labels], read before p is written */
        for (ptrdiff_t j = 0; j < c; j++)     /* e = np.exp(logits - m) */
            p[j] = LNN_NAME(lnn_exp_nonpos)(x[j] - mx);
        T s = LNN_NAME(lnn_row_sum)(p, c);     /* s = e.sum(axis=1) */
        for (ptrdiff_t j = 0; j < c; j++)     /* probs = e / s */
            p[j] = p[j] / s;
        loss[i] = (LNN_LOG(s) + mx) - xl;      /* loss = log(s) + m - logits[rows, labels] */
    }
}

/* glogits = (probs - onehot(labels)) * gloss[:, None]; glogits may be probs. */
static LNN_CLONES void LNN_NAME(lnn_softmax_xent_backward)(const T *probs,
                                                           const int64_t *LNN_RESTRICT labels,
                                                           const T *LNN_RESTRICT gloss,
                                                           T *glogits, ptrdiff_t n, ptrdiff_t c)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *p = probs + i * c;
        T *g = glogits + i * c;
        T gl = gloss[i];
        int64_t l = labels[i];
        T pl = p[l];
        if (g == p) /* g = probs * gloss (in place: g holds probs) */
            for (ptrdiff_t j = 0; j < c; j++) g[j] = g[j] * gl;
        else
            for (ptrdiff_t j = 0; j < c; j++) g[j] = p[j] * gl;
        g[l] = (pl - (T)1) * gl; /* g[label] = (p - 1) * gloss */
    }
}

/* ---- Adam / AdamW -------------------------------------------------------------------- */

/* One pass over n parameters, in place on p, m, v (the caller folds the step's scalars):
 *   g <- g + l2 p            (Adam's L2; l2 = 0 otherwise)
 *   p <- p * decay           (AdamW; decay = 1 - lr wd, else 1)
 *   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
 *   p <- p - step_size m / (sqrt(v) inv_sqrt_bc2 + eps)
 * with step_size = lr / (1 - b1^t), inv_sqrt_bc2 = 1 / sqrt(1 - b2^t): a multiply, not a
 * second divide (~25% faster run alone, where divides and sqrt bound the loop; inside a
 * training step p, g, m and v come back from DRAM, ~28 bytes an element, and memory bounds it:
 * 1.1 ns an element in the W2 step against 0.8 alone; prefetching and update orders were
 * measured and gained nothing). */
static LNN_CLONES void LNN_NAME(lnn_adam_step)(T *LNN_RESTRICT p, const T *LNN_RESTRICT g,
                                               T *LNN_RESTRICT m, T *LNN_RESTRICT v, ptrdiff_t n,
                                               T step_size, T beta1, T beta2, T one_m_b1,
                                               T one_m_b2, T inv_sqrt_bc2, T eps, T l2, T decay)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] + l2 * pi;                        /* g = g + weight_decay * p */
        pi = pi * decay;                              /* p *= 1 - lr * weight_decay */
        T mi = beta1 * m[i] + one_m_b1 * gi;          /* m = b1 m + (1 - b1) g */
        T vi = beta2 * v[i] + one_m_b2 * gi * gi;     /* v = b2 v + (1 - b2) g g */
        T denom = LNN_SQRT(vi) * inv_sqrt_bc2 + eps;  /* np.sqrt(v) / np.sqrt(bc2) + eps */
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * mi / denom;           /* p -= (lr / bc1) * m / denom */
    }
}

#endif /* LNN_DENSE_TEMPLATE */
