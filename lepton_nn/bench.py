"""``lepton-nn bench``: lepton_nn side by side with TensorFlow, PyTorch and ONNX Runtime.

Floor 8 (beside the CLI, imported only when the command runs). The workloads themselves
(data, weights, each engine's code) are in :mod:`lepton_nn.bench_workloads`.

How a run goes:

1. For each thread count, every engine starts in **its own worker process** (``python -m
   lepton_nn.bench --worker ENGINE THREADS``) with ``OMP/OPENBLAS/MKL_NUM_THREADS`` set and the
   library's own thread API called, so no two engines share a thread pool.
2. For each workload, each case warms up (tracing, compilation, caches: excluded) and is
   calibrated to a round of about ``round_seconds``; then rounds are **interleaved** across
   engines (the order rotates every round) and repeated. The report gives medians with min-max.
3. Cold start (W7) runs each engine's script in fresh interpreters, interleaved, after the
   workers have exited; accuracy parity (ACC) trains in the workers.
4. A Markdown report, a JSON file with every raw round, and PNG bar charts (when matplotlib is
   installed) are written to ``--out``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import json
import os
import platform
import queue
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

__all__ = ["main", "Options", "run", "write_report", "TARGETS"]

ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "ACC")
W6_SIZES = ("W6m1", "W6m64", "W6m256", "W6m1024")
_ALIASES = {
    "tf": "tensorflow",
    "keras": "tensorflow",
    "pytorch": "torch",
    "ort": "onnxruntime",
    "onnx": "onnxruntime",
}
_WORKLOAD_TITLES = {
    "W1": "W1 tabular MLP training (32-64-32-1, batch 64, Adam, BCE)",
    "W2": "W2 MNIST-sized MLP training (784-512-256-10, batch 128, Adam, cross-entropy)",
    "W5b1": "W5 inference of the W2 model, batch 1 (latency)",
    "W5b256": "W5 inference of the W2 model, batch 256 (throughput)",
    "W3": "W3 small CNN training (1x28x28, Conv 16 -> pool -> Conv 32 -> pool -> Dense 10, "
    "batch 64, Adam, cross-entropy)",
    "W4": "W4 LSTM training (50 steps x 8 features, 64 units, Dense 10, batch 32, Adam, "
    "cross-entropy)",
    **{w: f"W6 matrix multiply ({w[3:]}, 1024) x (1024, 1024)" for w in W6_SIZES},
}
# (workload, peer engine, peer variant, minimum ratio ours / peer) from issues 2 and 6
TARGETS = (
    ("W1", "torch", "standard loop", 3.0),
    ("W1", "tensorflow", "tf.function step", 5.0),
    ("W1", "numpy", "hand-written", 0.7),
    ("W2", "torch", "standard loop", 1.0),
    ("W2", "tensorflow", "tf.function step", 1.5),
    ("W3", "tensorflow", "tf.function step", 1.0),
    ("W4", "torch", "standard loop", 1.0),
    ("W6m1", "onnxruntime", "MatMulInteger", 1.0),
    ("W6m64", "onnxruntime", "MatMulInteger", 1.0),
    ("W6m256", "onnxruntime", "MatMulInteger", 1.0),
)
# the lepton_nn case that speaks for us, first present wins. W6: qlinear, the int8 kernel a
# quantized Dense runs: the same uint8 x int8 GEMM as MatMulInteger plus, in the same call,
# the dequantization and bias MatMulInteger leaves out (so the comparison favours the peer)
_OURS_VARIANTS = {"W6": ("qlinear", "qgemm_s32")}
W5_LATENCY_TARGET_US = {"runtime": 30.0, "runtime int8": 15.0}  # batch-1 median, float32 / int8
W7_TARGET_S = 0.25
_ENV_REPORTED = (
    "OPENBLAS_",
    "OMP_",
    "MKL_",
    "KMP_",
    "GOMP_",
    "LEPTON_",
    "NUMBA_",
    "TF_CPP_",
    "TF_ENABLE_",
    "TF_NUM_",
    "TF_XLA_",
    "CUDA_VISIBLE",
)
_ENV_THREADS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "LEPTON_NUM_THREADS",
)


QUICK = {"rounds": 3, "round_seconds": 0.1, "coldstart_repeats": 2, "gap_threaded": 0.1}
FULL = {"rounds": 7, "round_seconds": 0.4, "coldstart_repeats": 5, "gap_threaded": 0.2}

# -- options -----------------------------------------------------------------------------------


@dataclass
class Options:
    against: list[str] = field(default_factory=list)  # peers (installed ones are run)
    backends: list[str] = field(default_factory=list)  # lepton_nn backends
    threads: list[int] = field(default_factory=list)
    workloads: list[str] = field(default_factory=lambda: list(ALL_WORKLOADS))
    out: str = "bench-results"
    quick: bool = False
    rounds: int = 7
    round_seconds: float = 0.4
    coldstart_repeats: int = 5
    gap_seconds: float = 0.01  # idle between two rounds (one thread per engine)
    # with several threads, idle long enough for the last engine's pool threads to stop
    # spinning (OpenBLAS spins ~0.1 s after a GEMM), or they steal a core from the next round
    gap_threaded: float = 0.2
    command: str = ""

    @classmethod
    def from_args(cls, args) -> Options:
        quick = bool(getattr(args, "quick", False))
        cores = os.cpu_count() or 1
        o = cls(quick=quick)
        o.against = _peers(getattr(args, "against", None))
        o.backends = _backends(getattr(args, "backends", None))
        threads = getattr(args, "threads", None)
        if threads:
            o.threads = _int_list(threads, "--threads")
        else:
            o.threads = [cores] if quick or cores == 1 else [cores, 1]
        wl = getattr(args, "workloads", None)
        if wl:
            o.workloads = _workloads(wl)
        o.out = getattr(args, "out", None) or o.out
        for k, v in (QUICK if quick else FULL).items():
            setattr(o, k, v)
        o.command = " ".join(
            [
                "lepton-nn bench",
                f"--against {','.join(o.against) or 'none'}",
                f"--backends {','.join(o.backends)}",
                f"--threads {','.join(map(str, o.threads))}",
                f"--workloads {','.join(o.workloads)}",
                f"--out {shlex.quote(o.out)}",
                *(["--quick"] if quick else []),
            ]
        )
        return o


def _int_list(text, what) -> list[int]:
    if isinstance(text, int):
        return [text]
    try:
        vals = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{what} takes numbers like 2,1, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"{what} takes positive numbers, got {text!r}")
    return list(dict.fromkeys(vals))


def _peers(text) -> list[str]:
    """``--against``: comma list; default every installed peer; ``none`` or empty: no peer."""
    from .bench_workloads import PEERS

    if text is None:
        return list(PEERS)
    names = [_ALIASES.get(s.strip().lower(), s.strip().lower()) for s in str(text).split(",")]
    names = [n for n in names if n and n != "none"]
    for n in names:
        if n not in PEERS:
            raise ValueError(f"unknown peer {n!r}; choose from {', '.join(PEERS)}")
    return list(dict.fromkeys(names))


def _backends(text) -> list[str]:
    """lepton_nn backends to run: default the best available plus ``reference``."""
    from .backend import available

    have = available()
    if not text or str(text).strip().lower() == "auto":
        return list(dict.fromkeys([have[0], "reference"]))
    names = [s.strip().lower() for s in str(text).split(",") if s.strip()]
    for n in names:
        if n not in have:
            raise ValueError(f"backend {n!r} is not available here (have: {', '.join(have)})")
    return names


def _workloads(text) -> list[str]:
    out = []
    for s in str(text).split(","):
        s = s.strip().upper()
        s = {"PARITY": "ACC", "ACCURACY": "ACC", "W5B1": "W5b1", "W5B256": "W5b256"}.get(s, s)
        s = s.replace("W6M", "W6m")
        if s not in ALL_WORKLOADS and s not in ("W5b1", "W5b256", *W6_SIZES):
            raise ValueError(f"unknown workload {s!r}; choose from {', '.join(ALL_WORKLOADS)}")
        out.append(s)
    return list(dict.fromkeys(out))


def _timed_workloads(workloads) -> list[str]:
    single = ("W1", "W2", "W3", "W4", "W5b1", "W5b256", *W6_SIZES)
    out = []
    for w in workloads:
        out += {"W5": ["W5b1", "W5b256"], "W6": list(W6_SIZES)}.get(w, [w] if w in single else [])
    return list(dict.fromkeys(out))


# -- workers -----------------------------------------------------------------------------------


def _package_parent() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for k in _ENV_THREADS:
        env[k] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_package_parent(), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerError(RuntimeError):
    pass


# Workers start in the folder that holds the lepton_nn being run (the source tree or
# site-packages), so ``python -m``/``-c`` in a checkout cannot import the uncompiled sources
# in place of the installed build.
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Worker:
    """One engine in its own process, spoken to in JSON lines."""

    def __init__(self, engine: str, threads: int, log_dir: str):
        self.engine, self.threads = engine, threads
        self.log_path = os.path.join(log_dir, f"worker-{engine.replace(':', '-')}-t{threads}.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lepton_nn.bench", "--worker", engine, str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=_worker_env(threads),
            cwd=_PKG_PARENT,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.hello: dict | None = None

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def receive(self, timeout: float = 600.0) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise WorkerError(f"{self.engine}: no answer within {timeout:.0f} s") from None
        if line is None:
            raise WorkerError(f"{self.engine}: worker exited ({self._tail()})")
        msg = json.loads(line)
        if "error" in msg:
            raise WorkerError(msg["error"])
        return msg

    def ask(self, timeout: float = 600.0, **msg) -> dict:
        if self.proc.poll() is not None:
            raise WorkerError(f"{self.engine}: worker exited ({self._tail()})")
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self.receive(timeout)

    def _tail(self) -> str:
        self._log.flush()
        try:
            with open(self.log_path) as fh:
                lines = [ln.strip() for ln in fh if ln.strip()]
            return lines[-1] if lines else f"exit status {self.proc.poll()}"
        except OSError:
            return f"exit status {self.proc.poll()}"

    def close(self):
        with contextlib.suppress(Exception):
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=20)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def _total(r) -> float:
    return sum(r) if isinstance(r, list) else float(r)


def _calibrate(case, target: float, min_steps: int) -> dict:
    """Warm up (first calls trace/compile) and pick the steps that fill ``target`` seconds."""
    t0 = time.perf_counter()
    case.run(2)
    n, per_step = 1, float("inf")
    while True:
        t = _total(case.run(n))
        per_step = min(per_step, t / n)  # the fastest try: a neighbour's stall is not the rate
        if t >= target / 4 or n >= 1 << 20:
            break
        n *= 8 if t < target / 64 else 2
    steps = max(min_steps, int(target / max(per_step, 1e-9)))
    return {"n": steps, "warmup_seconds": time.perf_counter() - t0}


def _worker_main(engine: str, threads: int) -> int:
    """The worker loop: one JSON request per line on stdin, one JSON reply per line."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to the log, not into the protocol
    sys.stdout = sys.stderr

    from . import bench_workloads as bw

    def send(obj):
        proto.write(json.dumps(obj, default=_json_default) + "\n")
        proto.flush()

    base = engine.partition(":")[0]
    cases: dict[str, Any] = {}
    try:
        limiter = bw.configure_threads(base, threads)  # noqa: F841 (kept alive on purpose)
        hello = {"engine": engine, "threads": threads, "versions": bw.engine_versions(base)}
        if base == "lepton":
            be = bw._lepton_backend(engine.partition(":")[2] or None)
            hello["backend"] = be.name
        hello["threadpools"] = _threadpools()
        send(hello)
    except Exception as exc:
        send({"error": f"{engine}: {type(exc).__name__}: {exc}"})
        return 1

    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.get("op")
        try:
            if op == "quit":
                break
            if op == "setup":
                wl = msg["workload"]
                built = bw.build_cases(engine, wl)
                out = []
                for c in built:
                    cid = f"{wl}|{c.key}"
                    cases[cid] = c
                    out.append(
                        {
                            "id": cid,
                            "engine": c.engine,
                            "variant": c.variant,
                            "how": c.how,
                            "samples": c.samples,
                            "latency": c.latency,
                            "round_loop": c.round is not None,
                            "unit": c.unit,
                        }
                    )
                send({"cases": out, "checksum": _data_checksum(bw, wl)})
            elif op == "warmup":
                c = cases[msg["case"]]
                send(_calibrate(c, msg["target"], 32 if c.round is not None else 3))
            elif op == "round":
                r = cases[msg["case"]].run(int(msg["n"]))
                send(_round_reply(r))
            elif op == "drop":
                for k in [k for k in cases if k.startswith(msg["workload"] + "|")]:
                    del cases[k]
                send({"ok": True})
            elif op == "coldstart":
                script, how = bw.coldstart_script(engine, msg["dir"])
                send({"script": script, "how": how})
            elif op == "parity":
                send({"rows": bw.parity(engine, quick=msg.get("quick", False))})
            else:
                send({"error": f"unknown op {op!r}"})
        except ImportError as exc:
            send({"error": f"not installed: {exc}", "skip": True})
        except Exception as exc:
            traceback.print_exc()
            send({"error": f"{type(exc).__name__}: {exc}"})
    return 0


