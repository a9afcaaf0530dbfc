"""The bench CNN (bench_vs_ort.py's), three engines in one process, interleaved
rounds, medians of the calling thread's CPU time per call (steadier than wall time on a
shared machine; at one thread ONNX Runtime runs its nodes on the calling thread too): our
plan with its 16 -> 32 convolution in Winograd's F(2x2, 3x3) tiling (the default), the same
plan with every convolution direct (the plan before it), and ONNX Runtime.

    PYTHONPATH=. python benchmarks/bench_cnn_winograd.py [--batches 64] [--rounds 21]
        [--calls 5] [--threads 1]

At more than one thread (``--threads 2``) the times are wall-clock (the pool's worker's CPU
time is not the calling thread's), each engine's round after a 0.3 s pause as
bench_vs_ort's "settled" mode.

Prints per engine the median and spread (min/median, max/median) of the per-call CPU time,
ORT's over ours for both of our plans, and the load average before and after.
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
    ap.add_argument("--batches", default="64")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--calls", type=int, default=5, help="calls per engine per round")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_vs_ort import _cnn

    import lepton_nn as L
    import lepton_nn.runtime as rt
    from lepton_nn.backend.threads import _the_blas
    from lepton_nn.bench.engines.onnx_runtime import ort_session
    from lepton_nn.runtime import conv_winograd

    print(f"load average before: {os.getloadavg()}", flush=True)
    blas = _the_blas()
    threads = args.threads
    if blas.set is not None:
        blas.set(threads)
    clock = time.thread_time if threads == 1 else time.perf_counter
    what = "CPU" if threads == 1 else "wall"
    rng = np.random.default_rng(0)
    model, onnx_bytes, shape = _cnn(rng)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cnn.lnn")
        L.save(model, path)
        wino = rt.load(path, threads=threads)
        keep = conv_winograd.WINOGRAD_MIN_CHANNELS
        conv_winograd.WINOGRAD_MIN_CHANNELS = 1 << 30  # every layer direct
        try:
            direct = rt.load(path, threads=threads)
            for n in map(int, args.batches.split(",")):
                direct.forward(np.zeros((n, *shape), np.float32))  # bind its plan now
        finally:
            conv_winograd.WINOGRAD_MIN_CHANNELS = keep
        sess = ort_session(onnx_bytes, threads)
        for n in map(int, args.batches.split(",")):
            x = rng.standard_normal((n, *shape)).astype(np.float32)
            engines = {
                "winograd": wino.forward,
                "direct": direct.forward,
                "ort": lambda a, s=sess: s.run(None, {"x": a})[0],
            }
            outs = {k: f(x) for k, f in engines.items()}
            for k in ("winograd", "direct"):
                err = float(np.max(np.abs(outs[k] - outs["ort"])))
                print(f"batch {n}: {k} vs ort max |diff| {err:.2e}")
            times: dict[str, list[float]] = {k: [] for k in engines}
            for r in range(args.rounds):
                order = list(engines) if r % 2 == 0 else list(engines)[::-1]
                for k in order:
                    f = engines[k]
                    if threads > 1:
                        time.sleep(0.3)
                    t0 = clock()
                    for _ in range(args.calls):
                        f(x)
                    times[k].append((clock() - t0) / args.calls)
            med = {k: statistics.median(v) for k, v in times.items()}
            for k, v in times.items():
                print(f"batch {n} {k:9s} {med[k] * 1e6:8.1f} us {what}  (spread "
                      f"{min(v) / med[k]:.2f}-{max(v) / med[k]:.2f})")  # fmt: skip
            print(f"batch {n}: ort/winograd {med['ort'] / med['winograd']:.2f}  ort/direct "
                  f"{med['ort'] / med['direct']:.2f}  direct/winograd "
                  f"{med['direct'] / med['winograd']:.2f}", flush=True)  # fmt: skip
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
