/* gemm_train.h: float32 GEMM for training, C = op(A) op(B), row-major, any transposes.
 *
 *     C (m, n) = A' (m, k) @ B' (k, n),  A' = ta ? A^T : A,  B' = tb ? B^T : B
 *
 * A Linear layer's step runs one of each: X W (forward), X^T G_z (weight gradient) and
 * G_z W^T (input gradient). The usual blocking: A' is packed once per call into micro-panels
 * of 6 rows, K block after K block (blocks of <= KC, near-equal); each unit of 64 columns
 * packs its K block of B' into panels of 16 columns (KC x 16, 16 KB: L1) and runs a 6 x 16
 * microkernel (12 AVX2 accumulators) over them; a short last panel of <= 4 rows runs a 4 x 16
 * kernel (8 accumulators). Packing reads A and B in their own row order whatever the
 * transposes, so the four cases run the same kernels; rows and columns past m, n are zero in
 * the packs and not stored.
 *
 * Order of operations: c = 0, then c = fma(a[p], b[p], c) for p = 0, 1, ..., k-1 in order
 * (K blocks continue the same chain from C). A unit computes its columns exactly as a whole
 * call does, so a split over units (threads: the shared pool, pool.h) is bit-identical to one thread.
 * The plain C loop (no AVX2) does the same fma chain with fmaf.
 */
#ifndef LNN_GEMM_TRAIN_H
#define LNN_GEMM_TRAIN_H

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

#define LNN_GT_MR 6
#define LNN_GT_NR 16
#ifndef LNN_GT_KC
#define LNN_GT_KC 256
#endif

/* Fetch ahead what the prefetcher cannot foresee (the next unit's first K block of B', the
 * next panels' lines of A^T, the next tile's lines of C in the first K block): on by default;
 * gemm.pyx's set_fetch_ahead turns it off, for an A/B in one process
 * (benchmarks/bench_w2_parts.py --ahead-ab). Results do not depend on it. */
static int lnn_gt_ahead = 1;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(LEPTON_NO_SIMD)
#include <immintrin.h>
#define LNN_GT_AVX2 1
static int lnn_gt_have_avx2(void)
{
    static int have = -1;
    if (have < 0) have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return have;
}

/* c[0:6, 0:16] (stride ldc) = (first ? 0 : c) + pa (kc x 6) @ pb (kc x 16), fma in order. */
__attribute__((target("avx2,fma"))) static void
lnn_gt_kernel(ptrdiff_t kc, const float *pa, const float *pb, float *c, ptrdiff_t ldc, int first)
{
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (first) {
        c00 = c01 = c10 = c11 = c20 = c21 = _mm256_setzero_ps();
        c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
    } else {
        c00 = _mm256_loadu_ps(c), c01 = _mm256_loadu_ps(c + 8);
        c10 = _mm256_loadu_ps(c + ldc), c11 = _mm256_loadu_ps(c + ldc + 8);
        c20 = _mm256_loadu_ps(c + 2 * ldc), c21 = _mm256_loadu_ps(c + 2 * ldc + 8);
        c30 = _mm256_loadu_ps(c + 3 * ldc), c31 = _mm256_loadu_ps(c + 3 * ldc + 8);
        c40 = _mm256_loadu_ps(c + 4 * ldc), c41 = _mm256_loadu_ps(c + 4 * ldc + 8);
        c50 = _mm256_loadu_ps(c + 5 * ldc), c51 = _mm256_loadu_ps(c + 5 * ldc + 8);
    }
#pragma GCC unroll 4
    for (ptrdiff_t p = 0; p < kc; p++) {
        const __m256 b0 = _mm256_load_ps(pb), b1 = _mm256_load_ps(pb + 8);
        __m256 a = _mm256_broadcast_ss(pa);
        c00 = _mm256_fmadd_ps(a, b0, c00), c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(pa + 1);
        c10 = _mm256_fmadd_ps(a, b0, c10), c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(pa + 2);
        c20 = _mm256_fmadd_ps(a, b0, c20), c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(pa + 3);
        c30 = _mm256_fmadd_ps(a, b0, c30), c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(pa + 4);
        c40 = _mm256_fmadd_ps(a, b0, c40), c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(pa + 5);
        c50 = _mm256_fmadd_ps(a, b0, c50), c51 = _mm256_fmadd_ps(a, b1, c51);
        pa += LNN_GT_MR, pb += LNN_GT_NR;
    }
    _mm256_storeu_ps(c, c00), _mm256_storeu_ps(c + 8, c01);
    _mm256_storeu_ps(c + ldc, c10), _mm256_storeu_ps(c + ldc + 8, c11);
    _mm256_storeu_ps(c + 2 * ldc, c20), _mm256_storeu_ps(c + 2 * ldc + 8, c21);
    _mm256_storeu_ps(c + 3 * ldc, c30), _mm256_storeu_ps(c + 3 * ldc + 8, c31);
    _mm256_storeu_ps(c + 4 * ldc, c40), _mm256_storeu_ps(c + 4 * ldc + 8, c41);
    _mm256_storeu_ps(c + 5 * ldc, c50), _mm256_storeu_ps(c + 5 * ldc + 8, c51);
}

