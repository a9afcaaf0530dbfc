"""Sparse Dense layer vs dense sgemm: (B, 1024) x (1024, 1024), W pruned to a density d.

Our CSR kernel (sparse_linear, single thread, per-row kernel at batch 1, batch-innermost from
batch 2) against NumPy x @ W (OpenBLAS, its default threads) at batch 1 and 64, densities
2 % .. 50 %. The crossover density is where the two medians meet; run

    python -m pytest benchmarks/bench_sparse.py --benchmark-columns=median
    python benchmarks/bench_sparse.py          # prints the crossover table directly

and the W5 model pruned vs dense through the runtime (what ``lepton-nn bench --workloads W5``
reports as "runtime pruned 90%"), batch 1/64/256 on 1 and 2 threads, interleaved in one
process (medians of rounds, min-max), with the per-layer ``sparse_linear`` calls of the
plans before the sparse chain as a third engine:

    PYTHONPATH=. python benchmarks/bench_sparse.py --w5 [--rounds 15]

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


def _w5_engines(tmp: str, threads: int) -> dict:
    """{name: predict} for the W5 MLP: dense file, 90 %-pruned file (save_compressed, as the
    bench workload makes it), and that pruned model's layers as separate sparse_linear calls
    on one thread (the runtime's plan before sparse_chain_forward)."""
    import os

    from lepton_nn import io, runtime
    from lepton_nn.autograd import no_grad
    from lepton_nn.bench.engines.lepton import lepton_mlp
    from lepton_nn.bench.workloads import INFERENCE, glorot_weights, magnitude_pruned
    from lepton_nn.compress import save_compressed

    sizes = INFERENCE["W5b1"][0].sizes  # 784-512-256-10
    weights = glorot_weights(sizes)
    x = np.zeros((1, sizes[0]), np.float32)
    paths = {"dense": os.path.join(tmp, "d.lnn"), "pruned": os.path.join(tmp, "p.lnn")}
    for name, ws in (("dense", weights), ("pruned", magnitude_pruned(weights, 0.9))):
        model = lepton_mlp(sizes, ws)
        with no_grad():
            model(x)
        if name == "dense":
            io.save(model, paths[name])
        else:
            save_compressed(model, paths[name], min_sparsity=0.5)
    dense = runtime.load(paths["dense"], threads=threads)
    pruned = runtime.load(paths["pruned"], threads=threads)
    steps = pruned.network.steps

    def per_layer(xb, _outs={}):  # noqa: B006 (the old plan's buffers, one set per batch)
        outs = _outs.get(xb.shape[0])
        if outs is None:
            outs = _outs[xb.shape[0]] = [np.empty((xb.shape[0], st.csr.shape[1]), np.float32)
                                         for st in steps]  # fmt: skip
        h = xb
        for st, out in zip(steps, outs):
            c = st.csr
            s.sparse_linear(h, c.indptr, c.indices, c.data, st.b, st.act, out, 0, False)
            h = out
        return h.copy()

    return {"dense": dense.predict, "pruned": pruned.predict, "pruned per-layer": per_layer}


def w5_table(rounds: int = 15, seconds: float = 0.05):
    """Pruned vs dense W5 through the runtime: per (threads, batch) the median time per call
    (us) over ``rounds`` interleaved rounds of ``seconds`` each, and the speed-ups."""
    import os
    import tempfile

    print(f"load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (1, 2):
            engines = _w5_engines(tmp, threads)
            for batch in (1, 64, 256):
                x = np.random.default_rng(batch).standard_normal((batch, 784)).astype(np.float32)
                x = np.maximum(x, 0)  # pixel-like: non-negative
                for f in engines.values():
                    f(x)  # plans built (and the sparse/dense choice measured) before timing
                times = {name: [] for name in engines}
                for _ in range(rounds):
                    for name, f in engines.items():
                        calls, t0 = 0, time.perf_counter()
                        while time.perf_counter() - t0 < seconds:
                            f(x)
                            calls += 1
                        times[name].append((time.perf_counter() - t0) / calls * 1e6)
                med = {k: float(np.median(v)) for k, v in times.items()}
                row = ", ".join(
                    f"{k} {med[k]:.1f} us ({min(v):.1f}-{max(v):.1f})" for k, v in times.items()
                )
                print(f"threads {threads} batch {batch:3d}: {row}; pruned vs dense "
                      f"{med['dense'] / med['pruned']:.2f}x, vs per-layer "
                      f"{med['pruned per-layer'] / med['pruned']:.2f}x")  # fmt: skip
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--w5", action="store_true", help="the W5 MLP pruned vs dense (runtime)")
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    if a.w5:
        w5_table(a.rounds)
    else:
        crossover_table()