def _round_reply(r) -> dict:
    """A round's result: its seconds; for latency cases also the per-call distribution as
    201 quantiles (0, 0.5, ..., 100 %) in microseconds, which keeps the JSON small."""
    if not isinstance(r, list):
        return {"seconds": r}
    import numpy as np

    q = np.percentile(np.asarray(r) * 1e6, np.linspace(0, 100, 201))
    return {"seconds": float(sum(r)), "calls": len(r), "quantiles_us": np.round(q, 3).tolist()}


def _data_checksum(bw, wl: str) -> str:
    return bw.workload_checksum(wl)


def _threadpools() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = (
        "user_api",
        "internal_api",
        "version",
        "num_threads",
        "threading_layer",
        "architecture",
        "prefix",
    )
    return [{k: d.get(k) for k in keys if d.get(k) is not None} for d in threadpool_info()]


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


# -- the run -----------------------------------------------------------------------------------


def _say(msg: str) -> None:
    print(msg, flush=True)


def _engines(opts: Options) -> tuple[list[str], dict[str, str]]:
    """Engines to start, and the reasons others are skipped."""
    engines = [f"lepton:{b}" for b in opts.backends] + ["numpy"]
    skipped = {}
    for peer in opts.against:
        if importlib.util.find_spec(peer) is None:
            skipped[peer] = "not installed"
        else:
            engines.append(peer)
    return engines, skipped


