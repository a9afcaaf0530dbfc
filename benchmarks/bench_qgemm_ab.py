"""A/B of the int8 GEMM: this tree's ``qlinear`` against another build's (``--baseline``: the
``_qgemm`` extension file of an older checkout), in one process, on W6's shapes ((M, 1024) x
(1024, 1024), uint8 x int8, ReLU epilogue), interleaved rounds, medians, the load average.

Build a baseline from any commit without touching this tree, then compare::

    mkdir /tmp/base && git archive main | tar -x -C /tmp/base
    (cd /tmp/base && LEPTON_EXT_ONLY=qgemm,pool python setup.py -q build_ext --inplace)
    python benchmarks/bench_qgemm_ab.py --baseline /tmp/base/lepton_nn/kernels/_qgemm*.so

Prints per case (M, threads) each build's median time, the baseline's time over ours (> 1: this
tree is faster) with its quartiles over the rounds, our GMAC/s, and whether the two builds'
outputs are bit for bit the same. ``--clock cpu`` times with the thread's CPU time: steadier
on a loaded machine, meaningful at 1 thread only.
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


def _load(path: str):
    """The ``_qgemm`` extension at ``path`` as a module of its own (not in sys.modules)."""
    spec = importlib.util.spec_from_file_location("_qgemm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="the other build's _qgemm*.so")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--cases", default="1x1,64x1,256x1,1024x1", help="M x threads, ...")
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--budget", type=float, default=0.05, help="seconds per build per round")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    ap.add_argument("--settle", type=float, default=0.0, help="idle seconds before a round")
    args = ap.parse_args(argv)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter

    from lepton_nn.kernels import _qgemm as ours

    paths = glob.glob(args.baseline)
    if len(paths) != 1:
        raise SystemExit(f"--baseline {args.baseline!r} matches {len(paths)} files")
    if os.path.samefile(paths[0], ours.__file__):
        raise SystemExit("--baseline is this tree's own build")
    base = _load(paths[0])
    builds = {"base": base, "ours": ours}

    rng = np.random.default_rng(0)
    K, N = args.k, args.n
    w_q, w_scale = ours.quantize_weights(rng.standard_normal((N, K)).astype(np.float32))
    wp, cs = ours.pack_weights(w_q)
    bias = rng.standard_normal(N).astype(np.float32)
    print(f"isa {ours.isa()}; load average before: {os.getloadavg()}", flush=True)
    for case in args.cases.split(","):
        m, threads = (int(v) for v in case.split("x"))
        x_q = rng.integers(0, 256, (m, K)).astype(np.uint8)
        outs = {k: np.empty((m, N), np.float32) for k in builds}
        fns = {
            k: functools.partial(
                b.qlinear, x_q, np.float32(0.02), 128, wp, w_scale, cs, bias, 1, outs[k], threads
            )
            for k, b in builds.items()
        }
        for f in fns.values():
            f()
        same = np.array_equal(outs["base"], outs["ours"])
        reps = {}
        for k, f in fns.items():
            t0 = clock()
            f()
            reps[k] = max(1, int(args.budget / max(clock() - t0, 1e-7)))
        times: dict[str, list[float]] = {k: [] for k in fns}
        for r in range(args.rounds):
            for k in list(fns) if r % 2 == 0 else list(fns)[::-1]:
                if args.settle:
                    time.sleep(args.settle)
                    fns[k]()
                t0 = clock()
                for _ in range(reps[k]):
                    fns[k]()
                times[k].append((clock() - t0) / reps[k])
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios = sorted(b / o for b, o in zip(times["base"], times["ours"], strict=True))
        q1, q3 = ratios[len(ratios) // 4], ratios[3 * len(ratios) // 4]
        print(
            f"M {m:4d} threads {threads}: base {med['base'] * 1e6:9.1f} us  ours "
            f"{med['ours'] * 1e6:9.1f} us  base/ours {med['base'] / med['ours']:.3f} "
            f"(round ratios q1 {q1:.3f} q3 {q3:.3f})  ours {m * K * N / med['ours'] / 1e9:5.1f} "
            f"GMAC/s  outputs {'bit-identical' if same else 'DIFFER'}",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