/* The last, short micro-panel of h <= 4 rows (m = 128 = 21 x 6 + 2): rows [0, h) of
 * c[0:h, 0:16] = (first ? 0 : c) + pa (kc x 6, rows h.. zero) @ pb, the same fma chain per
 * output as lnn_gt_kernel. Eight accumulators (4 rows) keep both FMA pipes busy at 4 cycles
 * a step where the 6-row kernel spent 6 on rows of zeros; only rows < h are read and
 * stored. */
__attribute__((target("avx2,fma"))) static void
lnn_gt_kernel4(ptrdiff_t kc, const float *pa, const float *pb, float *c, ptrdiff_t ldc, int first,
               ptrdiff_t h)
{
    __m256 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    if (!first)
        for (ptrdiff_t r = 0; r < h; r++)
            acc[2 * r] = _mm256_loadu_ps(c + r * ldc), acc[2 * r + 1] = _mm256_loadu_ps(c + r * ldc + 8);
    __m256 c00 = acc[0], c01 = acc[1], c10 = acc[2], c11 = acc[3];
    __m256 c20 = acc[4], c21 = acc[5], c30 = acc[6], c31 = acc[7];
#pragma GCC unroll 4
    for (ptrdiff_t p = 0; p < kc; p++) {
        const __m256 b0 = _mm256_load_ps(pb), b1 = _mm256_load_ps(pb + 8);
        __m256 a = _mm256_broadcast_ss(pa);
        c00 = _mm256_fmadd_ps(a, b0, c00), c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(pa + 1);
        c10 = _mm256_fmadd_ps(a, b0, c10), c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(pa + 2);
        c20 = _mm256_fmadd_ps(a, b0, c20), c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(pa + 3);
        c30 = _mm256_fmadd_ps(a, b0, c30), c31 = _mm256_fmadd_ps(a, b1, c31);
        pa += LNN_GT_MR, pb += LNN_GT_NR;
    }
    acc[0] = c00, acc[1] = c01, acc[2] = c10, acc[3] = c11;
    acc[4] = c20, acc[5] = c21, acc[6] = c30, acc[7] = c31;
    for (ptrdiff_t r = 0; r < h; r++)
        _mm256_storeu_ps(c + r * ldc, acc[2 * r]), _mm256_storeu_ps(c + r * ldc + 8, acc[2 * r + 1]);
}
#endif

/* The same tile in plain C (any CPU): the same fma chain per output. */
static void lnn_gt_kernel_c(ptrdiff_t kc, const float *pa, const float *pb, float *c,
                            ptrdiff_t ldc, int first)
{
    for (int r = 0; r < LNN_GT_MR; r++)
        for (int j = 0; j < LNN_GT_NR; j++) {
            float acc = first ? 0.0f : c[r * ldc + j];
            for (ptrdiff_t p = 0; p < kc; p++)
                acc = fmaf(pa[p * LNN_GT_MR + r], pb[p * LNN_GT_NR + j], acc);
            c[r * ldc + j] = acc;
        }
}