def _start(engines, threads, log_dir) -> tuple[dict[str, Worker], dict[str, str], dict]:
    workers, failed, hellos = {}, {}, {}
    pending = {e: Worker(e, threads, log_dir) for e in engines}  # start all: imports overlap
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
    from .bench_workloads import PARITY

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
        "load_before": _loadavg(),
    }
    timed = _timed_workloads(opts.workloads)
    cold_scripts: dict[str, dict] = {}
    for pi, threads in enumerate(opts.threads):
        _say(f"[threads={threads}] starting workers: {', '.join(engines)}")
        workers, failed, hellos = _start(engines, threads, log_dir)
        phase: dict[str, Any] = {
            "threads": threads,
            "workers": hellos,
            "failed": failed,
            "cases": [],
            "notes": [],
            "load_before": _loadavg(),
        }
        res["phases"].append(phase)
        for e, why in failed.items():
            _say(f"  {e}: could not start: {why}")
        phase["seconds"] = {"start": time.perf_counter() - t_start}
        try:
            for wl in timed:
                t = time.perf_counter()
                phase["cases"] += _run_workload(wl, workers, threads, opts)
                phase["seconds"][wl] = time.perf_counter() - t
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
        finally:
            for w in workers.values():
                w.close()
        phase["load_after"] = _loadavg()
    if "W7" in opts.workloads:
        t = time.perf_counter()
        res["coldstart"] = _run_coldstart(cold_scripts, opts)
        res["coldstart_seconds"] = time.perf_counter() - t
    res["load_after"] = _loadavg()
    res["seconds"] = time.perf_counter() - t_start
    return res


