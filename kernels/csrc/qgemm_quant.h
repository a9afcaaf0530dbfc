/* qgemm_quant.h -- asymmetric uint8 quantization of float32 activations (min/max, scale,
 * zero point, round), scalar / AVX2 / AVX-512. Included once by qgemm.h after its dispatch
 * (qg_active picks the vector width). */

/* ============================================================== activation quantization */

/* lo = min(0, min x), hi = max(0, max x) over n floats; both NaN when any x is NaN (as
 * NumPy's min and max: the row's scale is then NaN, and so is every product made with it) */
static void qg_minmax_scalar(const float *x, int64_t n, float *lo, float *hi) {
    float l = 0.0f, h = 0.0f;
    int nan = 0;
    for (int64_t i = 0; i < n; i++) {
        l = x[i] < l ? x[i] : l;
        h = x[i] > h ? x[i] : h;
        nan |= x[i] != x[i];
    }
    *lo = nan ? NAN : l;
    *hi = nan ? NAN : h;
}

/* q = clip(rint(x * inv) + zp, 0, 255), all float32, clipped before the conversion so that
 * values beyond int32 and +-inf saturate (255 / 0) and NaN gives 0 (the reference's rule). */
static void qg_quant_scalar(const float *x, int64_t n, float inv, int32_t zp, uint8_t *q) {
    const float z = (float)zp;
    for (int64_t i = 0; i < n; i++) {
        /* NumPy: np.clip(np.rint(x * inv) + zp, 0, 255), NaN -> 0, .astype(np.uint8) */
        float v = nearbyintf(x[i] * inv) + z;
        v = v > 0.0f ? v : 0.0f; /* also NaN -> 0 */
        v = v < 255.0f ? v : 255.0f;
        q[i] = (uint8_t)v;
    }
}

#if LA_X86
__attribute__((target("avx512f"))) static void qg_minmax512(const float *x, int64_t n, float *lo,
                                                            float *hi) {
    __m512 l = _mm512_setzero_ps(), h = _mm512_setzero_ps();
    __mmask16 nan = 0;
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        const __m512 v = _mm512_maskz_loadu_ps(k, x + i); /* masked lanes read 0: harmless */
        l = _mm512_min_ps(l, v);
        h = _mm512_max_ps(h, v);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q); /* minps / maxps drop a NaN */
    }
    *lo = nan ? NAN : _mm512_reduce_min_ps(l);
    *hi = nan ? NAN : _mm512_reduce_max_ps(h);
}

__attribute__((target("avx512f"))) static void qg_quant512(const float *x, int64_t n, float inv,
                                                           int32_t zp, uint8_t *q) {
    /* q = clip(rint(x * inv) + zp, 0, 255) in float32 (as qg_quant_scalar), then to uint8 */
    const __m512 vi = _mm512_set1_ps(inv), z = _mm512_set1_ps((float)zp),
                 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        /* NumPy: v = np.rint(x * inv) + zp  (round half to even) */
        __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vi),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_add_ps(v, z);
        /* NumPy: np.clip(v, 0, 255), NaN -> 0 (maxps returns its 2nd operand for a NaN) */
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        /* NumPy: .astype(np.uint8) (v is an integer in 0..255 now) */
        _mm512_mask_cvtusepi32_storeu_epi8(q + i, k, _mm512_cvtps_epi32(v));
    }
}

/* the least / greatest of v's 8 lanes, in registers (the order is free: no lane is NaN here
 * that matters, the caller tracks NaN apart, and min / max of the rest is exact) */
static inline __attribute__((target("avx2,fma"), always_inline)) float qg_hmin256(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps(m, m, 1)));
}
static inline __attribute__((target("avx2,fma"), always_inline)) float qg_hmax256(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

/* (inlined in qv_quant_split256: a call's saves and restores were a fifth of its cost on a
 * 32-wide row; qg_minmax256 below is the out-of-line copy) */
static inline __attribute__((target("avx2,fma"), always_inline)) void
qg_minmax256_inl(const float *x, int64_t n, float *lo, float *hi) {
    __m256 l = _mm256_setzero_ps(), h = _mm256_setzero_ps(), nanv = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        l = _mm256_min_ps(l, v);
        h = _mm256_max_ps(h, v);
        nanv = _mm256_or_ps(nanv, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); /* minps drops a NaN */
    }
    float lt = qg_hmin256(l), ht = qg_hmax256(h);
    int nan = _mm256_movemask_ps(nanv) != 0;
    for (; i < n; i++) { /* the last n % 8 (the scalar twin's loop) */
        lt = x[i] < lt ? x[i] : lt;
        ht = x[i] > ht ? x[i] : ht;
        nan |= x[i] != x[i];
    }
    *lo = nan ? NAN : lt;
    *hi = nan ? NAN : ht;
}

