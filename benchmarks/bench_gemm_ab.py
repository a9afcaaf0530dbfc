"""The training GEMM of this tree against another checkout's, in one process, interleaved, on
W2's products (issue 23: W2 >= 80 % of the fp32 GEMM peak).

    python benchmarks/bench_gemm_ab.py --baseline /path/to/other/checkout [--threads 1]
                                       [--rounds 41]

The baseline's ``lepton_nn/kernels/_gemm*.so`` (built in place, say ``git archive <commit> |
tar -x -C DIR`` and ``LEPTON_EXT_ONLY=gemm python setup.py build_ext --inplace``) is loaded
beside ours. Each round times every shape once on each (alternating which goes first), with
the thread's CPU time at 1 thread (time given to another process is not counted) and wall
time at more; prints medians, their ratio and the spread (quartiles of the per-round ratio),
the load average at the start and end, and checks both give the same bits.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

# (name, m, k, n, ta, tb): C (m, n) = A' (m, k) B' (k, n), W2 at batch 128
SHAPES = [
    ("L1 X W", 128, 784, 512, False, False),
    ("L1 X^T Gz", 784, 128, 512, True, False),
    ("L2 X W", 128, 512, 256, False, False),
    ("L2 X^T Gz", 512, 128, 256, True, False),
    ("L2 Gz W^T", 128, 256, 512, False, True),
    ("L3 X W", 128, 256, 10, False, False),
    ("L3 Gz W^T", 128, 10, 256, False, True),
]


def load_baseline(tree: str):
    path = glob.glob(os.path.join(tree, "lepton_nn", "kernels", "_gemm*.so"))
    if not path:
        raise SystemExit(f"no built _gemm in {tree}")
    spec = importlib.util.spec_from_file_location("baseline._gemm", path[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=41)
    args = ap.parse_args(argv)
    from lepton_nn.kernels import _gemm  # built in place (not at import: pytest collects this)

    base = load_baseline(args.baseline)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    print(f"load average at start: {os.getloadavg()}")
    rng = np.random.default_rng(0)
    cases = []
    for name, m, k, n, ta, tb in SHAPES:
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        o1, o2 = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
        base.gemm(a, ta, b, tb, o1, args.threads)
        _gemm.gemm(a, ta, b, tb, o2, args.threads)
        if not np.array_equal(o1, o2):
            raise SystemExit(f"{name}: the two kernels differ")
        cases.append((name, 2.0 * m * n * k, a, ta, b, tb, o1, o2))
    times = {c[0]: ([], []) for c in cases}
    for r in range(args.rounds):
        for name, _fl, a, ta, b, tb, o1, o2 in cases:
            order = ((0, base, o1), (1, _gemm, o2)) if r % 2 else ((1, _gemm, o2), (0, base, o1))
            for which, mod, o in order:
                t = clock()
                mod.gemm(a, ta, b, tb, o, args.threads)
                times[name][which].append(clock() - t)
    print(f"load average at end: {os.getloadavg()}")
    what = "CPU" if args.threads == 1 else "wall"
    print(f"{args.threads} thread(s), {what} time, median of {args.rounds} rounds")
    print(f"{'product':12s} {'m x k x n':>14s} {'base us':>9s} {'ours us':>9s} {'GF/s':>11s}"
          f" {'base/ours':>9s} {'(quartiles)':>14s}")  # fmt: skip
    base_sum = ours_sum = 0.0
    for name, fl, *_ in cases:
        t0, t1 = np.array(times[name][0]), np.array(times[name][1])
        m0, m1 = np.median(t0), np.median(t1)
        q = np.percentile(t0 / t1, [25, 75])
        base_sum, ours_sum = base_sum + m0, ours_sum + m1
        shape = next(f"{s[1]}x{s[2]}x{s[3]}" for s in SHAPES if s[0] == name)
        print(f"{name:12s} {shape:>14s} {m0 * 1e6:9.1f} {m1 * 1e6:9.1f} "
              f"{fl / m0 / 1e9:5.1f}/{fl / m1 / 1e9:5.1f} {m0 / m1:9.3f} "
              f"({q[0]:.3f}-{q[1]:.3f})")  # fmt: skip
    print(f"{'all':12s} {'':>14s} {base_sum * 1e6:9.1f} {ours_sum * 1e6:9.1f} {'':>11s} "
          f"{base_sum / ours_sum:9.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
