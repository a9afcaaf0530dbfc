/* qgemm_parts.c: where one thread's W6 call ((M, 1024) x (1024, 1024) uint8 x int8 -> float32,
 * ReLU epilogue; kernels/csrc/qgemm_avx2.h) spends its time, outside Python. Per M, the
 * median of 15 rounds (each timed with the thread's CPU time) of:
 *   call      qg_run_avx2 on all columns (what qlinear runs at 1 thread, without Python)
 *   pack      qg_pack_avx2 on every row block (the widening of A to int16)
 *   core      the full-tile steps alone (qg_steps_6x8 over every 6-row tile, 16-column block
 *             and K block, as qg_block_avx2 orders them; no epilogue, remainder rows as full
 *             tiles): the GEMM's multiply-adds at the kernel's own pace
 *   int32     qg_run_avx2 with int32 output (raw GEMM: no dequantize, bias, ReLU)
 * and the clock-equivalent ceiling of the tile's step (vpmaddwd + vpaddd, 8 independent
 * accumulators, registers only; q8_step_ceiling.c's `madd`) as multiply-adds per ns, and the
 * full tile's steps over one K block held in L1 (the tile's own ceiling, memory aside).
 * Under valgrind --tool=callgrind with QPARTS_ROUNDS=1 the inclusive instruction counts give
 * the same parts load-proof: qg_run_avx2 covers 4 calls (2 float32, 2 int32 output),
 * run_pack and run_core 2 each; callgrind_annotate --auto=yes splits qg_block_avx2 into the
 * steps (the asm line), the epilogue (qgemm.h's lines) and the rest. Built as setup.py does:
 *
 *     gcc -O3 -fno-math-errno -fno-trapping-math -std=gnu11 -fwrapv -Ikernels/csrc \
 *         benchmarks/qgemm_parts.c -o /tmp/qparts -lm && /tmp/qparts [M ...]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <time.h>

#include "qgemm.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define MAXR 15
static int ROUNDS = MAXR; /* QPARTS_ROUNDS=1: one timed call each (for callgrind) */
#define CLOB                                                                                       \
    "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",      \
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"
#define MADD(acc, t)                                                                               \
    "vpmaddwd %%ymm0, %%ymm1, %%ymm" #t "\n vpaddd %%ymm" #t ", %%ymm" #acc ", %%ymm" #acc "\n"
#define EIGHT(S) S(8, 4) S(9, 5) S(10, 6) S(11, 7) S(12, 4) S(13, 5) S(14, 6) S(15, 7)
__attribute__((noinline)) static void ceiling_loop(long n) {
    __asm__ volatile("1:\n" EIGHT(MADD) "dec %0\n jnz 1b\n" : "+r"(n) : : CLOB);
}

static const qg_args *g_p;
static int16_t *g_aw;
static __m256i *g_sc;

static void run_call(void) { qg_run_avx2(g_p, 0, (g_p->N + 15) >> 4); }
static void run_pack(void) {
    for (int64_t mc = 0; mc < g_p->M; mc += QG_MC2)
        qg_pack_avx2(g_p, mc, mc + QG_MC2 < g_p->M ? mc + QG_MC2 : g_p->M, g_aw);
}
__attribute__((target("avx2,fma"))) static void run_core(void) {
    const int64_t Kp = qg_kp(g_p->K), G = Kp >> 2, NB = (g_p->N + 15) >> 4;
    for (int64_t mc = 0; mc < g_p->M; mc += QG_MC2) {
        const int64_t mc_end = mc + QG_MC2 < g_p->M ? mc + QG_MC2 : g_p->M;
        for (int64_t nb = 0; nb < NB; nb++)
            for (int64_t g0 = 0; g0 < G; g0 += QG_KC2) {
                const int64_t g1 = G - g0 < QG_KC2 ? G : g0 + QG_KC2;
                for (int64_t m0 = mc; m0 < mc_end; m0 += QG_MR2)
                    for (int q0 = 0; q0 < 4; q0 += 2) {
                        const int16_t *at = g_aw + (m0 - mc) * Kp + g0 * QG_MR2 * 4;
                        const int8_t *bp = g_p->b + nb * 16 * Kp + 16 * q0 + g0 * 64;
                        __m256i *st = g_sc + (m0 - mc) / QG_MR2 * QG_MR2 * 4 + q0;
                        qg_steps_6x8(at, bp, g1 - g0, g0 ? st : NULL, st);
                    }
            }
    }
}

/* the full tile over one K block (QG_KC2 steps: 3 KiB of widened rows, 4 KiB of weights, in
 * L1) 1000 times: the tile's own ceiling, memory aside */
__attribute__((target("avx2,fma"))) static void run_l1(void) {
    for (int i = 0; i < 1000; i++) qg_steps_6x8(g_aw, g_p->b, QG_KC2, g_sc, g_sc);
}

