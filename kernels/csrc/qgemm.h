/* qgemm.h -- exact int8 GEMM with a fused dequantize + bias + activation epilogue.
 *
 * Included (header-only, everything static) by kernels/qgemm.pyx -> lepton_nn.kernels._qgemm.
 * The Cython wrapper validates every argument; nothing here checks its input.
 *
 * Math, for a row m of activations and an output channel n:
 *     acc[m, n] = sum_k (a[m, k] - zp[m]) * w[n, k]           exact, int32
 *              = sum_k a[m, k] w[n, k] - zp[m] * colsum[n]     (colsum[n] = sum_k w[n, k])
 *     out[m, n] = act(acc[m, n] * (xs[m] * ws[n]) + bias[n])  float32
 * a is uint8 (or int8, handled as a ^ 0x80 = a + 128 with zp + 128), w is int8. The int32
 * result is exact while |acc| < 2^31, i.e. K <= 65793; intermediate sums may wrap (two's
 * complement arithmetic is modular), the corrected result does not.
 *
 * Packed weights (one layout for every ISA): w (N, K) int8 becomes
 *     packed[nb, g, c, j] = w[16 nb + c, 4 g + j]    shape (ceil(N/16), ceil(K/4), 16, 4)
 * zero padded. One 64-byte row packed[nb, g] is one zmm operand of vpdpbusd (16 columns x 4
 * k) and one row of an AMX B tile (16 rows of it are a 64-k slab of 16 columns).
 *
 * ISA paths, picked once (qg_init) from CPUID and the OS:
 *   QG_AMX        AMX-INT8 tiles (Linux, after arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA))
 *   QG_AVX512VNNI vpdpbusd zmm, 6 x 64 register tile
 *   QG_AVXVNNI    vpdpbusd ymm (VEX), 4 x 16 register tile
 *   QG_AVX2       exact without VNNI: u8/s8 widened to s16, vpmaddwd; one row: a GEMV on
 *                 signed activations, vpmaddubsw(|a - 128|, w ^ sign) (never saturates)
 *   QG_PORTABLE   plain C
 */
#ifndef LEPTON_QGEMM_H
#define LEPTON_QGEMM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "simd_act.h"

#define QG_PORTABLE 0
#define QG_AVX2 1
#define QG_AVXVNNI 2
#define QG_AVX512VNNI 3
#define QG_AMX 4
#define QG_NISA 5

#if LA_X86 && defined(__x86_64__) && defined(__linux__) &&                                         \
    ((defined(__clang__) && __clang_major__ >= 13) || (!defined(__clang__) && __GNUC__ >= 11))
#define QG_HAVE_AMX 1
#include <sys/syscall.h>
#include <unistd.h>
long syscall(long number, ...); /* declared by unistd.h only with _GNU_SOURCE */
#else
#define QG_HAVE_AMX 0
#endif

#if LA_X86
#include <cpuid.h>
#endif

#if defined(__unix__) || defined(__APPLE__)
#define QG_HAVE_PTHREAD 1
#include <pthread.h>
#else
#define QG_HAVE_PTHREAD 0
#endif

typedef struct {
    const uint8_t *a; /* (M, K) activations, row stride K; int8 bytes when a_signed */
    const int8_t *b;  /* packed weights, see above */
    int64_t M, N, K;
    int a_signed;
    const float *xs; /* x scale: xs[m * xs_step] (step 1: per row, 0: per tensor) */
    int64_t xs_step;
    const int32_t *zp; /* x zero point: zp[m * zp_step] */
    int64_t zp_step;
    const float *ws;   /* (N,) weight scale per output channel */
    const int32_t *cs; /* (N,) column sums of w; NULL when every row offset is 0 */
    const float *bias; /* (N,) or NULL */
    int act;           /* simd_act.h code */
    float *outf;       /* (M, N) float32 output ... */
    int32_t *outi;     /* ... or (M, N) int32 output (raw GEMM: xs, ws, bias unused) */
} qg_args;

/* a path over the column blocks [nb_lo, nb_hi): 0, or -1 when its scratch could not be
 * allocated (then nothing of its output is written: the caller raises MemoryError) */
typedef int (*qg_fn)(const qg_args *, int64_t, int64_t);

