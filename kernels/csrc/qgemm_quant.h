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

__attribute__((target("avx2,fma"))) static void qg_minmax256(const float *x, int64_t n, float *lo,
                                                             float *hi) {
    __m256 l = _mm256_setzero_ps(), h = _mm256_setzero_ps(), nanv = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        l = _mm256_min_ps(l, v);
        h = _mm256_max_ps(h, v);
        nanv = _mm256_or_ps(nanv, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); /* minps drops a NaN */
    }
    float lb[8], hb[8], lt, ht;
    _mm256_storeu_ps(lb, l);
    _mm256_storeu_ps(hb, h);
    qg_minmax_scalar(x + i, n - i, &lt, &ht); /* NaN when the tail has one: kept below */
    for (int j = 0; j < 8; j++) {
        lt = lb[j] < lt ? lb[j] : lt;
        ht = hb[j] > ht ? hb[j] : ht;
    }
    const int nan = _mm256_movemask_ps(nanv) != 0;
    *lo = nan ? NAN : lt;
    *hi = nan ? NAN : ht;
}

__attribute__((target("avx2,fma"))) static void qg_quant256(const float *x, int64_t n, float inv,
                                                            int32_t zp, uint8_t *q) {
    /* q = clip(rint(x * inv) + zp, 0, 255) in float32 (as qg_quant_scalar), then to uint8 */
    const __m256 vi = _mm256_set1_ps(inv), z = _mm256_set1_ps((float)zp),
                 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(255.0f);
    /* byte 0 of each int32 lane to the low 4 bytes of each 128-bit half, then join halves */
    const __m256i pick =
        _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                         -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i join = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        /* NumPy: v = np.rint(x * inv) + zp  (round half to even) */
        __m256 f = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vi),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        f = _mm256_add_ps(f, z);
        /* NumPy: np.clip(v, 0, 255), NaN -> 0 (maxps returns its 2nd operand for a NaN) */
        f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
        /* NumPy: .astype(np.uint8): to int32 (exact), byte 0 of each lane packed to 8 bytes */
        __m256i v = _mm256_cvtps_epi32(f);
        v = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, pick), join);
        _mm_storel_epi64((__m128i *)(q + i), _mm256_castsi256_si128(v));
    }
    qg_quant_scalar(x + i, n - i, inv, zp, q + i);
}
#endif

/* Asymmetric uint8 quantization of x (M, K): per row (per_row = 1, scale/zp of length M) or
 * per tensor (scale/zp of length 1). Dynamic (fixed = 0): with lo = min(0, min x),
 * hi = max(0, max x), scale = (hi - lo) / 255 (1 when 0), zp = clip(rint(-lo / scale), 0, 255)
 * are computed and written. Static (fixed = 1): scale and zp are read (set at calibration).
 * Then  q = clip(rint(x * (1 / scale)) + zp, 0, 255)   (float32 math, round half to even;
 * beyond the range and +-inf saturate, NaN gives 0). A dynamic span holding a NaN gets
 * scale NaN, zp 0 and q 0: every output computed from it is NaN, as in the twin. */
static void qg_quantize_u8(const float *x, int64_t M, int64_t K, int per_row, int fixed,
                           uint8_t *q, float *scale, int32_t *zp) {
    void (*minmax)(const float *, int64_t, float *, float *) = qg_minmax_scalar;
    void (*quant)(const float *, int64_t, float, int32_t, uint8_t *) = qg_quant_scalar;
#if LA_X86
    if (qg_active >= QG_AVX512VNNI) {
        minmax = qg_minmax512;
        quant = qg_quant512;
    } else if (qg_active >= QG_AVX2) {
        minmax = qg_minmax256;
        quant = qg_quant256;
    }
#endif
    const int64_t spans = per_row ? M : 1, len = per_row ? K : M * K;
    for (int64_t s = 0; s < spans; s++) {
        if (fixed) {
            /* NumPy: q = np.clip(np.rint(x * (np.float32(1) / scale)) + zp, 0, 255) */
            quant(x + s * len, len, 1.0f / scale[s], zp[s], q + s * len);
            continue;
        }
        float lo, hi;
        minmax(x + s * len, len, &lo, &hi);
        if (lo != lo) { /* a NaN in the span: scale NaN, zero point 0, q 0 (the twin's rule) */
            scale[s] = NAN;
            zp[s] = 0;
            memset(q + s * len, 0, (size_t)len);
            continue;
        }
        float sc = (hi - lo) / 255.0f;
        if (sc == 0.0f) sc = 1.0f;
        float z = nearbyintf(-lo / sc);
        z = z < 0.0f ? 0.0f : (z > 255.0f ? 255.0f : z);
        scale[s] = sc;
        zp[s] = (int32_t)z;
        quant(x + s * len, len, 1.0f / sc, (int32_t)z, q + s * len);
    }
}