__attribute__((target("avx2,fma"))) static void qg_minmax256(const float *x, int64_t n, float *lo,
                                                             float *hi) {
    qg_minmax256_inl(x, n, lo, hi);
}

/* NumPy: np.clip(np.rint(x * inv) + zp, 0, 255) of 8 floats, as int32 lanes (float32 math:
 * round half to even; beyond the range and +-inf saturate; NaN gives 0, as maxps returns its
 * 2nd operand for a NaN) */
static inline __attribute__((target("avx2,fma"), always_inline)) __m256i
qg_quant8(__m256 x, __m256 inv, __m256 zp) {
    __m256 f = _mm256_round_ps(_mm256_mul_ps(x, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    f = _mm256_add_ps(f, zp);
    f = _mm256_min_ps(_mm256_max_ps(f, _mm256_setzero_ps()), _mm256_set1_ps(255.0f));
    return _mm256_cvtps_epi32(f); /* exact: an integer in 0..255 */
}

__attribute__((target("avx2,fma"))) static void qg_quant256(const float *x, int64_t n, float inv,
                                                            int32_t zp, uint8_t *q) {
    /* q = clip(rint(x * inv) + zp, 0, 255) in float32 (as qg_quant_scalar), then to uint8 */
    const __m256 vi = _mm256_set1_ps(inv), z = _mm256_set1_ps((float)zp);
    /* byte 0 of each int32 lane to the low 4 bytes of each 128-bit half, then join halves */
    const __m256i pick =
        _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                         -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i join = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        /* NumPy: .astype(np.uint8) of the clipped values: byte 0 of each lane, packed */
        __m256i v = qg_quant8(_mm256_loadu_ps(x + i), vi, z);
        v = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, pick), join);
        _mm_storel_epi64((__m128i *)(q + i), _mm256_castsi256_si128(v));
    }
    qg_quant_scalar(x + i, n - i, inv, zp, q + i);
}
#endif

/* A dynamic span's pair from lo = min(0, min x), hi = max(0, max x) (lo NaN: a NaN in the
 * span): scale = (hi - lo) / 255 (1 when 0), zp = clip(rint(-lo / scale), 0, 255); a NaN
 * span gets scale NaN and zp 0, which quantize every value to q = 0 (the twin's rule). */
static inline void qg_scale_zp(float lo, float hi, float *scale, int32_t *zp) {
    if (lo != lo) {
        *scale = NAN;
        *zp = 0;
        return;
    }
    float sc = (hi - lo) / 255.0f;
    if (sc == 0.0f) sc = 1.0f;
    float z = nearbyintf(-lo / sc);
    z = z < 0.0f ? 0.0f : (z > 255.0f ? 255.0f : z);
    *scale = sc;
    *zp = (int32_t)z;
}

/* q = clip(rint(x * inv) + zp, 0, 255) of a span on the active ISA (a direct call: no
 * function pointers, so the compiler sees the target) */
static inline void qg_quant_span(const float *x, int64_t n, float inv, int32_t zp, uint8_t *q) {
#if LA_X86
    if (qg_active >= QG_AVX512VNNI) qg_quant512(x, n, inv, zp, q);
    else if (qg_active >= QG_AVX2) qg_quant256(x, n, inv, zp, q);
    else
#endif
        qg_quant_scalar(x, n, inv, zp, q);
}

static inline void qg_minmax_span(const float *x, int64_t n, float *lo, float *hi) {
#if LA_X86
    if (qg_active >= QG_AVX512VNNI) qg_minmax512(x, n, lo, hi);
    else if (qg_active >= QG_AVX2) qg_minmax256(x, n, lo, hi);
    else
#endif
        qg_minmax_scalar(x, n, lo, hi);
}

/* Asymmetric uint8 quantization of x (M, K): per row (per_row = 1, scale/zp of length M) or
 * per tensor (scale/zp of length 1). Dynamic (fixed = 0): scale and zp from the span's
 * min / max (qg_scale_zp) are computed and written. Static (fixed = 1): scale and zp are read
 * (set at calibration). Then  q = clip(rint(x * (1 / scale)) + zp, 0, 255)   (float32 math,
 * round half to even; beyond the range and +-inf saturate, NaN gives 0). A dynamic span
 * holding a NaN gets scale NaN, zp 0 and q 0: every output computed from it is NaN, as in
 * the twin. */