static inline int64_t qg_kp(int64_t K) { return (K + 3) & ~(int64_t)3; }

/* offset subtracted from row m: zero point, +128 for int8 activations read as a ^ 0x80 */
static inline int32_t qg_off(const qg_args *p, int64_t m) {
    return p->zp[m * p->zp_step] + (p->a_signed ? 128 : 0);
}

static inline uint32_t qg_load4(const uint8_t *s) {
    uint32_t v;
    memcpy(&v, s, 4);
    return v;
}

/* 64-byte aligned allocation on any C library (aligned_alloc is missing on some) */
LA_UNUSED static void *qg_amalloc(size_t n) {
    void *raw = lnn_malloc(n + 64 + sizeof(void *));
    if (!raw) return NULL;
    uintptr_t a = ((uintptr_t)raw + sizeof(void *) + 63) & ~(uintptr_t)63;
    ((void **)a)[-1] = raw;
    return (void *)a;
}

LA_UNUSED static void qg_afree(void *p) {
    if (p) free(((void **)p)[-1]);
}

/* the last, partial 4-byte group of a row (k = 4G .. K-1), zero filled */
static inline uint32_t qg_load_tail(const uint8_t *s, int64_t n) {
    uint32_t v = 0;
    memcpy(&v, s, (size_t)n);
    return v;
}

/* ============================================================== portable C */

static inline void qg_epi_scalar(const qg_args *p, int64_t m, int64_t n, uint32_t acc, int32_t off,
                                 float xs) {
    /* acc - zp * colsum[n], then out = act(acc * (xs * ws[n]) + bias[n]) */
    if (p->cs) acc -= (uint32_t)off * (uint32_t)p->cs[n];
    if (p->outi) {
        p->outi[m * p->N + n] = (int32_t)acc;
        return;
    }
    float y = (float)(int32_t)acc * (xs * p->ws[n]);
    if (p->bias) y += p->bias[n];
    p->outf[m * p->N + n] = la_act1(y, p->act);
}

static int qg_run_portable(const qg_args *p, int64_t nb_lo, int64_t nb_hi) {
    const int64_t K = p->K, Kp = qg_kp(K), G = Kp >> 2, N = p->N;
    const uint8_t flip = p->a_signed ? 0x80 : 0;
    for (int64_t m = 0; m < p->M; m++) {
        /* the row as 4-byte groups, zero padded, int8 flipped to uint8 */
        const uint8_t *a = p->a + m * K;
        const int32_t off = qg_off(p, m);
        const float xs = p->xs[m * p->xs_step];
        for (int64_t nb = nb_lo; nb < nb_hi; nb++) {
            /* acc = a[m] @ w[16 nb : 16 nb + 16].T; uint32 wraps like the SIMD paths, and one
             * group's 4-term sum (|.| <= 4 * 255 * 128) is exact in int32 */
            uint32_t acc[16] = {0};
            const int8_t *b = p->b + nb * 16 * Kp;
            for (int64_t g = 0; g < G; g++) {
                uint8_t a4[4] = {0, 0, 0, 0};
                for (int j = 0; j < 4 && 4 * g + j < K; j++) a4[j] = a[4 * g + j] ^ flip;
                const int32_t a0 = a4[0], a1 = a4[1], a2 = a4[2], a3 = a4[3];
                const int8_t *bg = b + g * 64;
                for (int c = 0; c < 16; c++)
                    acc[c] += (uint32_t)(a0 * bg[4 * c] + a1 * bg[4 * c + 1] + a2 * bg[4 * c + 2] +
                                         a3 * bg[4 * c + 3]);
            }
            for (int c = 0; c < 16 && nb * 16 + c < N; c++)
                qg_epi_scalar(p, m, nb * 16 + c, acc[c], off, xs);
        }
    }
    return 0;
}

#if LA_X86
/* ============================================================== AVX-512 VNNI */
#define QG_T512 "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"
#ifndef QG_MR512
#define QG_MR512 6 /* rows per register tile */
#endif
#ifndef QG_NV512
#define QG_NV512 4 /* 16-column blocks per register tile: 6 x 4 = 24 zmm accumulators */
#endif
#ifndef QG_MC512
#define QG_MC512 96 /* rows per L2 block of A */
#endif

