"""A/B of the packed Dense kernel: this tree's ``dense_packed_forward`` against another build's
(``--baseline``: the ``_dense`` extension file of an older checkout), in one process, on the
784-512-256-10 MLP (ReLU, ReLU, identity), interleaved rounds, medians, the load average.

Build a baseline from any commit without touching this tree, then compare::

    mkdir /tmp/base && git archive main | tar -x -C /tmp/base
    (cd /tmp/base && python setup.py -q build_ext --inplace)
    python benchmarks/bench_dense_ab.py --baseline /tmp/base/lepton_nn/kernels/_dense*.so

If the baseline's directory holds a ``_pool`` extension too, the baseline runs on that pool
(its own workers; while one build runs, the other's workers are put to sleep): an A/B of
pool and kernel together, as the two trees ship them. Without one, the baseline binds this
tree's pool (and runs alone if their pool API versions differ).

``--baseline cols``: this build against itself with the chain's third output on the first's
memory (as the runtime's arena lays them out at one thread), which makes the kernel split a
threaded chain by columns (a phase per layer) where it would split it by rows (64x2)::

    python benchmarks/bench_dense_ab.py --baseline cols --cases 32x2,64x2

Prints per case (batch, threads) each build's median time, the baseline's time over ours
(> 1: this tree is faster) with its quartiles over the rounds, our GFLOP/s, and whether the two
builds' outputs are bit for bit the same. ``--clock cpu`` times with the thread's CPU time:
steadier on a loaded machine, meaningful at 1 thread only; ``--clock process`` the process's
CPU time (every thread's, idle spinning included).
"""

from __future__ import annotations

import argparse
import functools
import glob
import importlib.util
import os
import statistics
import sys
import time

import numpy as np

SIZES = (784, 512, 256, 10)


def _module(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load(path: str, ours_pool):
    """(the ``_dense`` extension at ``path`` as a module of its own, not in sys.modules, and the
    pool it runs on): the ``_pool`` beside it if there is one, else this tree's."""
    pools = glob.glob(os.path.join(os.path.dirname(path), "_pool.*"))
    if not pools or os.path.samefile(pools[0], ours_pool.__file__):
        return _module("_dense", path), ours_pool
    pool = _module("_pool", pools[0])
    name = "lepton_nn.kernels._pool"
    saved = sys.modules[name]
    sys.modules[name] = pool  # the baseline's _dense binds its own pool at import
    try:
        return _module("_dense", path), pool
    finally:
        sys.modules[name] = saved


def _switch_to(pool, pools) -> None:
    """Let ``pool``'s workers spin between jobs again, the others' sleep."""
    for p in pools:
        if p is not pool:
            p.set_spin_us(0)
    pool.set_spin_us(pool.DEFAULT_SPIN_US)
    pool.wake()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True,
                    help="the other build's _dense*.so, or 'cols'")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--cases", default="1x1,1x2,64x1,64x2", help="batch x threads, ...")
    ap.add_argument("--budget", type=float, default=0.02, help="seconds per build per round")
    ap.add_argument("--clock", choices=("wall", "cpu", "process"), default="wall")
    args = ap.parse_args(argv)
    clock = {"wall": time.perf_counter, "cpu": time.thread_time, "process": time.process_time}[
        args.clock
    ]

    from lepton_nn.backend.reference import ReferenceBackend
    from lepton_nn.kernels import _dense as ours
    from lepton_nn.kernels import _pool as ours_pool

    cols = args.baseline == "cols"
    paths = [ours.__file__] if cols else glob.glob(args.baseline)
    if len(paths) != 1:
        raise SystemExit(f"--baseline {args.baseline!r} matches {len(paths)} files")
    if not cols and os.path.samefile(paths[0], ours.__file__):
        raise SystemExit("--baseline is this tree's own build")
    base, base_pool = (ours, ours_pool) if cols else _load(paths[0], ours_pool)
    builds = {"base": base, "ours": ours}
    pool_of = {"base": base_pool, "ours": ours_pool}
    pools = list({id(p): p for p in pool_of.values()}.values())
    if len(pools) > 1:
        print(f"the baseline runs on its own pool ({base_pool.__file__})")

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
        if cols:  # the third output on the first's memory: split by columns
            first = outs["base"][0]
            outs["base"] = (first, outs["base"][1], first.reshape(-1)[: m * 10].reshape(m, 10))
        fns = {
            k: functools.partial(b.dense_packed_forward, x, panels, bs, acts, outs[k], threads)
            for k, b in builds.items()
        }
        for k, f in fns.items():
            _switch_to(pool_of[k], pools)
            f()
        same = np.array_equal(outs["base"][-1], outs["ours"][-1])
        reps = {}
        for k, f in fns.items():
            _switch_to(pool_of[k], pools)
            f()
            t0 = clock()
            f()
            reps[k] = max(1, int(args.budget / max(clock() - t0, 1e-7)))
        times: dict[str, list[float]] = {k: [] for k in fns}
        for r in range(args.rounds):
            for k in list(fns) if r % 2 == 0 else list(fns)[::-1]:
                _switch_to(pool_of[k], pools)
                fns[k]()  # the woken workers back on their cores
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