#if LNN_GT_AVX2
/* The 8 x 8 transpose of r[0..7] (rows) into r[0..7] (columns), in registers. */
__attribute__((target("avx2"))) static inline void lnn_gt_tr8(__m256 r[8])
{
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20), r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20), r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20), r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20), r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* dst[6 p + r] = src_r[p] for p < kc (six rows of A, a full micro-panel): 8 values of p at a
 * time, transposed in registers (rows 6 and 7 zero) and stored as 8 overlapping 8-float
 * stores, the last one cut to its 6 floats so nothing past the panel is written (a
 * neighbouring panel may be another thread's packing task). The scalar loop took ~0.35 ns
 * a value (one 4-byte store each); the same values land in the same places. */
__attribute__((target("avx2"))) static void lnn_gt_pack_a6(const float *src, ptrdiff_t lda,
                                                           ptrdiff_t kc, float *dst)
{
    ptrdiff_t p = 0;
    for (; p + 8 <= kc; p += 8, dst += 8 * LNN_GT_MR) {
        __m256 r[8];
        for (int i = 0; i < LNN_GT_MR; i++) r[i] = _mm256_loadu_ps(src + i * lda + p);
        r[6] = r[7] = _mm256_setzero_ps();
        lnn_gt_tr8(r);
        for (int j = 0; j < 7; j++) _mm256_storeu_ps(dst + j * LNN_GT_MR, r[j]);
        _mm_storeu_ps(dst + 7 * LNN_GT_MR, _mm256_castps256_ps128(r[7]));
        _mm_storel_pi((__m64 *)(dst + 7 * LNN_GT_MR + 4), _mm256_extractf128_ps(r[7], 1));
    }
    for (; p < kc; p++, dst += LNN_GT_MR)
        for (int i = 0; i < LNN_GT_MR; i++) dst[i] = src[i * lda + p];
}

/* pb[p * 16 + c] = b[(j + c) * ldb + p] for c < 8, p < kc: 8 rows of B (8 columns of B') into
 * one half of a 16-wide panel, 8 x 8 transposes in registers (the scalar loop wrote one
 * float per 64-byte line, 16 passes over the panel). */
__attribute__((target("avx2"))) static void lnn_gt_pack_bt8(const float *b, ptrdiff_t ldb,
                                                            ptrdiff_t kc, float *pb)
{
    ptrdiff_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(b + i * ldb + p);
        lnn_gt_tr8(r);
        for (int i = 0; i < 8; i++) _mm256_storeu_ps(pb + (p + i) * LNN_GT_NR, r[i]);
    }
    for (; p < kc; p++)
        for (int i = 0; i < 8; i++) pb[p * LNN_GT_NR + i] = b[i * ldb + p];
}
#endif

/* pb[q] (kc x 16) = B'[p0 : p0 + kc, j0 + 16 q : j0 + 16 q + 16], zero past column j1.
 * B is read in its own row order (rows of B', or rows of B when tb), so the hardware
 * prefetcher streams it: a B of 1.6 MB read panel by panel missed L3 on every line. */
static void lnn_gt_pack_b(const float *b, ptrdiff_t ldb, int tb, ptrdiff_t p0, ptrdiff_t kc,
                          ptrdiff_t j0, ptrdiff_t j1, float *pb)
{
    const ptrdiff_t npan = (j1 - j0 + LNN_GT_NR - 1) / LNN_GT_NR;
    const ptrdiff_t tail = (j1 - j0) - (npan - 1) * LNN_GT_NR; /* columns in the last panel */
    if (!tb) { /* B (k, n): row p of B' is row p of B */
        for (ptrdiff_t p = 0; p < kc; p++) {
            const float *src = b + (p0 + p) * ldb + j0;
            float *dst = pb + p * LNN_GT_NR;
            for (ptrdiff_t q = 0; q < npan - 1; q++)
                memcpy(dst + q * kc * LNN_GT_NR, src + q * LNN_GT_NR, LNN_GT_NR * sizeof(float));
            float *last = dst + (npan - 1) * kc * LNN_GT_NR;
            memcpy(last, src + (npan - 1) * LNN_GT_NR, (size_t)tail * sizeof(float));
            for (ptrdiff_t q = tail; q < LNN_GT_NR; q++) last[q] = 0.0f;
        }
        return;
    }
    /* B (n, k): column j of B' is row j of B, read along p */
    ptrdiff_t jv = j0; /* columns before jv are packed (8 at a time with AVX2) */
#if LNN_GT_AVX2
    if (lnn_gt_have_avx2())
        for (; jv + 8 <= j1; jv += 8)
            lnn_gt_pack_bt8(b + jv * ldb + p0, ldb, kc,
                            pb + (jv - j0) / LNN_GT_NR * kc * LNN_GT_NR + (jv - j0) % LNN_GT_NR);
#endif
    for (ptrdiff_t j = jv; j < j0 + npan * LNN_GT_NR; j++) {
        float *dst = pb + (j - j0) / LNN_GT_NR * kc * LNN_GT_NR + (j - j0) % LNN_GT_NR;
        if (j < j1) {
            const float *src = b + j * ldb + p0;
            for (ptrdiff_t p = 0; p < kc; p++) dst[p * LNN_GT_NR] = src[p];
        } else {
            for (ptrdiff_t p = 0; p < kc; p++) dst[p * LNN_GT_NR] = 0.0f;
        }
    }
}