static inline __attribute__((target(QG_T512), always_inline)) void
qg_epi512(const qg_args *p, int64_t m, int64_t n, __m512i acc, int32_t off, float xs) {
    const int64_t rem = p->N - n;
    const __mmask16 k = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
    /* acc -= zp[m] * colsum[n : n + 16] */
    if (p->cs && off)
        acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(off),
                                                       _mm512_maskz_loadu_epi32(k, p->cs + n)));
    if (p->outi) {
        _mm512_mask_storeu_epi32(p->outi + m * p->N + n, k, acc);
        return;
    }
    /* out[m, n : n + 16] = act(acc * (xs * ws) + bias) */
    __m512 s = _mm512_mul_ps(_mm512_set1_ps(xs), _mm512_maskz_loadu_ps(k, p->ws + n));
    __m512 b = p->bias ? _mm512_maskz_loadu_ps(k, p->bias + n) : _mm512_setzero_ps();
    __m512 y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), s, b);
    _mm512_mask_storeu_ps(p->outf + m * p->N + n, k, la_act512(y, p->act));
}

/* One MR x (16 NV) register tile over all of K; MR and NV are constants after inlining. */
static inline __attribute__((target(QG_T512), always_inline)) void
qg_tile512(const qg_args *p, int64_t m0, const int MR, int64_t nb0, const int NV) {
    const int64_t K = p->K, Kp = qg_kp(K), G = K >> 2, bstep = 16 * Kp;
    const uint32_t flip = p->a_signed ? 0x80808080u : 0u;
    const uint8_t *ar[QG_MR512];
    const int8_t *bp = p->b + nb0 * bstep;
    __m512i acc[QG_MR512][QG_NV512];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        ar[r] = p->a + (m0 + r) * K;
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_si512();
    }
    /* acc[r, 16 v + c] += sum_j a[m0 + r, 4 g + j] * w[16 (nb0 + v) + c, 4 g + j]
     * (g == G is the partial last group when K % 4 != 0; the padded weights are zero) */
    const int64_t Gend = G + ((K & 3) != 0);
    for (int64_t g = 0; g < Gend; g++) {
        __m512i bv[QG_NV512];
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_si512(bp + v * bstep + g * 64);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            const uint32_t a4 =
                g < G ? qg_load4(ar[r] + 4 * g) : qg_load_tail(ar[r] + 4 * g, K & 3);
            const __m512i av = _mm512_set1_epi32((int)(a4 ^ flip));
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, bv[v]);
        }
    }
    /* spill once with constant indices (keeps acc in registers inside the loop above) */
    __m512i done[QG_MR512 * QG_NV512];
#pragma GCC unroll 32
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) done[r * NV + v] = acc[r][v];
    for (int r = 0; r < MR; r++) {
        const int32_t off = qg_off(p, m0 + r);
        const float xs = p->xs[(m0 + r) * p->xs_step];
        for (int v = 0; v < NV; v++) {
            const int64_t n = (nb0 + v) * 16;
            if (n < p->N) qg_epi512(p, m0 + r, n, done[r * NV + v], off, xs);
        }
    }
}

#define QG_C512(R, V)                                                                              \
    case (R) * 16 + (V): qg_tile512(p, m0, R, nb0, V); break;
#define QG_C512_R(R) QG_C512(R, 1) QG_C512(R, 2) QG_C512(R, 3) QG_C512(R, 4)

__attribute__((target(QG_T512))) static int qg_run_avx512vnni(const qg_args *p, int64_t nb_lo,
                                                               int64_t nb_hi) {
    /* out = epilogue(a @ w.T): L2 blocks of QG_MC512 rows, then 64-column weight panels */
    for (int64_t mc = 0; mc < p->M; mc += QG_MC512) {
        const int64_t mc_end = mc + QG_MC512 < p->M ? mc + QG_MC512 : p->M;
        for (int64_t nb0 = nb_lo; nb0 < nb_hi; nb0 += QG_NV512) {
            const int nv = (int)(nb_hi - nb0 < QG_NV512 ? nb_hi - nb0 : QG_NV512);
            for (int64_t m0 = mc; m0 < mc_end; m0 += QG_MR512) {
                const int mr = (int)(mc_end - m0 < QG_MR512 ? mc_end - m0 : QG_MR512);
                switch (mr * 16 + nv) {
                    QG_C512_R(1)
                    QG_C512_R(2)
                    QG_C512_R(3)
                    QG_C512_R(4)
                    QG_C512_R(5)
                    QG_C512_R(6)
                default: break;
                }
            }
        }
    }
    return 0;
}
#if QG_MR512 != 6 || QG_NV512 != 4
#error "update the QG_C512 switch in qg_run_avx512vnni"
#endif

