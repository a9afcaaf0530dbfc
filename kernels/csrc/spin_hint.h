/* spin_hint.h: LNN_SPIN_HINT(), the one statement in each turn of a spin-wait loop (the pool's
 * idle workers, the packed Dense chain's and the int8 GEMV's waits, rows_share's steps). It
 * tells the core that this thread only waits: `pause` on x86 (the sibling hyperthread and the
 * memory-order machinery get the slot), `yield` on 64-bit ARM; elsewhere a compiler barrier
 * alone (the loop still re-reads memory each turn). No other spin hint is written anywhere
 * in kernels/csrc (tests/test_portable_build.py checks). */
#ifndef LNN_SPIN_HINT_H
#define LNN_SPIN_HINT_H

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define LNN_SPIN_HINT() __builtin_ia32_pause()
#elif (defined(__GNUC__) || defined(__clang__)) && (defined(__aarch64__) || defined(__arm__))
#define LNN_SPIN_HINT() __asm__ __volatile__("yield" ::: "memory")
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <intrin.h>
#define LNN_SPIN_HINT() _mm_pause()
#elif defined(_MSC_VER) && defined(_M_ARM64)
#include <intrin.h>
#define LNN_SPIN_HINT() __yield()
#elif defined(__GNUC__) || defined(__clang__)
#define LNN_SPIN_HINT() __asm__ __volatile__("" ::: "memory")
#else
#define LNN_SPIN_HINT() ((void)0)
#endif

#endif /* LNN_SPIN_HINT_H */