/* pa[s] (kc x 6) = A'[i0 + 6 s : i0 + 6 s + 6, p0 : p0 + kc], zero past row i1.
 * Written in its own order (6 floats per p, one panel after the other): the 6 rows of A are
 * read side by side (A (m, k)) or 6 neighbours of each row of A (A (k, m), ta), so every
 * store is sequential (writing each row's k values 24 bytes apart cost ~3x as much). */
static void lnn_gt_pack_a(const float *a, ptrdiff_t lda, int ta, ptrdiff_t i0, ptrdiff_t i1,
                          ptrdiff_t p0, ptrdiff_t kc, float *pa)
{
    for (ptrdiff_t i = i0; i < i1; i += LNN_GT_MR, pa += kc * LNN_GT_MR) {
        const ptrdiff_t h = i1 - i < LNN_GT_MR ? i1 - i : LNN_GT_MR;
        if (h < LNN_GT_MR) { /* the last, short panel: zero rows below i1 */
            for (ptrdiff_t p = 0; p < kc; p++)
                for (ptrdiff_t r = 0; r < LNN_GT_MR; r++)
                    pa[p * LNN_GT_MR + r] =
                        r >= h ? 0.0f : ta ? a[(p0 + p) * lda + i + r] : a[(i + r) * lda + p0 + p];
        } else if (ta) { /* A (k, m): row p of A holds A'[:, p] */
            const float *src = a + p0 * lda + i;
            for (ptrdiff_t p = 0; p < kc; p++, src += lda) {
#if defined(__GNUC__) /* a strip of columns down kc rows: the line 5 panels on, ahead (a
                       * prefetch past the row or the array is harmless: it never faults) */
                if (lnn_gt_ahead) __builtin_prefetch(src + 5 * LNN_GT_MR);
#endif
                memcpy(pa + p * LNN_GT_MR, src, LNN_GT_MR * sizeof(float));
            }
        } else { /* A (m, k): six rows read side by side */
#if LNN_GT_AVX2
            if (lnn_gt_have_avx2()) {
                lnn_gt_pack_a6(a + i * lda + p0, lda, kc, pa);
                continue;
            }
#endif
            const float *r0 = a + i * lda + p0, *r1 = r0 + lda, *r2 = r1 + lda;
            const float *r3 = r2 + lda, *r4 = r3 + lda, *r5 = r4 + lda;
            float *dst = pa;
            for (ptrdiff_t p = 0; p < kc; p++, dst += LNN_GT_MR) {
                dst[0] = r0[p], dst[1] = r1[p], dst[2] = r2[p];
                dst[3] = r3[p], dst[4] = r4[p], dst[5] = r5[p];
            }
        }
    }
}

/* Part `t` of `parts` of the lines of B' rows [p0, p0 + kc), columns [j0, j1) into the
 * cache: the next K block's B, asked for while this block's tiles run, so that packing it
 * does not wait on L3 (B' rows are B's rows, or with tb B's columns). */
