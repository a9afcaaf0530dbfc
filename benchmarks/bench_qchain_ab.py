"""The int8 784-512-256-10 MLP at batch 1 (issue 23's < 6 us): the compiled chain call
(``qdense_chain_forward``) at each thread count, ``predict`` on a runtime loaded with that many
threads, and, with ``--baseline``, another build's chain (the ``_qgemm`` extension file of an
older checkout, one thread) in the same process. Interleaved rounds, medians, load average.

Build a baseline from any commit without touching this tree, then compare::

    mkdir /tmp/base && git archive main | tar -x -C /tmp/base
    (cd /tmp/base && LEPTON_EXT_ONLY=qgemm,pool python setup.py -q build_ext --inplace)
    python benchmarks/bench_qchain_ab.py --baseline /tmp/base/lepton_nn/kernels/_qgemm*.so

Prints per engine the median, 10th percentile and minimum time per call, the baseline's median
over each of ours (> 1: this tree is faster), ``predict``'s cost over its chain call (the
Python around it: checks, the inf/NaN pass, the lock, the output copy), and whether every
engine gives the baseline's bits. ``--clock cpu`` times with the calling thread's CPU time:
steadier on a loaded machine, meaningful at 1 thread only (at 2 the other thread's share is
not counted). Each engine's round is ``--reps`` calls back to back (the pool's worker spins
between them, as in a burst of requests).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import sys
import tempfile
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
    ap.add_argument("--baseline", help="another build's _qgemm*.so (its chain, 1 thread)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--reps", type=int, default=200, help="calls per engine per round")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args(argv)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    threads = [int(t) for t in args.threads.split(",")]

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_runtime as br

    import lepton_nn.runtime as rt
    from lepton_nn.kernels import _qgemm as ours

    x = np.random.default_rng(1).standard_normal((1, br.SIZES[0])).astype(np.float32)
    fns, outs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        path = br._files(br.make_weights(), tmp)["int8"]
        models = {t: rt.load(path, threads=t) for t in threads}
    (fn, (chain, bufs), _), *rest = models[1].plan_for(1).head
    assert fn is ours.qdense_chain_forward and not rest, "not the one-call batch-1 plan"
    widths = [b.shape[1] for b in bufs]
    if args.baseline:
        paths = glob.glob(args.baseline)
        if len(paths) != 1:
            raise SystemExit(f"--baseline {args.baseline!r} matches {len(paths)} files")
        if os.path.samefile(paths[0], ours.__file__):
            raise SystemExit("--baseline is this tree's own build")
        base = _load(paths[0])
        bc = base.qdense_chain_prepare(chain.specs, 1, chain.k)
        bo = tuple(np.empty((1, n), np.float32) for n in widths)
        fns["baseline chain, 1 thread"] = lambda: base.qdense_chain_forward(x, bc, bo)
        outs["baseline chain, 1 thread"] = bo[-1]
    for t in threads:
        c = ours.qdense_chain_prepare(chain.specs, 1, chain.k, t)
        o = tuple(np.empty((1, n), np.float32) for n in widths)
        fns[f"chain, {t} thread(s)"] = lambda c=c, o=o: ours.qdense_chain_forward(x, c, o)
        outs[f"chain, {t} thread(s)"] = o[-1]
        fns[f"predict, {t} thread(s)"] = lambda m=models[t]: m.predict(x)
    for f in fns.values():
        f()
    want = next(iter(outs.values())).copy()
    same = all(np.array_equal(o, want) for o in outs.values()) and all(
        np.array_equal(m.predict(x), want) for m in models.values()
    )

    print(f"load average before: {os.getloadavg()}; clock: {args.clock}")
    ts = {k: [] for k in fns}
    for _ in range(args.rounds):
        for k, f in fns.items():
            f()
            t0 = clock()
            for _ in range(args.reps):
                f()
            ts[k].append((clock() - t0) / args.reps)
    med = {k: float(np.median(v)) for k, v in ts.items()}
    print("| engine | median (us) | p10 (us) | min (us) | baseline / this |")
    print("|---|---:|---:|---:|---:|")
    b = med.get("baseline chain, 1 thread")
    for k, v in ts.items():
        ratio = f"{b / med[k]:.2f}" if b else "-"
        print(f"| {k} | {med[k] * 1e6:.2f} | {np.percentile(v, 10) * 1e6:.2f} "
              f"| {min(v) * 1e6:.2f} | {ratio} |")  # fmt: skip
    for t in threads:
        over = med[f"predict, {t} thread(s)"] - med[f"chain, {t} thread(s)"]
        print(f"predict over its chain call, {t} thread(s): {over * 1e6:.2f} us (medians)")
    print(f"every engine the same bits: {same}")
    print(f"load average after: {os.getloadavg()}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raise SystemExit(main())
