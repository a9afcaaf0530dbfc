"""A/B of the fused float32 recurrent kernel: this tree's ``recurrent_rows_threads`` against
another build's (``--baseline``: the ``_recurrent`` extension file of an older checkout), in
one process, on bench_vs_ort's layers (T=50 steps, F=8 features, U=64 units), interleaved
rounds, medians, the load average.

Build a baseline from any commit without touching this tree, then compare::

    mkdir /tmp/base && git archive 39e8b30 | tar -x -C /tmp/base
    (cd /tmp/base && LEPTON_EXT_ONLY=recurrent python setup.py -q build_ext --inplace)
    PYTHONPATH=. python benchmarks/bench_recurrent_ab.py \\
        --baseline /tmp/base/lepton_nn/kernels/_recurrent*.so

Each build runs its own runtime's split of the rows over threads: the baseline the ranges
of the plan up to 39e8b30 (a few per thread, fixed, ``--base-ranges old``; ``even`` for a
baseline that shares a range a thread), this tree a range a thread shared step by step.
``--modes settled`` pauses 0.3 s before each round (a server's first call after an idle
spell: a pool worker's vCPU may have halted and comes back late), ``hot`` runs rounds back
to back. Prints per case each build's median wall time, the baseline's over ours (> 1: this
tree is faster) with the quartiles of the per-round ratios, the median CPU time of the
process, our GFLOP/s, and whether both builds wrote the same bits.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import statistics
import time

import numpy as np

T, F, U = 50, 8, 64
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


def _load(path: str):
    """The ``_recurrent`` extension at ``path`` as a module of its own (not in sys.modules)."""
    spec = importlib.util.spec_from_file_location("_recurrent", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _old_ranges(n: int, threads: int) -> list[int]:
    """The fixed ranges of the runtime's plan up to 39e8b30: a few per thread at multiples of 3."""
    tasks = max(threads, min(4 * threads, n // 16))
    return sorted({3 * (i * n // (3 * tasks)) for i in range(tasks)} | {n})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="the other build's _recurrent*.so")
    ap.add_argument("--cells", default="LSTM,GRU")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--modes", default="hot,settled")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--base-ranges", choices=("old", "even"), default="old")
    args = ap.parse_args(argv)

    from lepton_nn.backend.reference import ReferenceBackend
    from lepton_nn.kernels import _recurrent as ours

    paths = glob.glob(args.baseline)
    if len(paths) != 1:
        raise SystemExit(f"--baseline {args.baseline!r} matches {len(paths)} files")
    if os.path.samefile(paths[0], ours.__file__):
        raise SystemExit("--baseline is this tree's own build")
    builds = {"base": _load(paths[0]), "ours": ours}
    print(f"load average before: {os.getloadavg()}")
    rng = np.random.default_rng(0)
    for cell in args.cells.split(","):
        g = GATES[cell]
        w_ih = (rng.standard_normal((F, g * U)) * 0.3).astype(np.float32)
        w_hh = (rng.standard_normal((U, g * U)) * 0.2).astype(np.float32)
        b = (rng.standard_normal(g * U) * 0.1).astype(np.float32)
        b_hh = (rng.standard_normal(g * U) * 0.1).astype(np.float32) if cell == "GRU" else None
        wp = ReferenceBackend().pack_recurrent(cell, w_ih, b, w_hh, b_hh)
        for n in map(int, args.batches.split(",")):
            x = rng.standard_normal((T, n, F)).astype(np.float32)
            flops = 2 * T * n * g * U * (1 + F + U)
            for th in map(int, args.threads.split(",")):
                old = _old_ranges(n, th) if args.base_ranges == "old" else None
                even = [i * n // th for i in range(th + 1)]
                bounds = {
                    "base": np.array(old or even, np.int64),
                    "ours": np.array(even, np.int64),
                }
                for mode in args.modes.split(","):
                    states = {
                        k: (
                            np.zeros((2, n, U), np.float32),
                            np.zeros((2, n, U), np.float32) if cell == "LSTM" else None,
                        )
                        for k in builds
                    }
                    wall = {k: [] for k in builds}
                    cpu = {k: [] for k in builds}
                    for r in range(args.rounds):
                        for k in ("base", "ours") if r % 2 else ("ours", "base"):
                            h, c = states[k]
                            if mode == "settled":
                                time.sleep(0.3)
                            t0, p0 = time.perf_counter(), time.process_time()
                            builds[k].recurrent_rows_threads(
                                cell, x, wp, h, c, None, bounds[k], False, th
                            )
                            wall[k].append(time.perf_counter() - t0)
                            cpu[k].append(time.process_time() - p0)
                    same = all(
                        a is None or np.array_equal(a, o)
                        for a, o in zip(states["base"], states["ours"], strict=True)
                    )
                    ratios = sorted(a / o for a, o in zip(wall["base"], wall["ours"], strict=True))
                    q = statistics.quantiles(ratios, n=4)
                    mb, mo = (statistics.median(wall[k]) * 1e6 for k in ("base", "ours"))
                    cb, co = (statistics.median(cpu[k]) * 1e6 for k in ("base", "ours"))
                    print(
                        f"{cell:5s} b{n:<4d} {th} t {mode:7s}: base {mb:7.0f} us  ours {mo:7.0f} us"
                        f"  base/ours {mb / mo:5.2f} (rounds {q[0]:.2f}-{q[2]:.2f})"
                        f"  cpu {cb:6.0f} / {co:6.0f} us  ours {flops / mo / 1e3:5.1f} GFLOP/s"
                        f"  same bits: {same}"
                    )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