static inline void lnn_gt_prefetch_b(const float *b, ptrdiff_t ldb, int tb, ptrdiff_t p0,
                                     ptrdiff_t kc, ptrdiff_t j0, ptrdiff_t j1, ptrdiff_t t,
                                     ptrdiff_t parts)
{
#if defined(__GNUC__)
    if (!tb) {
        for (ptrdiff_t p = p0 + kc * t / parts; p < p0 + kc * (t + 1) / parts; p++)
            for (ptrdiff_t j = j0; j < j1; j += LNN_GT_NR) __builtin_prefetch(b + p * ldb + j);
    } else {
        const ptrdiff_t w = j1 - j0;
        for (ptrdiff_t j = j0 + w * t / parts; j < j0 + w * (t + 1) / parts; j++)
            for (ptrdiff_t p = p0; p < p0 + kc; p += LNN_GT_NR) __builtin_prefetch(b + j * ldb + p);
    }
#else
    (void)b, (void)ldb, (void)tb, (void)p0, (void)kc, (void)j0, (void)j1, (void)t, (void)parts;
#endif
}

/* ---- scratch: per thread, bounded, given back -------------------------------------------
 * A thread's scratch buffer `slot` (0: packed A, 1: packed B), at least `floats` long, 64-byte
 * aligned, is kept for the thread's next call (a fresh buffer each call page-faulted on every
 * first touch), within three bounds:
 *   - a slot-0 buffer above LNN_GT_KEEP floats is given back at the end of its call;
 *   - every LNN_GT_WINDOW requests of a slot, a buffer more than twice the largest request
 *     of that window (and above one 16 KB page group) is given back: after shapes shrink,
 *     a thread holds at most twice what its recent calls needed, not its all-time largest;
 *   - a thread's buffers are freed when it exits (a pthread key's destructor), so short-lived
 *     user threads do not leak them.
 * lnn_gt_scratch_bytes() is what all threads hold now (the test's measure). NULL if memory
 * (or the key) could not be had: the call then fails with -1 (MemoryError). */
#include <pthread.h>
#include <stdatomic.h>

#define LNN_GT_KEEP (4 << 20) /* floats: a larger A scratch is given back after its call */
#define LNN_GT_WINDOW 64      /* requests of a slot over which its need is watched */
#define LNN_GT_QUANTUM 4096   /* floats: buffers are whole multiples of it (16 KB) */

typedef struct {
    float *buf[2];
    ptrdiff_t cap[2];  /* floats held */
    ptrdiff_t peak[2]; /* largest request of the current window */
    int uses[2];       /* requests in the current window */
} lnn_gt_scratch_t;

static pthread_key_t lnn_gt_key;
static pthread_once_t lnn_gt_key_once = PTHREAD_ONCE_INIT;
static int lnn_gt_key_ok = 0;
static atomic_llong lnn_gt_held = 0; /* bytes, all threads */

static void lnn_gt_hold(lnn_gt_scratch_t *s, int slot, float *buf, ptrdiff_t cap)
{
    atomic_fetch_add(&lnn_gt_held, (long long)(cap - s->cap[slot]) * (long long)sizeof(float));
    s->buf[slot] = buf, s->cap[slot] = cap;
}

static void lnn_gt_drop(lnn_gt_scratch_t *s, int slot)
{
    free(s->buf[slot]);
    lnn_gt_hold(s, slot, NULL, 0);
}

static void lnn_gt_thread_exit(void *p)
{
    lnn_gt_scratch_t *s = (lnn_gt_scratch_t *)p;
    lnn_gt_drop(s, 0);
    lnn_gt_drop(s, 1);
    free(s);
}

static void lnn_gt_make_key(void)
{
    lnn_gt_key_ok = pthread_key_create(&lnn_gt_key, lnn_gt_thread_exit) == 0;
}

static lnn_gt_scratch_t *lnn_gt_state(void)
{
    pthread_once(&lnn_gt_key_once, lnn_gt_make_key);
    if (!lnn_gt_key_ok) return NULL;
    lnn_gt_scratch_t *s = (lnn_gt_scratch_t *)pthread_getspecific(lnn_gt_key);
    if (!s) {
        s = (lnn_gt_scratch_t *)calloc(1, sizeof *s);
        if (s && pthread_setspecific(lnn_gt_key, s) != 0) free(s), s = NULL;
    }
    return s;
}