def _run_workload(wl: str, workers: dict[str, Worker], threads: int, opts: Options) -> list[dict]:
    from .bench_workloads import supports

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
    """Fresh-process import + load + first prediction, interleaved across engines."""
    threads = opts.threads[0]
    env = _worker_env(threads)
    runnable = {e: s for e, s in scripts.items() if "script" in s}
    runnable["python"] = {"script": "pass", "how": "`python -c pass` (interpreter start-up)"}
    results = {
        e: {"how": s.get("how"), "wall_s": [], "inproc_s": [], "error": s.get("error")}
        for e, s in {**scripts, **runnable}.items()
    }
    names = list(runnable)
    for r in range(opts.coldstart_repeats):
        _say(f"cold start: round {r + 1}/{opts.coldstart_repeats}")
        for e in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            p = subprocess.run(
                [sys.executable, "-c", runnable[e]["script"]],
                env=env,
                cwd=_PKG_PARENT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            wall = time.perf_counter() - t
            if p.returncode != 0:
                results[e]["error"] = (p.stderr.strip().splitlines() or ["failed"])[-1]
                continue
            results[e]["wall_s"].append(wall)
            if e != "python":
                info = json.loads(p.stdout.strip().splitlines()[-1])
                results[e]["inproc_s"].append(info["seconds"])
                results[e]["path"] = info.get("path")
    for e, r in results.items():
        for k in ("wall_s", "inproc_s"):
            if r[k]:
                r[k.replace("_s", "")] = _stats(r[k])
        r["installed_mb"] = _installed_mb(e)
    return results


_SIZE_PACKAGES = {
    "lepton": ["lepton_nn"],
    "numpy": ["numpy"],
    "torch": ["torch"],
    "tensorflow": ["tensorflow", "keras"],
    "onnxruntime": ["onnxruntime"],
}


def _installed_mb(engine: str) -> float | None:
    pkgs = _SIZE_PACKAGES.get(engine.partition(":")[0])
    if not pkgs:
        return None
    total = 0
    for name in pkgs:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        for d in (spec.submodule_search_locations or []) if spec else []:
            for root, _dirs, files in os.walk(d):
                for f in files:
                    with contextlib.suppress(OSError):
                        total += os.path.getsize(os.path.join(root, f))
    return total / 1e6 if total else None


# -- machine -----------------------------------------------------------------------------------


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import numpy as np

    from . import __version__
    from .backend import available
    from .kernels import cpu_features

    info = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "isa": list(cpu_features()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "lepton_nn": __version__,
        "backends_available": available(),
        "blas": _threadpools(),
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_REPORTED)},
    }
    try:
        import threadpoolctl

        info["threadpoolctl"] = threadpoolctl.__version__
    except ImportError:
        info["threadpoolctl"] = None
    return info


# -- report ------------------------------------------------------------------------------------


def _label(c: dict) -> str:
    return f"{c['engine']} · {c['variant']}"


def _fmt_rate(v: float) -> str:
    return f"{v / 1e3:,.1f}k" if v >= 1e3 else f"{v:,.0f}"


def _rate(c: dict) -> tuple[dict, str]:
    """A case's rate statistics in its display unit: samples/s, or GOP/s for W6."""
    if c.get("unit") == "op":
        return c["gop_per_s"], "GOP/s"
    return c["samples_per_s"], "samples/s"


