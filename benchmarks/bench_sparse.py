"""Sparse Dense layer vs dense sgemm: (B, 1024) x (1024, 1024), W pruned to a density d.

Our CSR kernel (sparse_linear, single thread, per-row kernel at batch 1, batch-innermost from
batch 2) against NumPy x @ W (OpenBLAS, its default threads) at batch 1 and 64, densities
2 % .. 50 %. The crossover density is where the two medians meet; run

    python -m pytest benchmarks/bench_sparse.py --benchmark-columns=median
    python benchmarks/bench_sparse.py          # prints the crossover table directly

(unset OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for a fair sgemm).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

s = pytest.importorskip("lepton_nn.kernels._sparse")

K = N = 1024
BATCHES = (1, 64)
DENSITIES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def _problem(B, density, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((K, N)).astype(np.float32)
    w *= rng.random((K, N)) < density
    x = rng.standard_normal((B, K)).astype(np.float32)
    return x, w


@pytest.mark.parametrize("B", BATCHES)
def test_dense_sgemm(benchmark, B):
    x, w = _problem(B, 1.0)
    benchmark.group = f"sparse B={B}"
    benchmark(np.matmul, x, w)


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("B", BATCHES)
def test_lepton_sparse(benchmark, B, density):
    x, w = _problem(B, density)
    csr = s.to_csr(w)
    out = np.empty((B, N), np.float32)
    benchmark.group = f"sparse B={B}"
    benchmark.extra_info["density"] = density
    benchmark(s.sparse_linear, x, *csr, None, 0, out)


def _best(f, seconds=0.3):
    """Fastest single call in a time budget (robust to neighbours on shared cores)."""
    f()
    best, t0 = float("inf"), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def crossover_table():
    """Per batch: dense time, sparse time per density, and the interpolated crossover."""
    for B in BATCHES:
        x, w = _problem(B, 1.0)
        dense = _best(lambda: x @ w)  # noqa: B023
        print(f"batch {B}: dense sgemm {dense * 1e6:.1f} us")
        prev = None
        cross = None
        for d in DENSITIES:
            xs, ws = _problem(B, d)
            csr = s.to_csr(ws)
            out = np.empty((B, N), np.float32)
            t = _best(lambda: s.sparse_linear(xs, *csr, None, 0, out))  # noqa: B023
            print(f"  density {d:4.2f}: sparse {t * 1e6:8.1f} us  speed-up {dense / t:5.2f}x")
            if prev is not None and cross is None and prev[1] <= dense < t:
                d0, t0 = prev
                cross = d0 + (d - d0) * (dense - t0) / (t - t0)
            prev = (d, t)
        print(f"  crossover density ~ {cross:.2f}" if cross else "  crossover outside range")


if __name__ == "__main__":
    crossover_table()