static long long lnn_gt_scratch_bytes(void) { return atomic_load(&lnn_gt_held); }

/* `floats` >= 0: the buffer; < 0: the end of a call (slot 0 above LNN_GT_KEEP given back). */
static float *lnn_gt_scratch(int slot, ptrdiff_t floats)
{
    lnn_gt_scratch_t *s = lnn_gt_state();
    if (!s) return NULL;
    if (floats < 0) {
        if (s->cap[slot] > LNN_GT_KEEP) lnn_gt_drop(s, slot);
        return NULL;
    }
    if (floats > s->peak[slot]) s->peak[slot] = floats;
    if (++s->uses[slot] >= LNN_GT_WINDOW) { /* shapes shrank: hold no more than 2x the need */
        if (s->cap[slot] > LNN_GT_QUANTUM && s->cap[slot] > 2 * s->peak[slot]) lnn_gt_drop(s, slot);
        s->uses[slot] = 0, s->peak[slot] = 0;
    }
    if (floats > s->cap[slot]) {
        lnn_gt_drop(s, slot);
        const ptrdiff_t cap = (floats + LNN_GT_QUANTUM - 1) / LNN_GT_QUANTUM * LNN_GT_QUANTUM;
        float *buf = (float *)lnn_aligned_alloc(64, (size_t)cap * sizeof(float));
        if (buf) lnn_gt_hold(s, slot, buf, cap);
    }
    return s->buf[slot];
}

/* One call's geometry. A' is packed whole, once, K block after K block (block p0 at
 * pa + 6 * mtiles * p0); each unit of columns packs its own part of B'. */
typedef struct {
    const float *pa, *b;
    float *c;
    ptrdiff_t m, n, k, kcb, ldb;
    int tb;
    const float *a; /* A and how to read it: for the packing of A' */
    ptrdiff_t lda;
    int ta;
} lnn_gt_call_t;

#define LNN_GT_UNIT 64 /* columns per unit of work (A' is packed once for all units) */

static ptrdiff_t lnn_gt_kblock(ptrdiff_t k)
{ /* K blocks of near-equal length <= KC (784 = 4 x 196, not 3 x 256 + 16) */
    const ptrdiff_t blocks = (k + LNN_GT_KC - 1) / LNN_GT_KC;
    return (k + blocks - 1) / blocks;
}