def _fmt_value(v: float, unit: str) -> str:
    return f"{v:,.1f} GOP/s" if unit == "GOP/s" else f"{_fmt_rate(v)}/s"


def _ours(cases: list[dict], backend: str) -> dict | None:
    """The case that speaks for lepton_nn: best backend; runtime for inference if present;
    for W6 the raw int8 GEMM (:data:`_OURS_VARIANTS`)."""
    mine = [c for c in cases if c.get("engine") == f"lepton_nn:{backend}" and "error" not in c]
    wl = str(mine[0]["workload"]) if mine else ""
    for variant in (*_OURS_VARIANTS.get(wl[:2], ()), "runtime", "step loop", "model(x)"):
        for c in mine:
            if c["variant"] == variant:
                return c
    return mine[0] if mine else None


def _find(cases, engine, variant):
    for c in cases:
        if c.get("engine") == engine and c.get("variant") == variant and "error" not in c:
            return c
    return None


def target_rows(res: dict) -> list[dict]:
    """Our ratio to each peer for the issue's targets, per thread count."""
    backend = res["options"]["backends"][0]
    rows = []
    for ph in res["phases"]:
        for wl, engine, variant, need in TARGETS:
            cases = [c for c in ph["cases"] if c["workload"] == wl]
            ours, peer = _ours(cases, backend), _find(cases, engine, variant)
            if ours is None or peer is None:
                continue
            a, b = ours["samples_per_s"]["median"], peer["samples_per_s"]["median"]
            unit = _rate(ours)[1]
            rows.append(
                {
                    "workload": wl,
                    "threads": ph["threads"],
                    "ours_variant": ours["variant"],
                    "peer": f"{engine} · {variant}",
                    "ours": _rate(ours)[0]["median"],
                    "theirs": _rate(peer)[0]["median"],
                    "rate_unit": unit,
                    "ratio": a / b,
                    "target": need,
                    "met": a / b >= need,
                }
            )
        for variant, limit in W5_LATENCY_TARGET_US.items():
            b1 = [c for c in ph["cases"] if c["workload"] == "W5b1"]
            c = _find(b1, f"lepton_nn:{backend}", variant)
            if c is not None and "latency_us" in c:
                v = c["latency_us"]["median"]
                rows.append(
                    {
                        "workload": f"W5b1 {variant}",
                        "threads": ph["threads"],
                        "peer": "(absolute)",
                        "ours": v,
                        "theirs": None,
                        "ratio": None,
                        "target": f"< {limit:.0f} us",
                        "met": v < limit,
                        "unit": "us",
                    }
                )
    cold = res.get("coldstart", {})
    lep = next((v for k, v in cold.items() if k.startswith("lepton")), None)
    if lep and lep.get("inproc"):
        v = lep["inproc"]["median"]
        rows.append(
            {
                "workload": "W7",
                "threads": res["options"]["threads"][0],
                "peer": "(absolute)",
                "ours": v,
                "theirs": None,
                "ratio": None,
                "target": f"< {W7_TARGET_S} s",
                "met": v < W7_TARGET_S,
                "unit": "s",
            }
        )
    return rows