static void qg_quantize_u8(const float *x, int64_t M, int64_t K, int per_row, int fixed,
                           uint8_t *q, float *scale, int32_t *zp) {
    const int64_t spans = per_row ? M : 1, len = per_row ? K : M * K;
    for (int64_t s = 0; s < spans; s++) {
        if (!fixed) {
            float lo, hi;
            qg_minmax_span(x + s * len, len, &lo, &hi);
            qg_scale_zp(lo, hi, scale + s, zp + s);
            if (lo != lo) { /* NumPy: q[s] = 0 */
                memset(q + s * len, 0, (size_t)len);
                continue;
            }
        }
        /* NumPy: q = np.clip(np.rint(x * (np.float32(1) / scale)) + zp, 0, 255) */
        qg_quant_span(x + s * len, len, 1.0f / scale[s], zp[s], q + s * len);
    }
}

#if LA_X86
/* One row x (K floats) quantized as qg_quantize_u8 (dynamic: its pair computed and written to
 * *scale, *zp; static: read from them) and at once split for the signed GEMV (qv_tile):
 * with a' = q - 128, and a' = 0 for k in [K, R) (R a multiple of 32, >= K),
 *     ua = |a'|,  ma = 0xFF where a' < 0 else 0  (R bytes each),  returns C = sum min(a', 0),
 * the bytes qg_quantize_u8, a pad of q = 128 and qv_prep_row give, in one pass (32 k a step:
 * four 8-float quantizations packed to 32 bytes, then the sign split in registers). */
__attribute__((target("avx2,fma"))) static int32_t qv_quant_split256(const float *x, int64_t K,
                                                                     int64_t R, int dynamic,
                                                                     float *scale, int32_t *zp,
                                                                     uint8_t *ua, uint8_t *ma) {
    if (dynamic) {
        float lo, hi;
        qg_minmax256_inl(x, K, &lo, &hi);
        qg_scale_zp(lo, hi, scale, zp); /* NaN: inv NaN below, and every q is 0 (q8's rule) */
    }
    const __m256 vi = _mm256_set1_ps(1.0f / *scale), z = _mm256_set1_ps((float)*zp);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), flip = _mm256_set1_epi8(-128);
    const __m256i iota = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                          17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);
    const __m256i zero = _mm256_setzero_si256();
    __m256i neg = zero; /* sum of |a'| where a' < 0, in 4 uint64 lanes */
    for (int64_t k = 0; k < R; k += 32) {
        __m256i qi[4];
        for (int i = 0; i < 4; i++) { /* NumPy: q[k + 8i : k + 8i + 8] (past K: anything) */
            const int64_t k8 = k + 8 * i;
            __m256 v = _mm256_setzero_ps();
            if (k8 + 8 <= K) v = _mm256_loadu_ps(x + k8);
            else if (k8 < K) { /* the last K % 8 floats */
                float b[8] = {0};
                for (int64_t j = 0; k8 + j < K; j++) b[j] = x[k8 + j];
                v = _mm256_loadu_ps(b);
            }
            qi[i] = qg_quant8(v, vi, z);
        }
        /* int32 0..255 -> 32 bytes: packs give [q0 q1 q2 q3] by 4-lane halves, order mends */
        __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(qi[0], qi[1]),
                                        _mm256_packs_epi32(qi[2], qi[3]));
        b = _mm256_permutevar8x32_epi32(b, order);
        if (k + 32 > K) /* NumPy: q[K:R] = 128 (a' = 0) */
            b = _mm256_blendv_epi8(flip, b, _mm256_cmpgt_epi8(_mm256_set1_epi8((char)(K - k)), iota));
        /* NumPy: s = (q ^ 0x80).astype(int8); ua = |s|; ma = 0xFF where s < 0; C = s[s<0].sum() */
        const __m256i s = _mm256_xor_si256(b, flip);
        const __m256i u = _mm256_abs_epi8(s), mk = _mm256_cmpgt_epi8(zero, s);
        _mm256_storeu_si256((__m256i *)(ua + k), u);
        _mm256_storeu_si256((__m256i *)(ma + k), mk);
        neg = _mm256_add_epi64(neg, _mm256_sad_epu8(_mm256_and_si256(u, mk), zero));
    }
    int64_t nb4[4];
    memcpy(nb4, &neg, sizeof nb4);
    return (int32_t)-(nb4[0] + nb4[1] + nb4[2] + nb4[3]);
}
#endif