/* Columns [j0, j1) of C; pb: scratch of kcb x 16 x ceil((j1 - j0) / 16) floats. */
static void lnn_gt_columns(const lnn_gt_call_t *G, ptrdiff_t j0, ptrdiff_t j1, float *pb)
{
    void (*kern)(ptrdiff_t, const float *, const float *, float *, ptrdiff_t, int) =
        lnn_gt_kernel_c;
#if LNN_GT_AVX2
    if (lnn_gt_have_avx2()) kern = lnn_gt_kernel;
#endif
    const ptrdiff_t m = G->m, n = G->n, mtiles = (m + LNN_GT_MR - 1) / LNN_GT_MR;
    const ptrdiff_t npan = (j1 - j0 + LNN_GT_NR - 1) / LNN_GT_NR;
    float tile[LNN_GT_MR * LNN_GT_NR] = {0};
    for (ptrdiff_t p0 = 0; p0 < G->k; p0 += G->kcb) {
        const ptrdiff_t kc = G->k - p0 < G->kcb ? G->k - p0 : G->kcb;
        const int first = p0 == 0;
        const float *pak = G->pa + LNN_GT_MR * mtiles * p0;
        lnn_gt_pack_b(G->b, G->ldb, G->tb, p0, kc, j0, j1, pb);
        const ptrdiff_t np0 = p0 + kc, nkc = G->k - np0 < G->kcb ? G->k - np0 : G->kcb;
        /* the last K block: the next unit's first one (mostly this thread's next unit; a
         * B just written by the optimizer comes from memory, and its first block had no
         * block before it to be fetched behind) */
        const ptrdiff_t nj1 = j1 + LNN_GT_UNIT < n ? j1 + LNN_GT_UNIT : n;
        for (ptrdiff_t q = 0; q < npan; q++) {
            if (nkc > 0) lnn_gt_prefetch_b(G->b, G->ldb, G->tb, np0, nkc, j0, j1, q, npan);
            else if (j1 < n && lnn_gt_ahead)
                lnn_gt_prefetch_b(G->b, G->ldb, G->tb, 0, G->kcb, j1, nj1, q, npan);
            const ptrdiff_t j = j0 + q * LNN_GT_NR;
            const ptrdiff_t w = j1 - j < LNN_GT_NR ? j1 - j : LNN_GT_NR;
            const float *pbq = pb + q * kc * LNN_GT_NR;
            for (ptrdiff_t s = 0; s < mtiles; s++) {
                const ptrdiff_t i = s * LNN_GT_MR, h = m - i < LNN_GT_MR ? m - i : LNN_GT_MR;
                const float *pas = pak + s * kc * LNN_GT_MR;
                float *cij = G->c + i * n + j;
#if defined(__GNUC__)
                /* The next tile's rows of C (below, or the next panel's top), for writing,
                 * while this one runs: the first K block stores C without reading it, and a
                 * store that misses waits for its line. A weight gradient (X^T G_z, k = the
                 * batch) is all first block: W2's 784 x 128 x 512 into a cold C ran 6-13 %
                 * faster, and 9-11 % inside W2's eager step (the step 3-6 %; thread CPU
                 * time, on and off on alternate calls or steps of one process, load 3-4);
                 * how much depends on how much of C other processes have evicted. */
                if (first && lnn_gt_ahead) {
                    const ptrdiff_t ni = s + 1 < mtiles ? i + LNN_GT_MR : 0;
                    const ptrdiff_t nj = s + 1 < mtiles ? j : j + LNN_GT_NR;
                    if (nj < j1) {
                        const ptrdiff_t nh = m - ni < LNN_GT_MR ? m - ni : LNN_GT_MR;
                        const ptrdiff_t nw = j1 - nj < LNN_GT_NR ? j1 - nj : LNN_GT_NR;
                        for (ptrdiff_t r = 0; r < nh; r++) { /* a row's 16 floats: 1-2 lines */
                            __builtin_prefetch(G->c + (ni + r) * n + nj, 1, 3);
                            __builtin_prefetch(G->c + (ni + r) * n + nj + nw - 1, 1, 3);
                        }
                    }
                }
#endif
                if (h == LNN_GT_MR && w == LNN_GT_NR) {
                    kern(kc, pas, pbq, cij, n, first);
                    continue;
                }
#if LNN_GT_AVX2
                if (h <= 4 && kern == lnn_gt_kernel) { /* a short last panel: 4-row kernel */
                    if (w == LNN_GT_NR) {
                        lnn_gt_kernel4(kc, pas, pbq, cij, n, first, h);
                        continue;
                    }
                    if (!first)
                        for (ptrdiff_t r = 0; r < h; r++)
                            memcpy(tile + r * LNN_GT_NR, cij + r * n, (size_t)w * 4);
                    lnn_gt_kernel4(kc, pas, pbq, tile, LNN_GT_NR, first, h);
                    for (ptrdiff_t r = 0; r < h; r++)
                        memcpy(cij + r * n, tile + r * LNN_GT_NR, (size_t)w * 4);
                    continue;
                }
#endif
                /* an edge tile: through a full 6 x 16 scratch tile */
                if (!first)
                    for (ptrdiff_t r = 0; r < h; r++)
                        memcpy(tile + r * LNN_GT_NR, cij + r * n, (size_t)w * 4);
                kern(kc, pas, pbq, tile, LNN_GT_NR, first);
                for (ptrdiff_t r = 0; r < h; r++)
                    memcpy(cij + r * n, tile + r * LNN_GT_NR, (size_t)w * 4);
            }
        }
    }
}

/* Unit u of a call: columns [64 u, min(64 u + 64, n)), with this thread's B scratch. */
static int lnn_gt_unit(const lnn_gt_call_t *G, ptrdiff_t u)
{
    float *pb = lnn_gt_scratch(1, G->kcb * LNN_GT_UNIT);
    if (!pb) return -1;
    const ptrdiff_t j0 = u * LNN_GT_UNIT;
    lnn_gt_columns(G, j0, G->n - j0 < LNN_GT_UNIT ? G->n : j0 + LNN_GT_UNIT, pb);
    return 0;
}