/* ============================================================== 256-bit epilogue */
/* Whole-vector loads and stores: a full tile reads and writes its 8 columns directly, the
 * row's last columns (n + 8 > N) go through 8-lane buffers, zero padded. AMD's masked loads
 * and stores (vpmaskmovd, vmaskmovps) are microcoded and were the epilogue's cost. */
static inline __attribute__((target("avx2,fma"), always_inline)) void
qg_epi256_full(const qg_args *p, const int32_t *cs, const float *ws, const float *bias,
               int32_t *outi, float *outf, __m256i acc, int32_t off, float xs) {
    /* acc -= zp[m] * colsum[n : n + 8] */
    if (cs && off)
        acc = _mm256_sub_epi32(acc, _mm256_mullo_epi32(_mm256_set1_epi32(off),
                                                       _mm256_loadu_si256((const __m256i *)cs)));
    if (outi) {
        _mm256_storeu_si256((__m256i *)outi, acc); /* NumPy: out[m, n : n + 8] = acc */
        return;
    }
    /* NumPy: out[m, n : n + 8] = act(acc * (xs * ws[n : n + 8]) + bias[n : n + 8]) */
    __m256 s = _mm256_mul_ps(_mm256_set1_ps(xs), _mm256_loadu_ps(ws));
    __m256 b = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), s, b);
    _mm256_storeu_ps(outf, la_act256(y, p->act));
}

static inline __attribute__((target("avx2,fma"), always_inline)) void
qg_epi256(const qg_args *p, int64_t m, int64_t n, __m256i acc, int32_t off, float xs) {
    const int64_t rem = p->N - n;
    int32_t *oi = p->outi ? p->outi + m * p->N + n : NULL;
    float *of = p->outi ? NULL : p->outf + m * p->N + n;
    if (rem >= 8) {
        qg_epi256_full(p, p->cs ? p->cs + n : NULL, p->ws + n, p->bias ? p->bias + n : NULL, oi,
                       of, acc, off, xs);
        return;
    }
    /* the last rem < 8 columns through zero-padded buffers, the same vector code:
     * NumPy: cb[:rem], wb[:rem], bb[:rem] = cs[n:], ws[n:], bias[n:] (the rest 0) */
    int32_t cb[8] = {0}, ob[8];
    float wb[8] = {0}, bb[8] = {0}, fb[8];
    for (int64_t i = 0; i < rem; i++) {
        if (p->cs) cb[i] = p->cs[n + i];
        if (!p->outi) wb[i] = p->ws[n + i];
        if (p->bias && !p->outi) bb[i] = p->bias[n + i];
    }
    qg_epi256_full(p, p->cs ? cb : NULL, wb, p->bias ? bb : NULL, oi ? ob : NULL, oi ? NULL : fb,
                   acc, off, xs);
    for (int64_t i = 0; i < rem; i++) { /* NumPy: out[m, n:] = buffer[:rem] */
        if (oi) oi[i] = ob[i];
        else of[i] = fb[i];
    }
}

/* ============================================================== AVX2, exact without VNNI */
#include "qgemm_avx2.h"

/* ============================================================== AVX-VNNI (VEX ymm) */
#define QGV_NAME qg_run_avxvnni
#define QGV_TARGET "avx2,fma,avxvnni"
#define QGV_DPBUSD _mm256_dpbusd_avx_epi32
#include "qgemm_vnni256.h"
/* The same code with the EVEX encoding, so this path's logic is tested on AVX-512 VNNI
 * machines that lack AVX-VNNI (only the dot-product instruction differs). */
