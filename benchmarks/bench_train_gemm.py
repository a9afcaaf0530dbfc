"""The training GEMM (kernels/gemm.pyx) against NumPy's OpenBLAS, and W2's step with each
(issue 23: W2 >= 80 % of the fp32 GEMM peak), old and new interleaved in one process.

    python benchmarks/bench_train_gemm.py [--threads 1,2] [--rounds 15]

Per thread count: the GEMM peak (``lepton_nn.bench.machine.gemm_peak``), then each of W2's
GEMM shapes (X W, X^T G_z, G_z W^T of its layers; m x k x n) on OpenBLAS (``np.matmul``, BLAS
at that many threads) and on the kernel, in interleaved rounds: median and best GFLOP/s and
the best as a fraction of the peak; then W2's eager step (cython backend, Adam) with the
kernel ("new") and with ``gemm_own`` switched off ("old": np.matmul as before), interleaved,
step time and GFLOP/s (``training_flops``) as a fraction of the peak. Prints the load average
at the start and end: read every figure beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from lepton_nn import backend as B  # noqa: E402
from lepton_nn import optim  # noqa: E402
from lepton_nn.backend.threads import set_num_threads  # noqa: E402
from lepton_nn.bench.engines.lepton import _loss, lepton_mlp  # noqa: E402
from lepton_nn.bench.machine import gemm_peak  # noqa: E402
from lepton_nn.bench.workloads import (  # noqa: E402
    ADAM,
    W2,
    glorot_weights,
    training_data,
    training_flops,
)

# (name, m, k, n, ta, tb): C (m, n) = A' (m, k) B' (k, n)
SHAPES = [
    ("L1 X W", 128, 784, 512, False, False),
    ("L1 X^T Gz", 784, 128, 512, True, False),
    ("L2 X W", 128, 512, 256, False, False),
    ("L2 X^T Gz", 512, 128, 256, True, False),
    ("L2 Gz W^T", 128, 256, 512, False, True),
]


def _rate(fn, flops: float, target: float = 0.02) -> float:
    reps = max(1, int(target * 60e9 / flops))
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return flops * reps / (time.perf_counter() - t) / 1e9


def gemm_shapes(threads: int, rounds: int, peak: float) -> None:
    from lepton_nn.kernels import _gemm

    rng = np.random.default_rng(0)
    cases = []
    for name, m, k, n, ta, tb in SHAPES:
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        av, bv = (a.T if ta else a), (b.T if tb else b)
        o1, o2 = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
        cases.append((
            name, 2 * m * k * n,
            lambda av=av, bv=bv, o=o1: np.matmul(av, bv, out=o),
            lambda a=a, b=b, o=o2, ta=ta, tb=tb: _gemm.gemm(a, ta, b, tb, o, threads),
        ))  # fmt: skip
    res = {c[0]: ([], []) for c in cases}
    for _ in range(rounds):
        for name, flops, ob, ours in cases:
            res[name][0].append(_rate(ob, flops))
            res[name][1].append(_rate(ours, flops))
    print(f"  {'GEMM (m x k x n)':24s} {'OpenBLAS med/best':>18s} {'kernel med/best':>16s}"
          f" {'best/peak':>14s} {'med ratio':>9s}")  # fmt: skip
    for (name, m, k, n, _, _), (ob, ours) in zip(SHAPES, res.values()):
        label = f"{name} {m}x{k}x{n}"
        print(f"  {label:24s} {np.median(ob):8.1f}/{max(ob):6.1f}   {np.median(ours):8.1f}/"
              f"{max(ours):6.1f}   {max(ob) / peak:5.0%} {max(ours) / peak:5.0%}  "
              f"{np.median(ours) / np.median(ob):8.2f}x")  # fmt: skip


def w2_steps(threads: int, rounds: int, peak: float) -> None:
    from lepton_nn.backend import cython_backend as C

    be = B.set_backend("cython")
    x, y = training_data(W2)
    loss_fn = _loss(W2.loss)
    steps = {}
    for label in ("old", "new"):
        model = lepton_mlp(W2.sizes, glorot_weights(W2.sizes))
        opt = optim.Adam(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])

        def step(k, model=model, opt=opt):
            opt.zero_grad()
            loss_fn(model(x[k % len(x)]), y[k % len(y)]).backward()
            opt.step()

        steps[label] = step
    own = C.CythonBackend.gemm_own
    flops = training_flops("W2") * W2.batch
    times = {k: [] for k in steps}
    for r in range(rounds + 1):
        for label, step in steps.items():
            C.CythonBackend.gemm_own = own if label == "new" else (lambda *a: False)
            t = time.perf_counter()
            for i in range(10):
                step(i)
            if r:  # the first round warms up
                times[label].append((time.perf_counter() - t) / 10)
    C.CythonBackend.gemm_own = own
    for label, ts in times.items():
        med, best = np.median(ts), min(ts)
        print(f"  W2 step {label}: median {med * 1e3:6.2f} ms ({flops / med / 1e9:5.1f} GFLOP/s,"
              f" {flops / med / 1e9 / peak:4.0%} of peak), best {best * 1e3:6.2f} ms "
              f"({flops / best / 1e9 / peak:4.0%})")  # fmt: skip
    print(f"  new / old (medians): {np.median(times['old']) / np.median(times['new']):.2f}x"
          f" faster; backend {be.name}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    print("load average at start:", os.getloadavg())
    for t in (int(s) for s in args.threads.split(",")):
        set_num_threads(t)
        with threadpool_limits(t):
            peak = gemm_peak()["best"]
            print(f"threads={t}: fp32 GEMM peak {peak:.1f} GFLOP/s")
            gemm_shapes(t, args.rounds, peak)
            w2_steps(t, args.rounds, peak)
    print("load average at end:", os.getloadavg())


if __name__ == "__main__":
    main()