#define LNN_GT_PACK_ROWS 24 /* rows of A' per packing task (4 micro-panels) */

/* Rows [24 t, 24 t + 24) of A' packed, every K block (a task of the packing job). */
static void lnn_gt_pack_rows(const lnn_gt_call_t *G, ptrdiff_t t)
{
    const ptrdiff_t mtiles = (G->m + LNN_GT_MR - 1) / LNN_GT_MR, i0 = t * LNN_GT_PACK_ROWS;
    const ptrdiff_t i1 = G->m - i0 < LNN_GT_PACK_ROWS ? G->m : i0 + LNN_GT_PACK_ROWS;
    for (ptrdiff_t p0 = 0; p0 < G->k; p0 += G->kcb) {
        const ptrdiff_t kc = G->k - p0 < G->kcb ? G->k - p0 : G->kcb;
        float *blk = (float *)G->pa + LNN_GT_MR * mtiles * p0; /* block p0 of the scratch */
        lnn_gt_pack_a(G->a, G->lda, G->ta, i0, i1, p0, kc, blk + i0 * kc);
    }
}

/* Set up a call: this thread's scratch for A' (packed by lnn_gt_pack_rows). -1 if out of
 * memory. */
static int lnn_gt_prepare(lnn_gt_call_t *G, const float *a, int ta, const float *b, int tb,
                          float *c, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k)
{
    const ptrdiff_t mtiles = (m + LNN_GT_MR - 1) / LNN_GT_MR;
    float *pa = lnn_gt_scratch(0, mtiles * LNN_GT_MR * k);
    if (!pa) return -1;
    G->pa = pa, G->b = b, G->c = c, G->m = m, G->n = n, G->k = k;
    G->kcb = lnn_gt_kblock(k), G->ldb = tb ? k : n, G->tb = tb;
    G->a = a, G->lda = ta ? m : k, G->ta = ta;
    return 0;
}

/* ---- a call, its units on the process's one native pool (pool.h) ---------------------- */
#include "pool.h"

static int lnn_gt_unit_task(void *ctx, ptrdiff_t u)
{
    return lnn_gt_unit((const lnn_gt_call_t *)ctx, u);
}

static int lnn_gt_pack_task(void *ctx, ptrdiff_t t)
{
    lnn_gt_pack_rows((const lnn_gt_call_t *)ctx, t);
    return 0;
}

/* C (m, n) = A' B' (A' = ta ? A^T : A, B' = tb ? B^T : B; A, B, C C-contiguous) on up to
 * `threads` threads of the shared pool: A' is packed once (groups of its rows as tasks), then
 * the units (64 columns each) are claimed by whichever thread asks next, the caller included,
 * so a thread the OS has not run yet simply takes fewer (OpenBLAS splits a GEMM into fixed
 * shares: on a busy machine one late thread stalled the whole call). Every unit computes its columns exactly as
 * one thread would: bit-identical at any thread count. 0, or -1 if scratch could not be had. */
static int lnn_gemm_train_f32(const float *a, int ta, const float *b, int tb, float *c,
                              ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, int threads)
{
    if (m <= 0 || n <= 0) return 0;
    if (k <= 0) {
        memset(c, 0, (size_t)(m * n) * sizeof(float));
        return 0;
    }
    lnn_gt_call_t G;
    if (lnn_gt_prepare(&G, a, ta, b, tb, c, m, n, k) != 0) return -1;
    /* A' packed by row groups, on the pool too when it is large enough to be worth a job
     * (at 2 threads packing W2's 128 x 784 input on the caller alone was ~6 % of the call) */
    const ptrdiff_t groups = (m + LNN_GT_PACK_ROWS - 1) / LNN_GT_PACK_ROWS;
    lnn_parallel(lnn_gt_pack_task, &G, groups, m * k >= (1 << 16) ? threads : 1);
    const ptrdiff_t units = (n + LNN_GT_UNIT - 1) / LNN_GT_UNIT;
    const int rc = lnn_parallel(lnn_gt_unit_task, &G, units, threads);
    lnn_gt_scratch(0, -1);
    return rc ? -1 : 0;
}

#endif /* LNN_GEMM_TRAIN_H */