#define QGV_NAME qg_run_avxvnni_evex
#define QGV_TARGET "avx2,fma,avx512vl,avx512vnni"
#define QGV_DPBUSD _mm256_dpbusd_epi32
#include "qgemm_vnni256.h"
#endif /* LA_X86 */

/* ============================================================== AMX-INT8 */
#if QG_HAVE_AMX
#define QGA_NAME qg_run_amx
#define QGA_TARGET "amx-tile,amx-int8," QG_T512
#define QGA_EMULATE 0
#include "qgemm_amx.h"
#endif
#if LA_X86
/* Tile instructions emulated in C, same driver: tests the AMX blocking on any AVX-512 CPU. */
#define QGA_NAME qg_run_amx_emulated
#define QGA_TARGET QG_T512
#define QGA_EMULATE 1
#include "qgemm_amx.h"
#endif

/* ============================================================== dispatch */
static qg_fn qg_impl[QG_NISA];
static int qg_cpu = 1 << QG_PORTABLE; /* bit mask of usable paths */
static int qg_active = QG_PORTABLE;

#if LA_X86
static uint64_t qg_xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

/* Detect the CPU (and OS) features once; returns the mask of usable paths. */
static int qg_init(void) {
    int mask = 1 << QG_PORTABLE;
    qg_impl[QG_PORTABLE] = qg_run_portable;
#if LA_X86
    unsigned int a, b, c, d;
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2) {
        mask |= 1 << QG_AVX2;
        qg_impl[QG_AVX2] = qg_run_avx2;
        /* AVX-VNNI: CPUID.(EAX=7, ECX=1):EAX[4]; the OS saves ymm (implied by avx2 above) */
        if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4))) {
            mask |= 1 << QG_AVXVNNI;
            qg_impl[QG_AVXVNNI] = qg_run_avxvnni;
        }
    }
    const int avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                       __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                       __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
    if (avx512) {
        mask |= 1 << QG_AVX512VNNI;
        qg_impl[QG_AVX512VNNI] = qg_run_avx512vnni;
    }
#if QG_HAVE_AMX
    /* AMX-TILE and AMX-INT8: CPUID.(EAX=7, ECX=0):EDX[24, 25]; the OS must enable the tile
     * state in XCR0 (bits 17, 18) and grant this process the tile data (Linux >= 5.16). */
    if (avx512 && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 24)) && (d & (1u << 25)) &&
        __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27)) /* OSXSAVE */ &&
        (qg_xgetbv0() & 0x60000) == 0x60000 &&
        syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0) {
        mask |= 1 << QG_AMX;
        qg_impl[QG_AMX] = qg_run_amx;
    }
#endif
#endif
    qg_cpu = mask;
    for (int i = QG_NISA - 1; i >= 0; i--)
        if (mask & (1 << i)) {
            qg_active = i;
            break;
        }
    return mask;
}

/* Make path `isa` active, or the best usable one below it. Returns the active path. */
static int qg_set_isa(int isa) {
    if (isa >= QG_NISA) isa = QG_NISA - 1;
    while (isa > 0 && !(qg_cpu & (1 << isa))) isa--;
    if (isa < 0) isa = 0;
    qg_active = isa;
    return isa;
}

/* Test hook: route `isa` (AMX or AVX-VNNI) to its emulated twin on an AVX-512 VNNI CPU.
 * Returns 1 when done. */
static int qg_use_emulation(int isa) {
#if LA_X86
    if (!(qg_cpu & (1 << QG_AVX512VNNI))) return 0;
    if (isa == QG_AMX)
        qg_impl[QG_AMX] = qg_run_amx_emulated;
    else if (isa == QG_AVXVNNI)
        qg_impl[QG_AVXVNNI] = qg_run_avxvnni_evex;
    else
        return 0;
    qg_cpu |= 1 << isa;
    qg_active = isa;
    return 1;
#else
    (void)isa;
    return 0;
#endif
}

