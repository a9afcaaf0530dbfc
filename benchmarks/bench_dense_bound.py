"""Issue 23's batch-1 bound: where the 784-512-256-10 MLP's fp32 weights are read from.

A batch-1 Dense chain reads every weight once per call for one multiply-add each: its time is
the weights' bytes over the bandwidth of the cache level they live in. This prints, in one
process (medians of interleaved rounds, the load average before and after):

1. one thread's read bandwidth over working sets from 0.25 to 4 MB (``np.dot(v, v)``, each
   byte read once per call, the same vector every call: it stays in whichever level holds it,
   so the steps show L2 (1 MiB a core here) and L3);
2. the packed kernel (``dense_packed_forward``) on the MLP at batch 1, 1 and 2 threads, and
   one thread's *share* of the 2-thread run done alone (each layer's first half of the panels:
   the bytes one core reads in the 2-thread run): the 2-thread time cannot go below it;
3. each as achieved bytes/s against (1).

    python benchmarks/bench_dense_bound.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

SIZES = (784, 512, 256, 10)


def _timed(fn, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def _median_rounds(fns: dict, rounds: int, budget: float = 0.02) -> dict[str, float]:
    reps = {k: max(1, int(budget / max(_timed(f, 3), 1e-7))) for k, f in fns.items()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for k in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            times[k].append(_timed(fns[k], reps[k]))
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)

    from lepton_nn.backend import use_backend
    from lepton_nn.backend.threads import _the_blas

    blas = _the_blas()
    if blas.set is not None:
        blas.set(1)
    print(f"load average before: {os.getloadavg()}", flush=True)

    # 1. read bandwidth by working-set size, one thread
    mbs = (0.25, 0.5, 0.75, 0.9, 1.07, 1.5, 2.14, 4.0)
    vs = {mb: np.ones(int(mb * 1e6) // 4, np.float32) for mb in mbs}
    bw = _median_rounds({mb: (lambda v=v: np.dot(v, v)) for mb, v in vs.items()}, args.rounds)
    print("one thread's read bandwidth (np.dot(v, v), v re-read every call):")
    for mb in mbs:
        print(f"  {mb:5.2f} MB: {vs[mb].nbytes / bw[mb] / 1e9:6.1f} GB/s")

    # 2. the packed chain at batch 1
    with use_backend("cython") as k:
        rng = np.random.default_rng(0)
        ws = [
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
            for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)
        ]
        bs = tuple(rng.standard_normal(w.shape[1]).astype(np.float32) for w in ws)
        acts = (1, 1, 0)
        panels = tuple(k.dense_pack(w) for w in ws)
        x = rng.standard_normal((1, SIZES[0])).astype(np.float32)
        outs = tuple(np.empty((1, w.shape[1]), np.float32) for w in ws)
        # thread 0's share: the first half of each layer's panels (the last layer, 1 panel,
        # is wholly thread 0's), run as separate one-layer calls on the same inputs
        halves = []
        for p, b, h_in, o in zip(panels, bs, (x, *outs[:-1]), outs, strict=True):
            half = p[: (p.shape[0] + 1) // 2]
            n = min(o.shape[1], 16 * half.shape[0])
            halves.append((h_in, half, b[:n].copy(), np.empty((1, n), np.float32)))

        def share():
            for h_in, half, b, o in halves:
                k.dense_packed_forward(h_in, (half,), (b,), (1,), (o,), 1)

        fns = {
            "1 thread": lambda: k.dense_packed_forward(x, panels, bs, acts, outs, 1),
            "2 threads": lambda: k.dense_packed_forward(x, panels, bs, acts, outs, 2),
            "one share alone": share,
        }
        t = _median_rounds(fns, args.rounds)
    total = sum(p.nbytes for p in panels)
    share_bytes = sum(h[1].nbytes for h in halves)
    print(f"MLP {SIZES} batch 1, packed weights {total / 1e6:.2f} MB "
          f"(a share {share_bytes / 1e6:.2f} MB):")  # fmt: skip
    for name, sec in t.items():
        nbytes = share_bytes if name == "one share alone" else total
        print(f"  {name:16s} {sec * 1e6:7.1f} us  {nbytes / sec / 1e9:6.1f} GB/s")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
