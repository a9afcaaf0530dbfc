/* act_loop.c: the fused SIMD activation loop alone (la_bias_act_row256 of
 * kernels/csrc/simd_act.h) over N floats, `reps` times: the harness benchmarks/act_callgrind.py
 * counts under callgrind. Usage: act_loop ACT REPS (ACT: 0 identity .. 4 gelu). */
#include <stdio.h>
#include <stdlib.h>

#include "simd_act.h"

#define N 4096

int main(int argc, char **argv)
{
    if (argc != 3) return 2;
    const int act = atoi(argv[1]);
    const long reps = atol(argv[2]);
    static float y[N], bias[N];
    for (int i = 0; i < N; i++) bias[i] = -6.0f + 12.0f * (float)i / N;
    float sum = 0;
    for (long r = 0; r < reps; r++) {
        for (int i = 0; i < N; i++) y[i] = 0.001f * (float)(r & 7);
        la_bias_act_row256(y, bias, N, act);
        sum += y[r % N];
    }
    printf("%g\n", sum);
    return 0;
}
