"""The bench CNN (bench_vs_ort.py's: Conv 3x3 16 -> BN -> ReLU -> MaxPool, Conv 3x3 32 -> BN ->
ReLU -> MaxPool, Dense 10, on 1x28x28) three ways in one process, interleaved rounds: our plan
with its convolutions chained (``conv2d_direct_chain``: each thread carries an image through
both), the same plan with each convolution bound on its own (the plan before the chain), and
ONNX Runtime on the same weights.

    PYTHONPATH=. python benchmarks/bench_cnn_chain.py [--threads 1,2] [--batches 64]
        [--rounds 30] [--settle 0.3]

Per engine: the median and the minimum of the per-call wall time over the rounds (each round
a few calls after a --settle pause at more than one thread, as bench_vs_ort's "settled"), and
at one thread the minimum of the calling thread's CPU time (steadier than wall time when
other processes share the cores). The load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=5, help="calls per engine per round")
    ap.add_argument("--settle", type=float, default=0.3)
    args = ap.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_vs_ort import _cnn

    import lepton_nn as L
    import lepton_nn.runtime as rt
    from lepton_nn.backend.threads import _the_blas
    from lepton_nn.bench.engines.onnx_runtime import ort_session
    from lepton_nn.runtime import plan

    print(f"load average before: {os.getloadavg()}", flush=True)
    rng = np.random.default_rng(0)
    model, onnx_bytes, shape = _cnn(rng)
    blas = _the_blas()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cnn.lnn")
        L.save(model, path)
        for threads in map(int, args.threads.split(",")):
            if blas.set is not None:
                blas.set(threads)
            chained = rt.load(path, threads=threads)
            keep = plan._chain_convs
            plan._chain_convs = lambda steps: steps  # each convolution bound on its own
            try:
                layered = rt.load(path, threads=threads)
            finally:
                plan._chain_convs = keep
            sess = ort_session(onnx_bytes, threads)
            for n in map(int, args.batches.split(",")):
                x = rng.standard_normal((n, *shape)).astype(np.float32)
                assert np.array_equal(chained.forward(x), layered.forward(x))
                engines = {
                    "chained": chained.forward,
                    "layered": layered.forward,
                    "ort": lambda a, s=sess: s.run(None, {"x": a}),
                }
                wall = {k: [] for k in engines}
                cpu = {k: [] for k in engines}
                pause = args.settle if threads > 1 else 0.0
                names = list(engines)
                for r in range(args.rounds):
                    for k in names[r % 3 :] + names[: r % 3]:  # the order turns every round
                        if pause:
                            time.sleep(pause)
                        for _ in range(args.calls):
                            t0, c0 = time.perf_counter(), time.thread_time()
                            engines[k](x)
                            cpu[k].append(time.thread_time() - c0)
                            wall[k].append(time.perf_counter() - t0)
                for k in names:
                    line = (
                        f"cnn batch {n:3d} threads {threads} {k:8s}: wall median "
                        f"{statistics.median(wall[k]) * 1e6:8.1f} us, min {min(wall[k]) * 1e6:8.1f}"
                    )
                    if threads == 1:
                        line += f", CPU min {min(cpu[k]) * 1e6:8.1f}"
                    print(line, flush=True)
                med = {k: statistics.median(v) for k, v in wall.items()}
                print(
                    f"  ort / chained {med['ort'] / med['chained']:.2f}, layered / chained "
                    f"{med['layered'] / med['chained']:.2f} (medians; > 1: chained faster)",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