/* Threads: a call is cut into tasks (row block, column chunk), row block major: row blocks
 * of at most QG_TASK_ROWS rows (a multiple of 6, the AVX2 tile's height, but the last), column
 * chunks of an even number of 16-column blocks (AMX tiles take 2), about QG_TASKS_PER_THREAD
 * tasks a thread. The shared pool (pool.h) gives thread t the t-th run of tasks first (its
 * columns of its row blocks: the same part of W call after call), then what is left of the
 * others'; tasks are short, so a thread that starts late or runs slow (a vCPU waking up) holds
 * the call up by one short task at most, and the others take its share. On AVX2 a thread
 * widens a row block once, into its own slot of the call's scratch (qg_pack_avx2), and runs
 * every column chunk of that block it claims from there; other paths run each task on its
 * rows directly. Rows and columns are independent and every output comes from the same code:
 * the same bits at any thread count. */
#include "pool.h"

/* Below this many multiply-adds a second thread costs more than it saves (M = 1,
   K = N = 1024 runs in about 12 us). */
#define QG_MIN_PARALLEL_MACS (1LL << 25)
#define QG_TASK_ROWS 96       /* rows per task, at most (qgemm_avx2.h's QG_MC2) */
#define QG_TASKS_PER_THREAD 16 /* W6 at M = 64, 2 threads: 32 tasks of ~30 us */

#if LA_X86 && defined(__GNUC__)
#define QG_SLOTS 1 /* per-thread widened rows (needs _Thread_local and __atomic builtins) */
#else
#define QG_SLOTS 0
#endif

typedef struct {
    qg_fn f;
    const qg_args *p;
    int64_t nb, width, chunks, rows; /* blocks; blocks per chunk, chunks per row block, rows
                                        per row block */
    int threads;
    uint64_t id;          /* this call's number: a thread's slot is valid for it alone */
    unsigned char *slots; /* AVX2: `threads` slots of slot_bytes, or NULL */
    int64_t slot_bytes, aw_bytes;
    int taken; /* slots handed out */
} qg_job;

#if QG_SLOTS
static uint64_t qg_job_seq; /* calls so far (atomic) */
/* this thread's slot in call `id`, and the row block its slot holds widened (-1: none) */
static _Thread_local struct {
    uint64_t id;
    int slot;
    int64_t block;
} qg_mine;
#endif

/* task t: rows [m0, m1) of row block t / chunks, column blocks [lo, hi) of chunk t % chunks */
static int qg_task(void *ctx, ptrdiff_t t) {
    const qg_job *j = (const qg_job *)ctx;
    const qg_args *p = j->p;
    const int64_t rb = t / j->chunks, c = t % j->chunks;
    const int64_t m0 = rb * j->rows, m1 = m0 + j->rows < p->M ? m0 + j->rows : p->M;
    const int64_t lo = c * j->width, hi = lo + j->width < j->nb ? lo + j->width : j->nb;
    if (hi <= lo || m1 <= m0) return 0;
#if QG_SLOTS
    if (j->slots) {
        if (qg_mine.id != j->id) { /* this thread's first task of the call: take a slot */
            qg_mine.id = j->id;
            qg_mine.slot = __atomic_fetch_add(&((qg_job *)j)->taken, 1, __ATOMIC_RELAXED);
            qg_mine.block = -1;
        }
        if (qg_mine.slot < j->threads) {
            unsigned char *slot = j->slots + qg_mine.slot * j->slot_bytes;
            int16_t *aw = (int16_t *)slot;
            if (qg_mine.block != rb) { /* NumPy: aw = widened(a[m0 : m1]) */
                qg_pack_avx2(p, m0, m1, aw);
                qg_mine.block = rb;
            }
            /* NumPy: out[m0 : m1, 16 lo : 16 hi] = the product on those rows and columns */
            qg_block_avx2(p, m0, m1, aw, (__m256i *)(slot + j->aw_bytes), lo, hi);
            return 0;
        }
    }
#endif
    /* NumPy: out[m0 : m1] = the same product on a[m0 : m1], columns [16 lo, 16 hi) */
    qg_args s = *p;
    s.M = m1 - m0;
    s.a = p->a + m0 * p->K;
    s.xs = p->xs + m0 * p->xs_step;
    s.zp = p->zp + m0 * p->zp_step;
    if (p->outf) s.outf = p->outf + m0 * p->N;
    if (p->outi) s.outi = p->outi + m0 * p->N;
    return j->f(&s, lo, hi);
}

