/* q8_step_ceiling.c: the exact int8 multiply-add steps AVX2 (no VNNI) offers, at their ceiling.
 *
 * Each loop runs 8 independent accumulators (no dependency binds), registers only, in inline
 * asm (the compiler cannot fold the loop-invariant operands away), timed with the thread's CPU
 * time, best of 15 rounds. Printed: multiply-adds per ns for
 *   madd     vpmaddwd + vpaddd                         16 multiply-adds: both operands
 *            widened to int16 beforehand (qgemm_avx2.h's tile kernel)
 *   xor      vpxor + vpmaddubsw + vpmaddwd(ones) + vpaddd   32: signed activations, the
 *            weight bitwise negated where a' < 0 (qgemv.h; exact for all int8 weights)
 *   no-xor   vpmaddubsw + vpmaddwd(ones) + vpaddd       32: uint8 activations straight in;
 *            saturates int16 (inexact), only the ceiling of the instruction pair
 *   xor-tile the xor step in a 2-row x 32-column tile with its operands loaded from L1
 *            (2 activation loads per row, weights as memory operands of vpxor)
 * Both exact forms spend 2 multiply-pipe uops per 32 multiply-adds (vpmaddwd(ones) widens
 * the int16 pair sums, which the xor form fills to [-32768, 32512]: no headroom to add two).
 *
 *     gcc -O2 -std=gnu11 benchmarks/q8_step_ceiling.c -o /tmp/q8_step && /tmp/q8_step
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define ITERS 5000000L /* 8 steps each */
static uint8_t A[256] __attribute__((aligned(64))), W[256] __attribute__((aligned(64)));

#define CLOB                                                                                   \
    "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",  \
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"
#define MADD(acc, t)                                                                           \
    "vpmaddwd %%ymm0, %%ymm1, %%ymm" #t "\n vpaddd %%ymm" #t ", %%ymm" #acc ", %%ymm" #acc "\n"
#define XOR(acc, t)                                                                            \
    "vpxor %%ymm0, %%ymm3, %%ymm" #t "\n vpmaddubsw %%ymm" #t ", %%ymm1, %%ymm" #t             \
    "\n vpmaddwd %%ymm2, %%ymm" #t ", %%ymm" #t "\n vpaddd %%ymm" #t ", %%ymm" #acc           \
    ", %%ymm" #acc "\n"
#define NOXOR(acc, t)                                                                          \
    "vpmaddubsw %%ymm0, %%ymm1, %%ymm" #t "\n vpmaddwd %%ymm2, %%ymm" #t ", %%ymm" #t          \
    "\n vpaddd %%ymm" #t ", %%ymm" #acc ", %%ymm" #acc "\n"
#define EIGHT(S) S(8, 4) S(9, 5) S(10, 6) S(11, 7) S(12, 4) S(13, 5) S(14, 6) S(15, 7)
#define TSTEP(w, acc)                                                                          \
    "vpxor " w ", %%ymm3, %%ymm4\n vpmaddubsw %%ymm4, %%ymm0, %%ymm4\n vpmaddwd %%ymm2, "      \
    "%%ymm4, %%ymm4\n vpaddd %%ymm4, %%ymm" #acc ", %%ymm" #acc "\n"

__attribute__((noinline)) static void run_madd(void)
{
    long n = ITERS;
    __asm__ volatile("1:\n" EIGHT(MADD) "dec %0\n jnz 1b\n" : "+r"(n) : : CLOB);
}
__attribute__((noinline)) static void run_xor(void)
{
    long n = ITERS;
    __asm__ volatile("1:\n" EIGHT(XOR) "dec %0\n jnz 1b\n" : "+r"(n) : : CLOB);
}
__attribute__((noinline)) static void run_noxor(void)
{
    long n = ITERS;
    __asm__ volatile("1:\n" EIGHT(NOXOR) "dec %0\n jnz 1b\n" : "+r"(n) : : CLOB);
}
__attribute__((noinline)) static void run_tile(void)
{
    long n = ITERS;
    __asm__ volatile("1:\n vmovdqa (%1), %%ymm0\n vmovdqa 32(%1), %%ymm3\n" TSTEP("(%2)", 8)
                         TSTEP("32(%2)", 9) TSTEP("64(%2)", 10) TSTEP("96(%2)", 11)
                             "vmovdqa 64(%1), %%ymm0\n vmovdqa 96(%1), %%ymm3\n" TSTEP("(%2)", 12)
                                 TSTEP("32(%2)", 13) TSTEP("64(%2)", 14) TSTEP("96(%2)", 15)
                                     "dec %0\n jnz 1b\n"
                     : "+r"(n)
                     : "r"(A), "r"(W)
                     : CLOB);
}

int main(void)
{
    void (*fn[4])(void) = {run_madd, run_xor, run_noxor, run_tile};
    const char *name[4] = {"madd", "xor", "no-xor", "xor-tile"};
    const double macs[4] = {16, 32, 32, 32};
    double best[4] = {1e9, 1e9, 1e9, 1e9};
    for (int r = 0; r < 15; r++)
        for (int i = 0; i < 4; i++) {
            const double t = now();
            fn[i]();
            const double dt = now() - t;
            best[i] = dt < best[i] ? dt : best[i];
        }
    for (int i = 0; i < 4; i++)
        printf("%-9s %5.2f ns per 8 steps, %5.1f multiply-adds per ns\n", name[i],
               best[i] / ITERS * 1e9, 8 * macs[i] * ITERS / best[i] * 1e-9);
    return 0;
}
