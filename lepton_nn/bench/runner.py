"""The run: workers per thread count, interleaved timed rounds, parity, cold start.

1. For each thread count, every engine starts in its own worker process
   (:mod:`lepton_nn.bench.worker`).
2. For each workload, each case warms up (tracing, compilation, caches: excluded) and is
   calibrated to a round of about ``round_seconds``; then rounds are **interleaved** across
   engines (the order rotates every round) and repeated. Medians with min-max are kept.
3. Cold start (W7) runs each engine's script (:mod:`lepton_nn.bench.coldstart`) in fresh
   interpreters, interleaved, after the workers have exited; accuracy parity (ACC) trains in
   the workers.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from .coldstart import installed_mb
from .machine import cpu_seconds, foreign_cpus, loadavg, machine_info
from .options import Options, timed_workloads
from .worker import PKG_PARENT, Worker, WorkerError, worker_env


def _say(msg: str) -> None:
    print(msg, flush=True)


def _installed(module: str, python: str | None) -> bool:
    """Whether ``module`` is importable in this interpreter or in ``python``."""
    if python is None:
        return importlib.util.find_spec(module) is not None
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    try:
        return subprocess.run([python, "-c", code], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _engines(opts: Options) -> tuple[list[str], dict[str, str]]:
    """Engines to start, and the reasons others are skipped."""
    engines = [f"lepton:{b}" for b in opts.backends] + ["numpy"]
    skipped = {}
    for peer in opts.against:
        python = opts.python.get(peer)
        if not _installed(peer, python):
            skipped[peer] = "not installed" + (f" in {python}" if python else "")
        else:
            engines.append(peer)
    return engines, skipped


def _start(engines, threads, log_dir, pythons=None) -> tuple[dict[str, Worker], dict, dict]:
    workers, failed, hellos = {}, {}, {}
    pythons = pythons or {}
    # imports overlap; started from this (the caller's) thread, which outlives them
    pending = {e: Worker(e, threads, log_dir, pythons.get(e)) for e in engines}
    for e, w in pending.items():
        try:
            w.hello = hellos[e] = w.receive(timeout=300)
            workers[e] = w
        except (WorkerError, ValueError) as exc:
            failed[e] = str(exc)
            w.close()
    return workers, failed, hellos


def run(opts: Options) -> dict:
    """Run the benchmark; returns the results (also what the JSON file holds)."""
    from .parity import PARITY

    os.makedirs(opts.out, exist_ok=True)
    log_dir = os.path.join(opts.out, "logs")
    os.makedirs(log_dir, exist_ok=True)
    engines, skipped = _engines(opts)
    t_start = time.perf_counter()
    res: dict[str, Any] = {
        "command": opts.command,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "options": {k: v for k, v in vars(opts).items() if k != "command"},
        "machine": machine_info(),
        "skipped_engines": skipped,
        "phases": [],
        "load_before": loadavg(),
    }
    timed = timed_workloads(opts.workloads)
    cold_scripts: dict[str, dict] = {}
    for pi, threads in enumerate(opts.threads):
        _say(f"[threads={threads}] starting workers: {', '.join(engines)}")
        workers, failed, hellos = _start(engines, threads, log_dir, opts.python)
        phase: dict[str, Any] = {
            "threads": threads,
            "workers": hellos,
            "failed": failed,
            "cases": [],
            "notes": [],
            "load_before": loadavg(),
        }
        res["phases"].append(phase)
        for e, why in failed.items():
            _say(f"  {e}: could not start: {why}")
        phase["seconds"] = {"start": time.perf_counter() - t_start}
        try:
            if any(w in ("W1", "W2", "W3", "W4") for w in timed):
                phase["gemm_peak"] = _gemm_peak(workers, opts)
                phase["gemm_peaks"] = [phase["gemm_peak"]]  # each measurement (bench.loaded)
            for wl in timed:
                t = time.perf_counter()
                phase["cases"] += _run_workload_load_checked(wl, workers, threads, opts)
                phase["seconds"][wl] = time.perf_counter() - t
            if phase.get("gemm_peak"):  # measured again after: the better of the two is kept
                after = _gemm_peak(workers, opts)
                phase["gemm_peaks"].append(after)
                if "best" in (after or {}) and after["best"] > phase["gemm_peak"].get("best", 0):
                    phase["gemm_peak"] = after
                _add_gflops(phase)
            if pi == 0 and "ACC" in opts.workloads:
                t = time.perf_counter()
                res["parity"] = _run_parity(workers, opts, PARITY)
                res["parity"]["seconds"] = time.perf_counter() - t
            if pi == 0 and "W7" in opts.workloads:
                cold_dir = tempfile.mkdtemp(prefix="lepton-bench-w7-")
                for e, w in workers.items():
                    if e.startswith("lepton:") and e != f"lepton:{opts.backends[0]}":
                        continue
                    try:
                        cold_scripts[e] = w.ask(op="coldstart", dir=cold_dir)
                    except WorkerError as exc:
                        cold_scripts[e] = {"error": str(exc)}
        except BaseException:  # interrupted: a busy worker would not hear "quit" for minutes
            for w in workers.values():
                w.kill()
            raise
        else:
            for w in workers.values():
                w.close()
        phase["load_after"] = loadavg()
    if "W7" in opts.workloads:
        t, before, cpu0 = time.perf_counter(), loadavg(), cpu_seconds()
        res["coldstart"] = _run_coldstart(cold_scripts, opts)
        res["coldstart_seconds"] = time.perf_counter() - t
        res["coldstart_load"] = {"before": before, "after": loadavg()}
        foreign = foreign_cpus(cpu0, cpu_seconds(), res["coldstart_seconds"])
        if foreign is not None:
            res["coldstart_load"]["foreign_cpus"] = round(foreign, 3)
    res["load_after"] = loadavg()
    res["seconds"] = time.perf_counter() - t_start
    return res


def _gemm_peak(workers: dict[str, Worker], opts: Options) -> dict | None:
    """The machine's fp32 GEMM peak at this thread count, measured in a lepton_nn worker
    (NumPy's BLAS pinned like every engine): :func:`lepton_nn.bench.machine.gemm_peak`."""
    w = next((w for e, w in workers.items() if e.startswith("lepton:")), None)
    if w is None:
        return None
    try:
        peak = w.ask(op="peak", repeats=opts.peak_repeats, target=0.05)
    except WorkerError as exc:
        return {"error": str(exc)}
    _say(f"[threads={w.threads}] fp32 GEMM peak {peak['best']:.1f} GFLOP/s")
    return peak


def _add_gflops(phase: dict) -> None:
    """Each training case's GFLOP/s (:func:`~lepton_nn.bench.workloads.training_flops` per
    sample) and its fraction of the phase's GEMM peak."""
    from .workloads import NETS, TRAINING, training_flops

    peak = phase["gemm_peak"].get("best")
    for c in phase["cases"]:
        if "error" in c or (c["workload"] not in TRAINING and c["workload"] not in NETS):
            continue
        flops = training_flops(c["workload"])
        c["gflop_per_s"] = {k: v * flops / 1e9 for k, v in c["samples_per_s"].items() if k != "n"}
        if peak:
            c["peak_fraction"] = c["gflop_per_s"]["median"] / peak


def _run_workload_load_checked(wl, workers, threads, opts: Options) -> list[dict]:
    """:func:`_run_workload`, run again (up to ``opts.reruns`` times) while other processes
    used the machine during its rounds: more than :data:`~lepton_nn.bench.loaded.QUIET_FOREIGN`
    CPUs (:func:`~lepton_nn.bench.machine.cpu_seconds`; where that cannot be read, the
    1-minute load average above ``opts.max_load``). The attempt with the least load is kept;
    every case records the load it ran under and the attempts made, and ``host``: the host's
    state at the start and end of the kept attempt (:mod:`~lepton_nn.bench.hoststate`)."""
    from .loaded import QUIET_FOREIGN

    pids = [w.proc.pid for w in workers.values()]
    best = None
    for attempt in range(1 + max(0, opts.reruns)):
        host = {"start": _host(threads, wl, "start")}
        before, cpu0, t0 = loadavg(), cpu_seconds(pids), time.perf_counter()
        cases = _run_workload(wl, workers, threads, opts)
        after, cpu1 = loadavg(), cpu_seconds(pids)
        foreign = foreign_cpus(cpu0, cpu1, time.perf_counter() - t0)
        if threads > 1:  # the engines' pool threads stop spinning first (gap_threaded)
            time.sleep(opts.gap_threaded)
        host["end"] = _host(threads, wl, "end")
        for c in cases:
            c["host"] = host
        avg = max(before[0], after[0]) if before and after else None
        if foreign is not None:
            load, limit = foreign, QUIET_FOREIGN
        else:
            load, limit = avg, opts.max_load
        if best is None or (load is not None and load < best[0]):
            best = (load, cases, before, after, foreign, limit)
        if load is None or load <= limit:
            break
        if attempt < opts.reruns:
            _say(f"[threads={threads}] {wl}: load {load:.2f} > {limit:g}, running again")
    load, cases, before, after, foreign, limit = best
    for c in cases:
        c["load"] = {"before": before, "after": after, "attempts": attempt + 1}
        if foreign is not None:
            c["load"]["foreign_cpus"] = round(foreign, 3)
        c["load_above_limit"] = load is not None and load > limit
    return cases


def _host(threads: int, wl: str, when: str) -> dict:
    """One reading of the host's state (:func:`lepton_nn.bench.hoststate.probe`), said on
    the console; taken outside the rounds' load window (the workers are idle meanwhile)."""
    from .hoststate import describe, probe, reasons

    state = probe()
    uneven = " HOST UNEVEN" if reasons(state, threads) else ""
    _say(f"[threads={threads}] {wl}: host at the {when}: {describe(state)}{uneven}")
    return state


def _run_workload(wl: str, workers: dict[str, Worker], threads: int, opts: Options) -> list[dict]:
    from .cases import supports

    _say(f"[threads={threads}] {wl}: setting up")
    cases = []
    for e, w in workers.items():
        if not supports(e, wl):
            continue
        try:
            reply = w.ask(op="setup", workload=wl)
        except WorkerError as exc:
            cases.append({"workload": wl, "threads": threads, "engine": e, "error": str(exc)})
            continue
        for c in reply["cases"]:
            cases.append(
                {
                    **c,
                    "workload": wl,
                    "threads": threads,
                    "worker": e,
                    "checksum": reply["checksum"],
                    "rounds": [],
                }
            )
    live = [c for c in cases if "error" not in c]
    for c in live:
        try:
            c.update(workers[c["worker"]].ask(op="warmup", case=c["id"], target=opts.round_seconds))
        except WorkerError as exc:
            c["error"] = str(exc)
    live = [c for c in live if "error" not in c]
    for r in range(opts.rounds):
        order = live[r % len(live) :] + live[: r % len(live)] if live else []
        for c in order:
            if "error" in c:
                continue
            time.sleep(opts.gap_seconds if threads == 1 else opts.gap_threaded)
            try:
                c["rounds"].append(workers[c["worker"]].ask(op="round", case=c["id"], n=c["n"]))
            except WorkerError as exc:
                c["error"] = str(exc)
        _say(f"[threads={threads}] {wl}: round {r + 1}/{opts.rounds}")
    for w in workers.values():
        with contextlib.suppress(WorkerError):
            w.ask(op="drop", workload=wl)
    for c in cases:
        if "error" not in c:
            c.update(_summarize(c))
    return cases


def _summarize(c: dict) -> dict:
    """Medians and min-max of a case's rounds (per-call latencies pooled for latency cases)."""
    n, samples = c["n"], c["samples"]
    rates = [n * samples / r["seconds"] for r in c["rounds"]]
    out = {"samples_per_s": _stats(rates)}  # W6 (unit "op"): operations per second
    if c.get("unit") == "op":
        out["gop_per_s"] = _stats([r / 1e9 for r in rates])
    if c.get("latency"):  # rounds have equal call counts: their quantiles pool with equal weight
        import numpy as np

        pooled = np.concatenate([r["quantiles_us"] for r in c["rounds"]])
        per_round = [r["quantiles_us"][100] for r in c["rounds"]]
        out["latency_us"] = {
            "median": float(np.percentile(pooled, 50)),
            "p99": float(np.percentile(pooled, 99)),
            "min": min(per_round),
            "max": max(per_round),
            "calls": sum(r["calls"] for r in c["rounds"]),
        }
        timed = [r for r in c["rounds"] if "job_quantiles_us" in r]
        if timed:  # the pool job's share of the calls that ran one (see Case.jobs)
            for key, name in (("job_quantiles_us", "job"), ("outside_quantiles_us", "outside")):
                out["latency_us"][f"{name}_median"] = float(
                    np.percentile(np.concatenate([r[key] for r in timed]), 50)
                )
            out["latency_us"]["job_calls"] = sum(r.get("job_calls", 0) for r in c["rounds"])
    return out


def _stats(vals: list[float]) -> dict:
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def _run_parity(workers: dict[str, Worker], opts: Options, cfg: dict) -> dict:
    rows, errors = [], {}
    for e, w in workers.items():
        if e == "onnxruntime" or (e.startswith("lepton:") and e != f"lepton:{opts.backends[0]}"):
            continue
        _say(f"accuracy parity: {e}")
        try:
            rows += [{**r, "engine": e} for r in w.ask(op="parity", quick=opts.quick)["rows"]]
        except WorkerError as exc:
            errors[e] = str(exc)
    return {"rows": rows, "errors": errors, "config": cfg}


def _run_coldstart(scripts: dict[str, dict], opts: Options) -> dict:
    """Fresh-process import + load + first prediction, interleaved across engines.

    Every engine starts with its bytecode compiled, as an installed package has it (pip
    writes the ``.pyc`` files at install): the scripts run with a private
    ``PYTHONPYCACHEPREFIX`` after one untimed round that fills it, even where the environment
    says ``PYTHONDONTWRITEBYTECODE`` (a source checkout would otherwise compile every module
    of ours on each start, ~0.25 s here, and none of the installed peers')."""
    threads = opts.threads[0]
    env = worker_env(threads)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="lepton-bench-pyc-")
    runnable = {e: s for e, s in scripts.items() if "script" in s}
    runnable["python"] = {"script": "pass", "how": "`python -c pass` (interpreter start-up)"}
    results = {
        e: {"how": s.get("how"), "wall_s": [], "inproc_s": [], "error": s.get("error")}
        for e, s in {**scripts, **runnable}.items()
    }
    names = list(runnable)
    for r in range(-1, opts.coldstart_repeats):  # round -1: untimed, fills the bytecode cache
        _say(f"cold start: round {r + 1}/{opts.coldstart_repeats}")
        for e in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            p = subprocess.run(
                [opts.python.get(e, sys.executable), "-c", runnable[e]["script"]],
                env=env,
                cwd=PKG_PARENT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            wall = time.perf_counter() - t
            if r < 0 and p.returncode == 0:
                continue
            if p.returncode != 0:
                results[e]["error"] = (p.stderr.strip().splitlines() or ["failed"])[-1]
                continue
            results[e]["wall_s"].append(wall)
            if e != "python":
                info = json.loads(p.stdout.strip().splitlines()[-1])
                results[e]["inproc_s"].append(info["seconds"])
                results[e]["path"] = info.get("path")
    shutil.rmtree(env["PYTHONPYCACHEPREFIX"], ignore_errors=True)
    for e, r in results.items():
        for k in ("wall_s", "inproc_s"):
            if r[k]:
                r[k.replace("_s", "")] = _stats(r[k])
        r["installed_mb"] = scripts.get(e, {}).get("installed_mb") or installed_mb(e)
    return results
