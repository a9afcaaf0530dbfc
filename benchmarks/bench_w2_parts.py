"""W2's eager training step (784-512-256-10, batch 128, Adam; the case ``lepton-nn bench``
reports) split into its parts, each part's time per step, and the same for another checkout,
in alternating processes (issue 23: W2 at >= 80 % of the fp32 GEMM peak).

    python benchmarks/bench_w2_parts.py [--threads 1] [--steps 300] [--rounds 3]
                                         [--baseline /path/to/other/checkout] [--compiled]

Parts: each GEMM by shape (``gemm A'(m, k) B'(k, n)``, the backend's ``gemm``), the bias and
activation epilogues, the loss, Adam's update, and the rest (Python, autograd, allocation):
the step's time less the parts. Times are the thread's CPU time at 1 thread (steadier on a
busy machine: time the OS gave to another process is not counted; wall time at 2 threads),
medians over the steps, per round. With ``--baseline`` (a checkout with its extensions built
in place, say ``git archive <commit> | tar -x -C DIR`` plus ``setup.py build_ext --inplace``)
each round runs the baseline's process, then this tree's, so both see the same load. Prints
the load average with every round. ``--compiled`` times the step through ``lepton_nn.compile``
(the Numba replay: one call, no parts) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = (
    "bias_act_forward",
    "bias_act_backward",
    "softmax_xent_forward",
    "softmax_xent_backward",
    "adam_step",
)


POOL_KEYS = {
    "jobs": "pool jobs / step",
    "worker_tasks": "worker's tasks / step",
    "sleeps": "worker sleeps / step",
}
COUNTS = tuple(POOL_KEYS.values())


class PoolCounts:
    """The shared pool's counters (``lepton_nn.kernels._pool.stats``) over the timed steps:
    jobs posted, tasks the worker ran (at 2 threads, against the step's ~130 GEMM units,
    packing groups and Adam chunks: the worker's share of the parallel work), and times the
    worker went to sleep (each costs a wake-up)."""

    def start(self):
        self.s0 = self._stats()

    @staticmethod
    def _stats() -> dict:
        try:
            from lepton_nn.kernels import _pool
        except ImportError:
            return {}
        return _pool.stats()

    def per_step(self, steps: int) -> dict:
        s1 = self._stats()
        return {name: (s1[k] - self.s0[k]) / steps for k, name in POOL_KEYS.items() if k in s1}


def profile(threads: int, steps: int) -> dict:
    """Median time per step of each part of W2's eager step, in this process."""
    import time

    import numpy as np

    from lepton_nn import optim
    from lepton_nn.backend import get_backend
    from lepton_nn.bench.cases import configure_threads
    from lepton_nn.bench.engines.lepton import _loss, lepton_mlp
    from lepton_nn.bench.workloads import ADAM, W2, glorot_weights, training_data, training_flops

    limiter = configure_threads("lepton", threads)  # noqa: F841 (kept for the run)
    clock = time.thread_time if threads == 1 else time.perf_counter
    be = get_backend()
    step_parts: dict[str, float] = {}

    def timed(name, fn):
        def call(*args):
            key = name
            if name == "gemm":
                a, ta, b, tb = args[:4]
                m, k = (a.shape[::-1] if ta else a.shape)[:2]
                n = b.shape[0] if tb else b.shape[1]
                key = f"gemm {'X^T' if ta else 'X'} {m}x{k}x{n}{' B^T' if tb else ''}"
            t = clock()
            out = fn(*args)
            step_parts[key] = step_parts.get(key, 0.0) + clock() - t
            return out

        return call

    for name in ("gemm", *PARTS):
        setattr(be, name, timed(name, getattr(be, name)))
    x, y = training_data(W2)
    model = lepton_mlp(W2.sizes, glorot_weights(W2.sizes))
    opt = optim.Adam(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
    loss_fn = _loss(W2.loss)
    rows: dict[str, list[float]] = {}
    pool = PoolCounts()
    for i in range(steps + 20):
        if i == 20:
            pool.start()
        step_parts.clear()
        t = clock()
        opt.zero_grad()
        loss_fn(model(x[i % len(x)]), y[i % len(y)]).backward()
        opt.step()
        total = clock() - t
        if i < 20:  # warm-up
            continue
        step_parts["rest (Python, autograd, allocation)"] = total - sum(step_parts.values())
        step_parts["step"] = total
        for k, v in step_parts.items():
            rows.setdefault(k, []).append(v)
    med = {k: float(np.median(v)) for k, v in rows.items()}
    med["step GFLOP/s"] = training_flops("W2") * W2.batch / med["step"] / 1e9
    return {**med, **pool.per_step(steps)}


def compiled(threads: int, steps: int) -> dict:
    """Median time per step of W2's step through ``lepton_nn.compile`` (the Numba replay),
    in this process: the same clocks as :func:`profile`, no parts (one call)."""
    import time

    import numpy as np

    import lepton_nn
    from lepton_nn import optim
    from lepton_nn.bench.cases import configure_threads
    from lepton_nn.bench.engines.lepton import _loss, lepton_mlp
    from lepton_nn.bench.workloads import ADAM, W2, glorot_weights, training_data, training_flops

    limiter = configure_threads("lepton", threads)  # noqa: F841 (kept for the run)
    clock = time.thread_time if threads == 1 else time.perf_counter
    x, y = training_data(W2)
    model = lepton_mlp(W2.sizes, glorot_weights(W2.sizes))
    opt = optim.Adam(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
    loss_fn = _loss(W2.loss)

    def train_step(xb, yb):
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    step = lepton_nn.compile(train_step)
    times = []
    pool = PoolCounts()
    for i in range(steps + 20):
        if i == 20:
            pool.start()
        t = clock()
        step(x[i % len(x)], y[i % len(y)])
        if i >= 20:  # capture, validation, compilation and warm-up
            times.append(clock() - t)
    med = float(np.median(times))
    return {"compiled step": med, "step": med, **pool.per_step(steps),
            "step GFLOP/s": training_flops("W2") * W2.batch / med / 1e9}  # fmt: skip


def _run(tree: str, threads: int, steps: int, fn: str = "profile") -> dict:
    code = (
        f"import sys, json; sys.path.insert(0, {tree!r}); sys.path.insert(1, {HERE!r}); "
        f"import bench_w2_parts as b; print(json.dumps(b.{fn}({threads}, {steps})))"
    )
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", help="another checkout (extensions built in place)")
    ap.add_argument("--compiled", action="store_true",
                    help="time the step through lepton_nn.compile instead (no parts)")  # fmt: skip
    args = ap.parse_args(argv)
    ours = os.path.dirname(HERE)
    trees = {"baseline": args.baseline, "this tree": ours} if args.baseline else {"this": ours}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name, tree in trees.items():
            fn = "compiled" if args.compiled else "profile"
            results[name].append(_run(tree, args.threads, args.steps, fn))
        print(f"round {r + 1}: load average {os.getloadavg()}", flush=True)
    keys: list[str] = []
    for name in trees:
        keys += [k for k in results[name][0] if k not in (*keys, "step", "step GFLOP/s")]
    clock = "CPU" if args.threads == 1 else "wall"
    kind = "compiled" if args.compiled else "eager"
    print(f"\nW2 {kind} step, {args.threads} thread(s), {clock} time per step, us (median of")
    print(f"{args.steps} steps; the median over {args.rounds} rounds)")
    print(f"{'part':48s}" + "".join(f"{name:>14s}" for name in trees))
    counts = [k for k in COUNTS if k in keys]
    for k in [*(k for k in keys if k not in COUNTS), "step", "step GFLOP/s", *counts]:
        cells = []
        for name in trees:
            vals = sorted(res.get(k, 0.0) for res in results[name])
            v = vals[len(vals) // 2]
            plain = k == "step GFLOP/s" or k in COUNTS
            cells.append(f"{v:14.1f}" if plain else f"{v * 1e6:14.1f}")
        print(f"{k:48s}" + "".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
