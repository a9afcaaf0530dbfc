/* alloc.h -- the kernels' scratch allocations, and a test hook that makes them fail.
 *
 * Every kernel that allocates its own scratch does it here: lnn_malloc(n) is malloc(n) and
 * lnn_aligned_alloc(64, n) is aligned_alloc(64, n), except while the hook is armed. A kernel
 * whose allocation fails computes nothing and returns an error code (a pool task's nonzero
 * return is its job's, pool.h); its Cython caller raises MemoryError. A path may instead fall
 * back to one that needs no scratch only when that one gives the same bits.
 *
 * The hook (tests only: tests/test_kernel_alloc.py): lnn_alloc_fail_next(k) makes the next k
 * allocations of this extension fail (k < 0: every one until lnn_alloc_fail_next(0)), so
 * each out-of-memory path is run without exhausting memory. Each extension includes this
 * header and has its own counter (kernels/alloc_hook.pxi exposes it as _fail_allocations).
 * Disarmed it costs one relaxed atomic load per allocation (there is one per call or per
 * task, never one per row). */
#ifndef LNN_ALLOC_H
#define LNN_ALLOC_H

#include <stddef.h>
#include <stdlib.h>

static long lnn_alloc_fail = 0; /* > 0: allocations left to fail; < 0: all of them */

#if defined(__GNUC__)
static int lnn_alloc_refused(void)
{
    long k = __atomic_load_n(&lnn_alloc_fail, __ATOMIC_RELAXED);
    while (k > 0) /* take one of the k failures (another thread may take it first) */
        if (__atomic_compare_exchange_n(&lnn_alloc_fail, &k, k - 1, 0, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            return 1;
    return k < 0;
}

static void lnn_alloc_fail_next(long k) { __atomic_store_n(&lnn_alloc_fail, k, __ATOMIC_RELAXED); }
#else /* no atomics builtins: the hook is inert (tests skip themselves, see alloc_hook.pxi) */
static int lnn_alloc_refused(void) { return 0; }
static void lnn_alloc_fail_next(long k) { (void)k; }
#endif

static int lnn_alloc_hooked(void)
{
#if defined(__GNUC__)
    return 1;
#else
    return 0;
#endif
}

static inline void *lnn_malloc(size_t n) { return lnn_alloc_refused() ? NULL : malloc(n); }

/* n a multiple of `align` (C11's rule) */
static inline void *lnn_aligned_alloc(size_t align, size_t n)
{
    return lnn_alloc_refused() ? NULL : aligned_alloc(align, n);
}

#endif /* LNN_ALLOC_H */
