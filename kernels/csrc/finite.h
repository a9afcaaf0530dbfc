/* finite.h: whether every value of a float array is finite (not inf, not NaN), by its
 * exponent bits (all ones for inf and NaN), so no floating-point flag or -ffast-math rewrite
 * can change the answer. The runtime checks every input with it: one compiled pass instead
 * of np.isfinite(x).all() (a bool temporary and a reduction, ~1.5 us at batch 1). */
#ifndef LNN_FINITE_H
#define LNN_FINITE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* NumPy: bool(np.isfinite(x).all()), x float32 */
static int lnn_all_finite_f32(const float *x, ptrdiff_t n)
{
    uint32_t bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, x + i, 4);
        bad |= (uint32_t)((b & 0x7f800000u) == 0x7f800000u);
    }
    return bad == 0;
}

/* NumPy: bool(np.isfinite(x).all()), x float64 */
static int lnn_all_finite_f64(const double *x, ptrdiff_t n)
{
    uint64_t bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        uint64_t b;
        memcpy(&b, x + i, 8);
        bad |= (uint64_t)((b & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
    }
    return bad == 0;
}

#endif /* LNN_FINITE_H */