/* Run the active path over all output columns, on up to `nthreads` threads. 0, or -1 when a
 * path's scratch could not be allocated (the output is then not all written). */
static int qg_run(const qg_args *p, int nthreads) {
    const int64_t NB = (p->N + 15) >> 4;
    if (p->M == 0 || NB == 0) return 0;
    qg_fn f = p->K == 0 ? qg_run_portable : qg_impl[qg_active];
    const double macs = (double)p->M * (double)p->K * (double)p->N;
    const int threads = (int)(nthreads < (NB + 1) / 2 ? nthreads : (NB + 1) / 2);
    if (threads < 2 || macs < (double)QG_MIN_PARALLEL_MACS) {
        return f(p, 0, NB);
    }
    /* NumPy: blocks = ceil(M / 96); rows = ceil(ceil(M / blocks) / 6) * 6;
     * chunks ~ 8 threads / blocks (at least 1), width = even ceil(NB / chunks) */
    qg_job j = {f, p, NB, 0, 0, 0, threads, 0, NULL, 0, 0, 0};
    const int64_t blocks = (p->M + QG_TASK_ROWS - 1) / QG_TASK_ROWS;
    j.rows = ((p->M + blocks - 1) / blocks + 5) / 6 * 6;
    const int64_t want = QG_TASKS_PER_THREAD * threads;
    int64_t chunks = (want + blocks - 1) / blocks;
    j.width = (NB + chunks - 1) / chunks;
    j.width += j.width & 1;
    j.chunks = (NB + j.width - 1) / j.width;
    const int64_t tasks = (p->M + j.rows - 1) / j.rows * j.chunks;
#if QG_SLOTS
    if (f == qg_run_avx2 && !qg_avx2_gemv(p)) {
        j.aw_bytes = (qg_aw_elems(j.rows, p->K) * (int64_t)sizeof(int16_t) + 63) & ~(int64_t)63;
        j.slot_bytes = j.aw_bytes + qg_sc_ymm(j.rows) * (int64_t)sizeof(__m256i);
        j.slots = (unsigned char *)qg_amalloc((size_t)(threads * j.slot_bytes));
        j.id = __atomic_add_fetch(&qg_job_seq, 1, __ATOMIC_RELAXED);
    }
#endif
    const int rc = lnn_parallel(qg_task, &j, tasks, threads);
    qg_afree(j.slots);
    return rc ? -1 : 0;
}

/* ============================================================== activation quantization */

/* lo = min(0, min x), hi = max(0, max x) over n floats */
static void qg_minmax_scalar(const float *x, int64_t n, float *lo, float *hi) {
    float l = 0.0f, h = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        l = x[i] < l ? x[i] : l;
        h = x[i] > h ? x[i] : h;
    }
    *lo = l;
    *hi = h;
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
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        const __m512 v = _mm512_maskz_loadu_ps(k, x + i); /* masked lanes read 0: harmless */
        l = _mm512_min_ps(l, v);
        h = _mm512_max_ps(h, v);
    }
    *lo = _mm512_reduce_min_ps(l);
    *hi = _mm512_reduce_max_ps(h);
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
    __m256 l = _mm256_setzero_ps(), h = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        l = _mm256_min_ps(l, v);
        h = _mm256_max_ps(h, v);
    }
    float lb[8], hb[8], lt, ht;
    _mm256_storeu_ps(lb, l);
    _mm256_storeu_ps(hb, h);
    qg_minmax_scalar(x + i, n - i, &lt, &ht);
    for (int j = 0; j < 8; j++) {
        lt = lb[j] < lt ? lb[j] : lt;
        ht = hb[j] > ht ? hb[j] : ht;
    }
    *lo = lt;
    *hi = ht;
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
 * beyond the range and +-inf saturate, NaN gives 0). */
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
        float sc = (hi - lo) / 255.0f;
        if (sc == 0.0f) sc = 1.0f;
        float z = nearbyintf(-lo / sc);
        z = z < 0.0f ? 0.0f : (z > 255.0f ? 255.0f : z);
        scale[s] = sc;
        zp[s] = (int32_t)z;
        quant(x + s * len, len, 1.0f / sc, (int32_t)z, q + s * len);
    }
}

#endif /* LEPTON_QGEMM_H */