static double median_time(void (*f)(void)) {
    double t[MAXR];
    f();
    for (int r = 0; r < ROUNDS; r++) {
        const double t0 = now();
        f();
        t[r] = now() - t0;
    }
    qsort(t, ROUNDS, sizeof t[0], cmp);
    return t[ROUNDS / 2];
}

int main(int argc, char **argv) {
    const int64_t K = 1024, N = 1024, Kp = qg_kp(K), NB = (N + 15) >> 4;
    int64_t ms[8] = {64, 256, 1024};
    int nm = 3;
    if (argc > 1) {
        nm = argc - 1 < 8 ? argc - 1 : 8;
        for (int i = 0; i < nm; i++) ms[i] = atol(argv[i + 1]);
    }
    if (getenv("QPARTS_ROUNDS")) {
        ROUNDS = atoi(getenv("QPARTS_ROUNDS"));
        ROUNDS = ROUNDS < 1 ? 1 : (ROUNDS > MAXR ? MAXR : ROUNDS);
    }
    qg_init();
    double tc[MAXR];
    for (int r = 0; r < ROUNDS; r++) {
        const double t0 = now();
        ceiling_loop(1000000);
        tc[r] = now() - t0;
    }
    qsort(tc, ROUNDS, sizeof tc[0], cmp);
    const double peak = 1000000.0 * 128 / (tc[ROUNDS / 2] * 1e9); /* multiply-adds per ns */
    printf("step ceiling (vpmaddwd + vpaddd): %.1f multiply-adds per ns\n", peak);
    int8_t *b = aligned_alloc(64, (size_t)(NB * 16 * Kp));
    {
        uint8_t a1[QG_MR2 * 1024] = {0};
        float xs1 = 1.0f;
        int32_t zp1 = 0;
        qg_args p1 = {a1, b, QG_MR2, N, K, 0, &xs1, 0, &zp1, 0, NULL, NULL, NULL, 0, NULL, NULL};
        g_p = &p1;
        g_aw = calloc((size_t)qg_aw_elems(QG_MR2, K), 2);
        g_sc = qg_amalloc(QG_MR2 * 4 * sizeof(__m256i));
        memset(g_sc, 0, QG_MR2 * 4 * sizeof(__m256i));
        const double t = median_time(run_l1);
        printf("6x8 tile from L1 (qg_steps_6x8 over one K block): %.1f multiply-adds per ns, "
               "%.3f of the step ceiling\n",
               1000.0 * QG_KC2 * 192 / (t * 1e9), 1000.0 * QG_KC2 * 192 / (t * 1e9) / peak);
        free(g_aw), qg_afree(g_sc);
    }
    printf("| M | call us | pack us | core us | int32 call us | call GMAC/s | call / ceiling "
           "| core / ceiling | pack / call | epilogue+rest / call |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    float *ws = malloc(N * sizeof(float)), *bias = malloc(N * sizeof(float));
    int32_t *cs = calloc(N, sizeof(int32_t));
    for (int64_t i = 0; i < NB * 16 * Kp; i++) b[i] = (int8_t)(rand() % 255 - 127);
    for (int64_t n = 0; n < N; n++) ws[n] = 0.01f, bias[n] = 0.1f * (float)(n % 7) - 0.3f;
    for (int i = 0; i < nm; i++) {
        const int64_t M = ms[i];
        uint8_t *a = malloc((size_t)(M * K));
        float *outf = malloc((size_t)(M * N) * sizeof(float));
        int32_t *outi = malloc((size_t)(M * N) * sizeof(int32_t));
        for (int64_t j = 0; j < M * K; j++) a[j] = (uint8_t)rand();
        float xs = 0.02f;
        int32_t zp = 128;
        qg_args p = {a, b, M, N, K, 0, &xs, 0, &zp, 0, ws, cs, bias, 1, outf, NULL};
        qg_args pi = p;
        pi.outf = NULL;
        pi.outi = outi;
        const int64_t rows = M < QG_MC2 ? M : QG_MC2;
        g_aw = malloc((size_t)qg_aw_elems(rows, K) * 2);
        g_sc = qg_amalloc((size_t)qg_sc_ymm(rows) * sizeof(__m256i));
        g_p = &p;
        const double t_call = median_time(run_call), t_pack = median_time(run_pack),
                     t_core = median_time(run_core);
        g_p = &pi;
        const double t_int = median_time(run_call);
        const double macs = (double)M * K * N;
        const double core_macs = (double)((M + 5) / 6 * 6) * K * N; /* full tiles only */
        printf("| %lld | %.0f | %.0f | %.0f | %.0f | %.1f | %.3f | %.3f | %.3f | %.3f |\n",
               (long long)M, t_call * 1e6, t_pack * 1e6, t_core * 1e6, t_int * 1e6,
               macs / t_call / 1e9, macs / t_call / 1e9 / peak,
               core_macs / t_core / 1e9 / peak, t_pack / t_call,
               (t_call - t_pack - t_core * macs / core_macs) / t_call);
        free(a), free(outf), free(outi), free(g_aw), qg_afree(g_sc);
    }
    return 0;
}