def render_markdown(res: dict) -> str:
    m, o = res["machine"], res["options"]
    L = ["# lepton_nn benchmark report", ""]
    L.append(
        f"Generated {res['date']} by `{res['command'].strip()}`"
        f"{' (quick mode)' if o['quick'] else ''}: {o['rounds']} timed rounds of about "
        f"{o['round_seconds']} s per case after an excluded warm-up, interleaved across "
        f"engines; medians with min-max over rounds. Total {res.get('seconds', 0):.0f} s."
    )
    L += ["", "## Machine", ""]
    L.append(
        f"- CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs; ISA: "
        f"{' '.join(m['isa']) or 'unknown'}"
    )
    L.append(f"- Platform: {m['platform']}")
    L.append(
        f"- Threads per engine: {', '.join(str(t) for t in o['threads'])} (every engine "
        "pinned to the same count: environment + threadpoolctl + torch.set_num_threads + "
        "TF intra/inter-op + ONNX Runtime session options)"
    )
    for b in m["blas"]:
        L.append(
            f"- NumPy BLAS: {b.get('internal_api')} {b.get('version', '')}, kernel "
            f"{b.get('architecture', '?')}, {b.get('threading_layer', '?')} threading"
        )
    L.append(
        f"- Load average (1/5/15 min) before: {res.get('load_before')}, after: "
        f"{res.get('load_after')}"
    )
    env = m.get("environment") or {}
    L.append(
        "- Environment variables of note: "
        + (", ".join(f"`{k}={v}`" for k, v in env.items()) or "none set")
    )
    L += ["", "## Versions", ""]
    vers = {"python": m["python"], "numpy": m["numpy"], "lepton_nn": m["lepton_nn"]}
    for ph in res["phases"]:
        for hello in ph["workers"].values():
            vers.update(hello.get("versions", {}))
    L.append(
        ", ".join(f"{k} {v}" for k, v in vers.items())
        + f"; lepton_nn backends available: {', '.join(m['backends_available'])}"
    )
    for e, why in res.get("skipped_engines", {}).items():
        L.append(f"- {e}: skipped ({why})")

    rows = target_rows(res)
    if rows:
        L += [
            "",
            "## Targets (ratios measured in this run)",
            "",
            "| workload | threads | lepton_nn | peer | peer value | ratio | target | met |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if r["ratio"] is None:
                unit = r.get("unit", "")
                L.append(
                    f"| {r['workload']} | {r['threads']} | {r['ours']:.3g} {unit} | "
                    f"{r['peer']} | | | {r['target']} | {'yes' if r['met'] else 'NO'} |"
                )
            else:
                u = r.get("rate_unit", "samples/s")
                L.append(
                    f"| {r['workload']} | {r['threads']} | {_fmt_value(r['ours'], u)} "
                    f"({r.get('ours_variant', '')}) | {r['peer']} | {_fmt_value(r['theirs'], u)} "
                    f"| {r['ratio']:.2f}x | >= {r['target']}x | {'yes' if r['met'] else 'NO'} |"
                )

    backend = o["backends"][0]
    for wl in _timed_workloads(o["workloads"]):
        for ph in res["phases"]:
            cases = [c for c in ph["cases"] if c["workload"] == wl]
            if not cases:
                continue
            L += ["", f"## {_WORKLOAD_TITLES.get(wl, wl)} — {ph['threads']} thread(s)", ""]
            L += _case_table(cases, _ours(cases, backend))
            sums = {c["checksum"] for c in cases if "checksum" in c}
            procs = len({c["worker"] for c in cases if "worker" in c})
            L += [
                "",
                f"Data and initial weights: checksum {', '.join(sorted(sums))} in all "
                f"{procs} processes" + (" (identical)." if len(sums) == 1 else " (DIFFER)."),
            ]
    if res.get("coldstart"):
        L += ["", "## W7 cold start (fresh process: import + load + first prediction)", ""]
        L += _cold_table(res["coldstart"])
    if res.get("parity"):
        L += ["", "## Accuracy parity (test set)", ""]
        L += _parity_table(res["parity"])
    L += ["", "## How each engine was used", ""]
    hows: dict[tuple, list[str]] = {}  # (engine, variant, how) -> workloads, in order
    for ph in res["phases"]:
        for c in ph["cases"]:
            if "how" in c:
                wls = hows.setdefault((c.get("engine"), c.get("variant"), c["how"]), [])
                wl = str(c["workload"])[:2]  # W5b1 -> W5, W6m64 -> W6
                if wl not in wls:
                    wls.append(wl)
    n_hows: dict[tuple, int] = {}
    for e, v, _how in hows:
        n_hows[(e, v)] = n_hows.get((e, v), 0) + 1
    for (e, v, how), wls in hows.items():
        where = f" ({', '.join(wls)})" if n_hows[(e, v)] > 1 else ""
        L.append(f"- **{e} · {v}**{where}: {how}")
    for e, c in (res.get("coldstart") or {}).items():
        if c.get("how"):
            L.append(f"- **W7 {e}**: {c['how']}")
    L += [
        "",
        "## Fairness notes",
        "",
        "- Every engine runs in its own process; rounds are interleaved (the order rotates "
        "each round) with a short idle gap, so a busy neighbour hits all engines alike.",
        "- Data and initial weights come from one seeded function; the checksum column of the "
        "JSON shows they are bit-identical in every process. float32 everywhere; Adam lr 1e-3, "
        "betas (0.9, 0.999), eps 1e-8 in every engine.",
        "- Warm-up (tracing, JIT compilation, first-touch allocations) is excluded; Keras "
        "`fit` rounds include fit's own per-call set-up, as a user's epoch does.",
        "- W3/W4: the same function in every engine (initial weights converted to each "
        "layout and checked to give the same logits); TensorFlow runs the CNN channels_last "
        "(NHWC), the layout it recommends on CPU, lepton_nn and PyTorch NCHW.",
        "- W6: one (1024, 1024) weight quantized once (symmetric int8 per output channel) and "
        "shared; `qgemm_s32` and `MatMulInteger` both map uint8 x int8 -> int32; `qlinear` "
        "(what the targets compare with MatMulInteger) does that GEMM plus dequantization and "
        "bias in the same call; the dynamic int8 Dense and PyTorch dynamic quantization both "
        "take float32 in and give float32 out; float32 NumPy is the unquantized baseline.",
        "- The machine may be shared: compare ratios within one run, not absolute numbers "
        "across runs.",
    ]
    errors = [(ph["threads"], c) for ph in res["phases"] for c in ph["cases"] if "error" in c]
    failed = [(ph["threads"], e, why) for ph in res["phases"] for e, why in ph["failed"].items()]
    if errors or failed:
        L += ["", "## Errors", ""]
        for t, e, why in failed:
            L.append(f"- threads {t}, {e}: worker failed to start: {why}")
        for t, c in errors:
            L.append(
                f"- threads {t}, {c['workload']} {c.get('engine')} {c.get('variant', '')}: "
                f"{c['error']}"
            )
    return "\n".join(L) + "\n"


def _case_table(cases: list[dict], ours: dict | None) -> list[str]:
    ok = [c for c in cases if "error" not in c]
    lat = any(c.get("latency") for c in ok)
    if lat:
        out = [
            "| engine · variant | median us | p99 us | round medians min-max us | "
            "lepton_nn speed-up |",
            "|---|---|---|---|---|",
        ]
        ok.sort(key=lambda c: c["latency_us"]["median"])
        for c in ok:
            la = c["latency_us"]
            up = (
                f"{la['median'] / ours['latency_us']['median']:.2f}x"
                if ours and "latency_us" in ours
                else ""
            )
            out.append(
                f"| {_label(c)} | {la['median']:,.1f} | {la['p99']:,.1f} | "
                f"{la['min']:,.1f}–{la['max']:,.1f} | {up} |"
            )
        return out
    unit = _rate(ok[0])[1] if ok else "samples/s"
    fmt = (lambda v: f"{v:,.1f}") if unit == "GOP/s" else _fmt_rate
    out = [
        f"| engine · variant | median {unit} | min–max | lepton_nn ÷ this |",
        "|---|---|---|---|",
    ]
    ok.sort(key=lambda c: -c["samples_per_s"]["median"])
    for c in ok:
        s = _rate(c)[0]
        rel = (
            f"{ours['samples_per_s']['median'] / c['samples_per_s']['median']:.2f}x" if ours else ""
        )
        out.append(
            f"| {_label(c)} | {fmt(s['median'])} | {fmt(s['min'])}–{fmt(s['max'])} | {rel} |"
        )
    if ours is not None and unit == "GOP/s":
        out += ["", f"lepton_nn ÷ this uses lepton_nn · {ours['variant']}; GOP/s = 2 M K N / time."]
    return out


def _cold_table(cold: dict) -> list[str]:
    out = [
        "| engine | process wall time median (min–max) | in-process import+load+predict | "
        "installed size (package dirs) |",
        "|---|---|---|---|",
    ]
    for e, r in cold.items():
        if "wall" not in r:
            out.append(f"| {e} | failed: {r.get('error')} | | |")
            continue
        w = r["wall"]
        ip = f"{r['inproc']['median']:.3f} s" if r.get("inproc") else ""
        size = f"{r['installed_mb']:,.1f} MB" if r.get("installed_mb") else ""
        out.append(f"| {e} | {w['median']:.3f} s ({w['min']:.3f}–{w['max']:.3f}) | {ip} | {size} |")
    out.append("")
    out.append(
        "Installed size counts the engine's own package directories only (TensorFlow: "
        "`tensorflow` + `keras`), not their other dependencies; lepton_nn needs NumPy."
    )
    return out


def parity_summary(parity: dict) -> list[dict]:
    """Mean and spread per (dataset, mode, engine), and whether each agrees with lepton_nn."""
    groups: dict[tuple, list[dict]] = {}
    for r in parity["rows"]:
        groups.setdefault((r["dataset"], r["mode"], r["engine"]), []).append(r)
    out = []
    for (ds, mode, engine), rs in groups.items():
        s = {
            "dataset": ds,
            "mode": mode,
            "engine": engine,
            "n": len(rs),
            "epochs": rs[0]["epochs"],
            "sizes": rs[0]["sizes"],
        }
        for k in ("accuracy", "roc_auc"):
            vals = [r[k] for r in rs]
            s[k] = statistics.fmean(vals)
            s[k + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(s)
    for s in out:
        ref = next(
            (
                t
                for t in out
                if t["engine"].startswith("lepton")
                and t["dataset"] == s["dataset"]
                and t["mode"] == s["mode"]
            ),
            None,
        )
        if ref is None or ref is s:
            s["agrees"] = None
            continue
        ok = True
        for k in ("accuracy", "roc_auc"):
            noise = 2 * (ref[k + "_sd"] ** 2 / ref["n"] + s[k + "_sd"] ** 2 / s["n"]) ** 0.5
            ok &= abs(ref[k] - s[k]) <= noise + 0.015
        s["agrees"] = ok
    return out


def _pm(s: dict, k: str) -> str:
    """Mean, with the standard deviation over runs when there are several."""
    return f"{s[k]:.4f} ± {s[k + '_sd']:.4f}" if s["n"] > 1 else f"{s[k]:.4f}"


def _parity_table(parity: dict) -> list[str]:
    out = [
        "| data | mode | engine | accuracy | ROC-AUC | runs | agrees with lepton_nn |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in parity_summary(parity):
        agree = {None: "", True: "yes", False: "**NO**"}[s["agrees"]]
        out.append(
            f"| {s['dataset']} | {s['mode']} | {s['engine']} | {_pm(s, 'accuracy')} | "
            f"{_pm(s, 'roc_auc')} | {s['n']} | {agree} |"
        )
    for e, why in parity.get("errors", {}).items():
        out.append(f"| | | {e} | failed: {why} | | | |")
    rows = parity["rows"]
    if rows:
        srcs = sorted(
            {f"{r['dataset']}: {r['source']}, {r['sizes']}, {r['epochs']} epochs" for r in rows}
        )
        out += [
            "",
            "Data and models: " + "; ".join(srcs) + ". Batch 64, Adam lr 1e-3, "
            "stratified 75/25 split (seed 0). *shared*: identical initial weights and batch "
            "order in every engine (differences are float32 numerics); *own*: each engine's "
            "own Glorot-uniform initializer and shuffling with seeds 0..n-1 (Trainer.fit, "
            "Model.fit, a standard PyTorch loop). Agreement: |difference| <= 2 standard "
            "errors + 0.015.",
        ]
    return out


def write_charts(res: dict, out: str) -> list[str]:
    """One horizontal bar chart per workload and thread count (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    for ph in res["phases"]:
        by_wl: dict[str, list[dict]] = {}
        for c in ph["cases"]:
            if "error" not in c:
                by_wl.setdefault(c["workload"], []).append(c)
        for wl, cases in by_wl.items():
            lat = any(c.get("latency") for c in cases)
            key = (lambda c: c["latency_us"]) if lat else (lambda c: _rate(c)[0])
            cases.sort(key=lambda c: key(c)["median"], reverse=not lat)
            med = [key(c)["median"] for c in cases]
            lo = [m - key(c)["min"] for m, c in zip(med, cases)]
            hi = [key(c)["max"] - m for m, c in zip(med, cases)]
            colors = ["#d95f02" if c["engine"].startswith("lepton") else "#7570b3" for c in cases]
            fig, ax = plt.subplots(figsize=(8, 0.45 * len(cases) + 1.2))
            ax.barh([_label(c) for c in cases], med, xerr=[lo, hi], color=colors, capsize=3)
            ax.invert_yaxis()
            ax.set_xlabel(
                "median latency, us (lower is better)"
                if lat
                else f"{_rate(cases[0])[1]}, median (higher is better)"
            )
            title = textwrap.fill(_WORKLOAD_TITLES.get(wl, wl), 70)  # long ones on two lines
            ax.set_title(f"{title}\n{ph['threads']} thread(s)", fontsize=9)
            if lat:
                ax.set_xscale("log")
            fig.tight_layout()
            p = os.path.join(out, f"chart-{wl}-t{ph['threads']}.png")
            fig.savefig(p, dpi=110)
            plt.close(fig)
            paths.append(p)
    return paths


def write_report(res: dict, out: str) -> dict[str, str]:
    """Write ``report.md``, ``results.json`` and the charts; returns their paths."""
    os.makedirs(out, exist_ok=True)
    charts = write_charts(res, out)
    md = render_markdown(res)
    if charts:
        md += (
            "\n## Charts\n\n"
            + "\n".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in charts)
            + "\n"
        )
    paths = {"markdown": os.path.join(out, "report.md"), "json": os.path.join(out, "results.json")}
    with open(paths["markdown"], "w", encoding="utf-8") as fh:
        fh.write(md)
    with open(paths["json"], "w", encoding="utf-8") as fh:
        json.dump(res, fh, separators=(",", ":"), default=_json_default)
    paths["charts"] = ", ".join(charts)
    return paths


def _console_summary(res: dict) -> str:
    lines = []
    for r in target_rows(res):
        if r["ratio"] is None:
            lines.append(
                f"  {r['workload']:<6} t={r['threads']}  lepton_nn {r['ours']:.3g} "
                f"{r.get('unit', '')}  target {r['target']}  "
                f"{'met' if r['met'] else 'NOT met'}"
            )
        else:
            lines.append(
                f"  {r['workload']:<6} t={r['threads']}  vs {r['peer']:<30} "
                f"{r['ratio']:6.2f}x  (target >= {r['target']}x)  "
                f"{'met' if r['met'] else 'NOT met'}"
            )
    return "\n".join(lines)


# -- entry points ------------------------------------------------------------------------------


def main(args) -> int:
    """``lepton-nn bench``: run, write the report, print where it is."""
    try:
        opts = Options.from_args(args)
    except ValueError as exc:
        print(f"lepton-nn bench: error: {exc}", file=sys.stderr)
        return 2
    res = run(opts)
    paths = write_report(res, opts.out)
    summary = _console_summary(res)
    if summary:
        print("targets:\n" + summary)
    print(f"report: {paths['markdown']}\njson:   {paths['json']}")
    if paths["charts"]:
        print(f"charts: {paths['charts']}")
    return 0


if __name__ == "__main__":  # worker processes: python -m lepton_nn.bench --worker ENGINE N
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2], int(sys.argv[3])))
    print("usage: lepton-nn bench [options] (this module runs workers only)", file=sys.stderr)
    sys.exit(2)
