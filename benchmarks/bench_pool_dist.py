"""Per-call time distributions of the runtime at 1 and 2 threads (issue 23: 2 threads must be
reliably faster than 1), each (case, threads) in several fresh processes, interleaved.

Cases: ``mlp1``/``mlp64`` (the 784-512-256-10 MLP of benchmarks/bench_vs_ort.py, fp32, batch 1
and 64; ``forward``), ``q8mlp1`` (the same MLP quantized to int8, batch 1, ``forward``: the
int8 chain), ``cnn64`` (bench_vs_ort.py's CNN, batch 64). Each process loads the model, warms
it up, then runs ``--calls`` calls back to back and prints the median, 5th and 95th percentile
of the per-call times; at 2 threads it also records every pool job (``_pool.start_trace``):
in how many jobs worker 1 ran a task, how many of those started on the caller's CPU, the time
from the post to the worker's first task, and the pool's ``nudges`` (times a worker was moved
off its caller's CPU) where the pool has them. With ``--old DIR`` (a directory holding another
build of the ``lepton_nn`` package) every process is run once with it and once with this
checkout, alternately: an A/B of two pools, interleaved.

    PYTHONPATH=. python benchmarks/bench_pool_dist.py [--cases mlp1,q8mlp1,mlp64,cnn64]
        [--threads 1,2] [--procs 3] [--calls 2000] [--old DIR] [--no-apart]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _model_file(case: str, tmp: str) -> tuple[str, tuple, int]:
    """(path of the .lnn file, input shape, batch) of a case."""
    sys.path.insert(0, HERE)
    import bench_vs_ort as B

    import lepton_nn as L

    rng = np.random.default_rng(0)
    name, batch = ("cnn", case[3:]) if case.startswith("cnn") else ("mlp", case.split("mlp")[1])
    model, _, shape = (B._cnn if name == "cnn" else B._mlp)(rng)
    path = os.path.join(tmp, f"{case}.lnn")
    if case.startswith("q8"):
        from lepton_nn.compress import quantize

        model = quantize(model)
    L.save(model, path)
    return path, shape, int(batch)


def _sched(tid: int) -> dict:
    """Migrations and context switches of one thread of this process (/proc)."""
    out = {}
    try:
        with open(f"/proc/self/task/{tid}/sched") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key = key.strip()
                if key in ("se.nr_migrations", "nr_voluntary_switches", "nr_involuntary_switches"):
                    out[key.split(".")[-1]] = int(float(val))
                elif key == "se.sum_exec_runtime":
                    out["sum_exec_runtime"] = float(val)
    except OSError:
        pass
    return out


def _last_cpu(tid: int) -> int:
    """The CPU a thread of this process last ran on (/proc/self/task/TID/stat, field 39)."""
    with open(f"/proc/self/task/{tid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[36])


def _worker_tid(_pool, tids) -> int:
    """Worker 1's thread id (older pools do not say: the busiest other thread)."""
    if hasattr(_pool, "worker_ids"):
        ids = _pool.worker_ids()
        return ids[0] if ids else 0
    busy = {t: _sched(t).get("sum_exec_runtime", 0.0) for t in tids if t != os.getpid()}
    return max(busy, key=busy.get) if busy else 0


def child(case: str, threads: int, calls: int) -> dict:
    import lepton_nn.runtime as rt
    from lepton_nn.kernels import _pool

    with tempfile.TemporaryDirectory() as tmp:
        path, shape, batch = _model_file(case, tmp)
        m = rt.load(path, threads=threads)
    x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
    t0, k = time.perf_counter(), 0
    while k < 50 or time.perf_counter() - t0 < 0.3:  # warm, and every worker started
        m.forward(x)
        k += 1
    tids = sorted(int(t) for t in os.listdir("/proc/self/task"))
    before = {t: _sched(t) for t in tids}
    stats0 = _pool.stats()
    trace = hasattr(_pool, "start_trace") and threads > 1
    if trace:
        _pool.start_trace(calls * 4)
    me, worker = os.getpid(), (_worker_tid(_pool, tids) if threads > 1 else 0)
    ts = np.empty(calls)
    clock = time.perf_counter
    same = seen = 0
    for i in range(calls):
        t0 = clock()
        m.forward(x)
        ts[i] = clock() - t0
        if worker and i % 25 == 24:  # which CPUs the two threads last ran on (not timed)
            seen += 1
            same += _last_cpu(me) == _last_cpu(worker)
    rec = _pool.stop_trace() if trace else None
    stats1 = _pool.stats()
    ts *= 1e6
    p5, p50, p95 = np.percentile(ts, [5, 50, 95])
    res = {"case": case, "threads": threads, "median": p50, "p5": p5, "p95": p95,
           "min": float(ts.min())}  # fmt: skip
    res["same_cpu_samples"] = same / seen if seen else None
    short = {"nr_migrations": "migr", "nr_voluntary_switches": "vol"}
    short["nr_involuntary_switches"] = "invol"
    res["sched"] = {
        who: {short[k]: v - before[t].get(k, 0) for k, v in _sched(t).items() if k in short}
        for who, t in (("caller", me), ("worker", worker))
        if t
    }
    res["pool"] = {k: stats1[k] - stats0[k] for k in ("jobs", "alone", "worker_tasks", "sleeps")}
    for k in ("shared_cpu", "nudges", "backoffs"):
        if k in stats1:
            res["pool"][k] = stats1[k] - stats0[k]
    if rec is not None and len(rec):
        took = rec["claim_ns"] >= 0
        res["trace"] = {
            "jobs": int(len(rec)),
            "worker_took": float(took.mean()),
            "on_caller_cpu": float((rec["worker_cpu"] == rec["caller_cpu"])[took].mean())
            if took.any()
            else 0.0,
            "claim_us_p50": float(np.median(rec["claim_ns"][took]) / 1e3) if took.any() else -1,
            "claim_us_p95": float(np.percentile(rec["claim_ns"][took], 95) / 1e3)
            if took.any()
            else -1,
        }
    return res


