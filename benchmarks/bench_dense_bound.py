"""Issue 23's batch-1 bound: where the 784-512-256-10 MLP's fp32 weights are read from.

A batch-1 Dense chain reads every weight once per call for one multiply-add each: its time is
the weights' bytes over the bandwidth of the cache level they live in. This prints, in one
process (medians of interleaved rounds, the load average before and after):

1. one thread's read bandwidth over working sets from 0.25 MB to 64 MB, the same buffer every
   call (it stays in whichever level holds it: L2 is 512 KiB a core here, L3 32 MiB, 64 MB is
   DRAM): ``np.dot(v, v)`` and the kernels' own AVX2 read loop (``read_probe``: 1 to 8 streams
   read side by side as the one-row tiles read their panels, without and with software
   prefetch 512 / 1024 bytes ahead), the best of those as the bound;
2. the packed kernel (``dense_packed_forward``) on the MLP at batch 1, 1 and 2 threads, and
   one thread's *share* of the 2-thread run done alone (each layer's first half of the panels:
   the bytes one core reads in the 2-thread run): the 2-thread time cannot go below it;
3. each as achieved bytes/s against (1).

    python benchmarks/bench_dense_bound.py [--rounds 15] [--clock cpu]

``--clock cpu`` times with the thread's CPU time (``time.thread_time``): steadier on a loaded
machine for the one-thread figures (a 2-thread call is then the caller's share only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

SIZES = (784, 512, 256, 10)


CLOCK = time.perf_counter


def _timed(fn, reps: int) -> float:
    t0 = CLOCK()
    for _ in range(reps):
        fn()
    return (CLOCK() - t0) / reps


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
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter

    from lepton_nn.backend import use_backend
    from lepton_nn.backend.threads import _the_blas

    blas = _the_blas()
    if blas.set is not None:
        blas.set(1)
    print(f"load average before: {os.getloadavg()}", flush=True)

    # 1. read bandwidth by working-set size, one thread
    from lepton_nn.kernels import _dense

    mbs = (0.25, 0.5, 1.07, 2.15, 4.0, 64.0)
    vs = {mb: np.ones(int(mb * 1e6) // 64 * 16, np.float32) for mb in mbs}
    ways = {"np.dot": None}
    if hasattr(_dense, "read_probe"):
        for streams in (1, 2, 4, 6, 8):
            for ahead in (0, 512, 1024):
                ways[f"{streams} streams" + (f", prefetch {ahead} B" if ahead else "")] = (
                    streams,
                    ahead,
                )
    print("one thread's read bandwidth, GB/s (the same buffer every call):")
    best = {}
    for mb, v in vs.items():
        fns = {
            w: (lambda v=v: np.dot(v, v))
            if a is None
            else (lambda v=v, a=a: _dense.read_probe(v, a[0], a[1], 0, 1))
            for w, a in ways.items()
        }
        bw = {w: v.nbytes / t / 1e9 for w, t in _median_rounds(fns, args.rounds).items()}
        top = max(bw, key=bw.get)
        best[mb] = bw[top]
        row = "  ".join(f"{w} {g:.1f}" for w, g in bw.items())
        print(f"  {mb:6.2f} MB: best {bw[top]:6.1f} ({top})\n      {row}", flush=True)

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
    # the bytes one core reads in each case, at the best read speed of a working set that size
    per_core = {"1 thread": (total, 2.15), "2 threads": (total / 2, 1.07)}
    per_core["one share alone"] = (share_bytes, 1.07)
    for name, sec in t.items():
        nbytes = share_bytes if name == "one share alone" else total
        core_bytes, mb = per_core[name]
        print(
            f"  {name:16s} {sec * 1e6:7.1f} us  {nbytes / sec / 1e9:6.1f} GB/s  (one core "
            f"reading {core_bytes / 1e6:.2f} MB at {best[mb]:.1f} GB/s: "
            f"{core_bytes / best[mb] / 1e3:5.1f} us)"
        )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
