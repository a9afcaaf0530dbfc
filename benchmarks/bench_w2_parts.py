"""W2's eager training step (784-512-256-10, batch 128, Adam; the case ``lepton-nn bench``
reports) split into its parts, each part's time per step, and the same for another checkout,
in alternating processes (issue 23: W2 at >= 80 % of the fp32 GEMM peak).

    python benchmarks/bench_w2_parts.py [--threads 1] [--steps 300] [--rounds 3]
                                         [--baseline /path/to/other/checkout] [--compiled]
                                         [--ahead-ab]

Parts: each GEMM by shape (``gemm A'(m, k) B'(k, n)``, the backend's ``gemm``), the bias and
activation epilogues, the loss, Adam's update, and the rest (Python, autograd, allocation): the
step's time less the parts. Times are the thread's CPU time at 1 thread (steadier on a busy
machine: time the OS gave to another process is not counted; wall time at 2 threads), medians
over the steps, per round; beside them the process's CPU time per step (every thread of it:
BLAS or pool workers spinning show there, "CPUs busy" = process CPU / step time, ~1.0 at 1
thread), and the fp32 GEMM peak measured in the same process (``lepton_nn.bench``'s probe, its
fastest sample, on the step's clock) with the step's % of it. Each row is the median over the
rounds (with an even count, the mean of the middle two), the step's spread over the rounds
beside it, and GFLOP/s is that median step's, not a median of its own (the two came from
different rounds before). With ``--baseline`` (a checkout with its extensions built in place,
say ``git archive <commit> | tar -x -C DIR`` plus ``setup.py build_ext --inplace``) each round
runs the baseline's process, then this tree's, so both see the same load. Prints the load
average with every round. ``--compiled`` times the step through ``lepton_nn.compile`` (the
Numba replay: one call, no parts) instead.
``--ahead-ab`` runs the eager step with the gemm kernel's fetch-ahead on and off on alternate
steps in each process (an A/B that sees one load), and prints each GEMM's and the step's
medians per setting and their ratio per process.
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
PROCESS_CPU = "process CPU (all threads)"
PEAK = "fp32 GEMM peak GFLOP/s (same process)"


def peak(clock, samples: int = 5, n: int | None = None) -> float:
    """The fp32 GEMM peak (GFLOP/s) on the step's clock: ``lepton_nn.bench``'s probe (NumPy's
    sgemm on (n, n) x (n, n), the fastest of ``samples`` samples of ~0.05 s), but timed with
    ``clock`` (the thread's CPU time at 1 thread: the probe's wall time counts other
    processes' turns on the core, which the step's CPU time does not)."""
    import numpy as np

    from lepton_nn.bench.machine import PEAK_N

    n = n or PEAK_N
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    c = np.matmul(a, b)
    t = clock()
    np.matmul(a, b, out=c)
    calls = max(1, int(0.05 / max(clock() - t, 1e-6)))
    best = 0.0
    for _ in range(samples):
        t = clock()
        for _ in range(calls):
            np.matmul(a, b, out=c)
        best = max(best, 2.0 * n**3 * calls / max(clock() - t, 1e-9) / 1e9)
    return best


def summarize(rounds: list[dict]) -> dict:
    """One row per key over the rounds: the median (the mean of the middle two for an even
    count), ``step spread`` (min, max), ``step GFLOP/s`` of the median step and ``CPUs busy``
    (the median process CPU over the median step time)."""
    import statistics

    keys = [k for k in rounds[0] if k != "flops"]
    out = {k: statistics.median(r.get(k, 0.0) for r in rounds) for k in keys}
    steps = [r["step"] for r in rounds]
    out["step spread"] = (min(steps), max(steps))
    out["step GFLOP/s"] = rounds[0]["flops"] / out["step"] / 1e9
    if PEAK in out:
        out["% of peak"] = 100 * out["step GFLOP/s"] / out[PEAK]
    if PROCESS_CPU in out:
        out["CPUs busy"] = out[PROCESS_CPU] / out["step"]
    return out


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
        t, c = clock(), time.process_time()
        opt.zero_grad()
        loss_fn(model(x[i % len(x)]), y[i % len(y)]).backward()
        opt.step()
        total, cpu = clock() - t, time.process_time() - c
        if i < 20:  # warm-up
            continue
        step_parts["rest (Python, autograd, allocation)"] = total - sum(step_parts.values())
        step_parts["step"] = total
        step_parts[PROCESS_CPU] = cpu
        for k, v in step_parts.items():
            rows.setdefault(k, []).append(v)
    med = {k: float(np.median(v)) for k, v in rows.items()}
    return {**med, **pool.per_step(steps), "flops": training_flops("W2") * W2.batch,
            PEAK: peak(clock)}  # fmt: skip


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
    times, cpus = [], []
    pool = PoolCounts()
    for i in range(steps + 20):
        if i == 20:
            pool.start()
        t, c = clock(), time.process_time()
        step(x[i % len(x)], y[i % len(y)])
        if i >= 20:  # capture, validation, compilation and warm-up
            times.append(clock() - t)
            cpus.append(time.process_time() - c)
    med = float(np.median(times))
    return {"compiled step": med, "step": med, PROCESS_CPU: float(np.median(cpus)),
            **pool.per_step(steps), "flops": training_flops("W2") * W2.batch,
            PEAK: peak(clock)}  # fmt: skip


def ahead_ab(threads: int, steps: int) -> dict:
    """The eager step with the gemm kernel's fetch-ahead (``_gemm.set_fetch_ahead``) on and
    off on alternate steps, in this process: the median time of each GEMM shape and of the
    step, per setting (``... on`` / ``... off``)."""
    import time

    import numpy as np

    from lepton_nn import optim
    from lepton_nn.backend import get_backend
    from lepton_nn.bench.cases import configure_threads
    from lepton_nn.bench.engines.lepton import _loss, lepton_mlp
    from lepton_nn.bench.workloads import ADAM, W2, glorot_weights, training_data
    from lepton_nn.kernels import _gemm

    limiter = configure_threads("lepton", threads)  # noqa: F841 (kept for the run)
    clock = time.thread_time if threads == 1 else time.perf_counter
    be, parts = get_backend(), {}
    gemm = be.gemm

    def timed(a, ta, b, tb, out=None):
        t = clock()
        r = gemm(a, ta, b, tb, out)
        key = f"gemm {'X^T' if ta else 'X'} {r.shape[0]}x{a.shape[0 if ta else 1]}x{r.shape[1]}"
        parts[key + (" B^T" if tb else "")] = clock() - t
        return r

    be.gemm = timed
    x, y = training_data(W2)
    model = lepton_mlp(W2.sizes, glorot_weights(W2.sizes))
    opt = optim.Adam(model.parameters(), lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"])
    loss_fn = _loss(W2.loss)
    rows: dict[str, list[float]] = {}
    try:
        for i in range(2 * steps + 20):
            on = i % 2 == 0
            _gemm.set_fetch_ahead(on)
            parts.clear()
            t = clock()
            opt.zero_grad()
            loss_fn(model(x[i % len(x)]), y[i % len(y)]).backward()
            opt.step()
            parts["step"] = clock() - t
            if i >= 20:
                for k, v in parts.items():
                    rows.setdefault(f"{k} {'on' if on else 'off'}", []).append(v)
    finally:
        _gemm.set_fetch_ahead(True)
    return {k: float(np.median(v)) for k, v in sorted(rows.items())}


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
    ap.add_argument("--ahead-ab", action="store_true",
                    help="the gemm kernel's fetch-ahead on / off on alternate steps, in each "
                         "process (no baseline)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.ahead_ab:
        return _ahead_report(args)
    ours = os.path.dirname(HERE)
    trees = {"baseline": args.baseline, "this tree": ours} if args.baseline else {"this": ours}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name, tree in trees.items():
            fn = "compiled" if args.compiled else "profile"
            results[name].append(_run(tree, args.threads, args.steps, fn))
        print(f"round {r + 1}: load average {os.getloadavg()}", flush=True)
    table = {name: summarize(results[name]) for name in trees}
    last = ("step", "step spread", "step GFLOP/s", PEAK, "% of peak", PROCESS_CPU, "CPUs busy",
            *COUNTS)  # fmt: skip
    keys: list[str] = []
    for name in trees:
        keys += [k for k in table[name] if k not in (*keys, *last)]
    clock = "CPU" if args.threads == 1 else "wall"
    kind = "compiled" if args.compiled else "eager"
    print(f"\nW2 {kind} step, {args.threads} thread(s), {clock} time per step, us (median of")
    print(f"{args.steps} steps; the median over {args.rounds} rounds)")
    print(f"{'part':48s}" + "".join(f"{name:>18s}" for name in trees))
    for k in [*keys, *(k for k in last if k in table[next(iter(trees))])]:
        cells = []
        for name in trees:
            v = table[name].get(k, 0.0)
            if k == "step spread":
                cells.append(f"{v[0] * 1e6:8.0f} - {v[1] * 1e6:7.0f}")
            elif k in ("step GFLOP/s", PEAK, "% of peak", "CPUs busy") or k in COUNTS:
                cells.append(f"{v:18.2f}")
            else:
                cells.append(f"{v * 1e6:18.1f}")
        print(f"{k:48s}" + "".join(cells))
    return 0


def _ahead_report(args) -> int:
    import statistics

    runs = []
    for r in range(args.rounds):
        runs.append(_run(os.path.dirname(HERE), args.threads, args.steps, "ahead_ab"))
        print(f"round {r + 1}: load average {os.getloadavg()}", flush=True)
    print(f"\nfetch-ahead on / off, alternate steps; per process the median of {args.steps}")
    print("steps each, us; then off / on per process (> 1: on is faster)")
    for k in [k[:-3] for k in runs[0] if k.endswith(" on")]:
        on = [run[k + " on"] for run in runs]
        off = [run[k + " off"] for run in runs]
        ratios = " ".join(f"{b / a:5.3f}" for a, b in zip(on, off))
        print(f"{k:32s} on {statistics.median(on) * 1e6:8.1f} off "
              f"{statistics.median(off) * 1e6:8.1f}   {ratios}")  # fmt: skip
    return 0


def test_summary_gflops_is_the_median_steps():
    """Two rounds, one slow: the step is their mean and GFLOP/s is that step's (the old table
    took the upper value of each row on its own: the slow round's step beside the fast
    round's GFLOP/s, 9,064 us at 48.9 GFLOP/s for a 308 MFLOP step)."""
    fast = {"step": 6.3e-3, PROCESS_CPU: 6.3e-3, "flops": 308e6}
    slow = {"step": 9.1e-3, PROCESS_CPU: 9.2e-3, "flops": 308e6}
    got = summarize([fast, slow])
    assert abs(got["step"] - 7.7e-3) < 1e-12
    assert abs(got["step GFLOP/s"] - 308e6 / 7.7e-3 / 1e9) < 1e-9
    assert got["step spread"] == (6.3e-3, 9.1e-3)
    assert abs(got["CPUs busy"] - 7.75 / 7.7) < 1e-9


if __name__ == "__main__":
    raise SystemExit(main())
