"""A/B of the packed Dense kernel: this tree's ``dense_packed_forward`` against another build's
(``--baseline``: the ``_dense`` extension file of an older checkout), in one process, on the
784-512-256-10 MLP (ReLU, ReLU, identity), interleaved rounds, medians, the load average.

Build a baseline from any commit without touching this tree, then compare::

    mkdir /tmp/base && git archive main | tar -x -C /tmp/base
    (cd /tmp/base && python setup.py -q build_ext --inplace)
    python benchmarks/bench_dense_ab.py --baseline /tmp/base/lepton_nn/kernels/_dense*.so

Prints per case (batch, threads) each build's median time, the baseline's time over ours
(> 1: this tree is faster) with its quartiles over the rounds, our GFLOP/s, and whether the two
builds' outputs are bit for bit the same. ``--clock cpu`` times with the thread's CPU time:
steadier on a loaded machine, meaningful at 1 thread only.
"""

from __future__ import annotations

import argparse
import functools
import glob
import importlib.util
import os
import statistics
import time

import numpy as np

SIZES = (784, 512, 256, 10)


def _load(path: str):
    """The ``_dense`` extension at ``path`` as a module of its own (not in sys.modules)."""
    spec = importlib.util.spec_from_file_location("_dense", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="the other build's _dense*.so")
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--cases", default="1x1,1x2,64x1,64x2", help="batch x threads, ...")
    ap.add_argument("--budget", type=float, default=0.02, help="seconds per build per round")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args(argv)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter

    from lepton_nn.backend.reference import ReferenceBackend
    from lepton_nn.kernels import _dense as ours

    paths = glob.glob(args.baseline)
    if len(paths) != 1:
        raise SystemExit(f"--baseline {args.baseline!r} matches {len(paths)} files")
    if os.path.samefile(paths[0], ours.__file__):
        raise SystemExit("--baseline is this tree's own build")
    base = _load(paths[0])
    builds = {"base": base, "ours": ours}

    rng = np.random.default_rng(0)
    ws = [
        (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)
    ]
    bs = tuple(rng.standard_normal(w.shape[1]).astype(np.float32) for w in ws)
    acts = (1, 1, 0)
    panels = tuple(ReferenceBackend().dense_pack(w) for w in ws)  # the one layout, 64-B aligned
    flops = 2.0 * sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:], strict=True))
    print(f"load average before: {os.getloadavg()}", flush=True)
    for case in args.cases.split(","):
        m, threads = (int(v) for v in case.split("x"))
        x = rng.standard_normal((m, SIZES[0])).astype(np.float32)
        outs = {k: tuple(np.empty((m, w.shape[1]), np.float32) for w in ws) for k in builds}
        fns = {
            k: functools.partial(b.dense_packed_forward, x, panels, bs, acts, outs[k], threads)
            for k, b in builds.items()
        }
        for f in fns.values():
            f()
        same = np.array_equal(outs["base"][-1], outs["ours"][-1])
        reps = {}
        for k, f in fns.items():
            t0 = clock()
            f()
            reps[k] = max(1, int(args.budget / max(clock() - t0, 1e-7)))
        times: dict[str, list[float]] = {k: [] for k in fns}
        for r in range(args.rounds):
            for k in list(fns) if r % 2 == 0 else list(fns)[::-1]:
                t0 = clock()
                for _ in range(reps[k]):
                    fns[k]()
                times[k].append((clock() - t0) / reps[k])
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios = sorted(b / o for b, o in zip(times["base"], times["ours"], strict=True))
        q1, q3 = ratios[len(ratios) // 4], ratios[3 * len(ratios) // 4]
        print(
            f"batch {m:3d} threads {threads}: base {med['base'] * 1e6:8.1f} us  ours "
            f"{med['ours'] * 1e6:8.1f} us  base/ours {med['base'] / med['ours']:.3f} "
            f"(round ratios q1 {q1:.3f} q3 {q3:.3f})  ours {flops * m / med['ours'] / 1e9:5.1f} "
            f"GFLOP/s  outputs {'bit-identical' if same else 'DIFFER'}",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
