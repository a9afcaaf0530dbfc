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
#include "qgemm_avx512.h"

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

/* A register tile's epilogue, out of line: rows m0 .. m0 + rows - 1, each nv vectors of 8
 * columns from column n (acc[r nv + v]; a vector starting at or past N is not stored), row
 * m's offset qg_off(p, m) + dz. One copy of the activations' code for every tile shape of the
 * 256-bit paths: inlined into each (6 tile shapes of the AVX2 kernel, 4 of the GEMV, 4 of
 * each VNNI twin) it was ~200 KB of the extension; the call costs a few instructions a tile. */
__attribute__((target("avx2,fma"), noinline)) static void
qg_epi256_tile(const qg_args *p, int64_t m0, int rows, int64_t n, const __m256i *acc, int nv,
               int32_t dz) {
    for (int r = 0; r < rows; r++) {
        const int32_t off = qg_off(p, m0 + r) + dz;
        const float xs = p->xs[(m0 + r) * p->xs_step];
        for (int v = 0; v < nv && n + 8 * v < p->N; v++)
            qg_epi256(p, m0 + r, n + 8 * v, acc[r * nv + v], off, xs);
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

/* ============================================================== threads */
#include "qgemm_threads.h"

/* ============================================================== activation quantization */
#include "qgemm_quant.h"

#endif /* LEPTON_QGEMM_H */