def _spawn(case, threads, calls, pkg_dir, apart=True) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([pkg_dir, HERE]))
    env["LEPTON_POOL_APART"] = "1" if apart else "0"
    cmd = [sys.executable, os.path.abspath(__file__), "--child", case, str(threads), str(calls)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=pkg_dir)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="mlp1,q8mlp1,mlp64,cnn64")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--procs", type=int, default=3, help="fresh processes per (case, threads)")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--old", default=None, help="a directory with another lepton_nn build")
    ap.add_argument(
        "--no-apart", action="store_true", help="also run this build with LEPTON_POOL_APART=0"
    )
    ap.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        case, threads, calls = args.child
        print(json.dumps(child(case, int(threads), int(calls))))
        return 0
    builds = {"new": (ROOT, True)}
    if args.old:
        builds = {"old": (os.path.abspath(args.old), True), **builds}
    if args.no_apart:
        builds["noapart"] = (ROOT, False)
    threads = [int(t) for t in args.threads.split(",")]
    print(f"load average before: {os.getloadavg()}", flush=True)
    got: dict = {}
    for case in args.cases.split(","):
        for p in range(args.procs):
            for t in threads:
                for b, (d, apart) in builds.items():
                    r = _spawn(case, t, args.calls, d, apart)
                    got.setdefault((case, t, b), []).append(r)
                    tr = r.get("trace")
                    extra = (
                        f"  worker took {tr['worker_took']:.0%} of jobs, on caller's CPU "
                        f"{tr['on_caller_cpu']:.0%}, first claim p50 {tr['claim_us_p50']:.1f} us "
                        f"p95 {tr['claim_us_p95']:.1f} us"
                        if tr
                        else ""
                    )
                    pool = r["pool"]
                    nudges = f" nudges {pool['nudges']}" if "nudges" in pool else ""
                    if "backoffs" in pool:
                        nudges += f" backoffs {pool['backoffs']}"
                    if r["same_cpu_samples"] is not None:
                        extra += f"  same CPU in {r['same_cpu_samples']:.0%} of samples"
                    print(
                        f"{case:7s} {t}t {b:7s} proc {p}: median {r['median']:8.1f}  p5 "
                        f"{r['p5']:8.1f}  p95 {r['p95']:8.1f} us{extra}{nudges}  "
                        f"sleeps {pool['sleeps']}  sched {r['sched']}",
                        flush=True,
                    )
    print(f"load average after: {os.getloadavg()}\n")
    print("| case | threads | build | median of medians (us) | spread of medians | p5 | p95 |")
    print("|---|---|---|---:|---|---:|---:|")
    for (case, t, b), rs in got.items():
        meds = [r["median"] for r in rs]
        print(
            f"| {case} | {t} | {b} | {statistics.median(meds):.1f} | "
            f"{min(meds):.1f}-{max(meds):.1f} | {statistics.median(r['p5'] for r in rs):.1f} | "
            f"{statistics.median(r['p95'] for r in rs):.1f} |"
        )
    if 1 in threads:
        print("\n1-thread median over 2-thread median (> 1: 2 threads faster), per build:")
        for (case, t, b), rs in got.items():
            one = got.get((case, 1, b))
            if t > 1 and one:
                med = statistics.median(r["median"] for r in rs)
                ratio = statistics.median(r["median"] for r in one) / med
                print(f"  {case} {b}: {ratio:.2f} at {t} threads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
