"""Worker processes: every engine runs in its own process, spoken to in JSON lines.

The parent holds a :class:`Worker` per engine; the process runs :func:`worker_main` (``python
-m lepton_nn.bench --worker ENGINE THREADS``) with ``OMP/OPENBLAS/MKL_NUM_THREADS`` set and the
library's own thread API called, so no two engines share a thread pool. A request is one JSON
line on its stdin (``setup``, ``warmup``, ``round``, ``drop``, ``coldstart``, ``parity``,
``peak``, ``quit``), the reply one JSON line on its stdout. A worker may run in another
interpreter than the parent's (``--python ENGINE=PATH``: a peer installed in its own venv);
it needs NumPy there and imports this lepton_nn from the path the parent puts first.
A worker dies with the parent, even in the middle of a round (:mod:`.lifeline`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

from .lifeline import child_env, die_with_parent

_ENV_THREADS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "LEPTON_NUM_THREADS",
)

# Workers start in the folder that holds the lepton_nn being run (the source tree or
# site-packages), so ``python -m``/``-c`` in a checkout cannot import the uncompiled sources
# in place of the installed build; the same folder leads their PYTHONPATH.
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def worker_env(threads: int) -> dict[str, str]:
    """The environment of a worker: thread counts pinned, this lepton_nn first on the path."""
    env = dict(os.environ)
    for k in _ENV_THREADS:
        env[k] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PKG_PARENT, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerError(RuntimeError):
    pass


class Worker:
    """One engine in its own process, spoken to in JSON lines."""

    def __init__(self, engine: str, threads: int, log_dir: str, python: str | None = None):
        self.engine, self.threads = engine, threads
        self.python = python or sys.executable
        self.log_path = os.path.join(log_dir, f"worker-{engine.replace(':', '-')}-t{threads}.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [self.python, "-m", "lepton_nn.bench", "--worker", engine, str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=child_env(worker_env(threads)),
            cwd=PKG_PARENT,
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

    def kill(self):
        """End the worker now (the run was interrupted: no answer is awaited)."""
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.proc.wait()
        self._log.close()

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


def worker_main(engine: str, threads: int) -> int:
    """The worker loop: one JSON request per line on stdin, one JSON reply per line."""
    die_with_parent()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to the log, not into the protocol
    sys.stdout = sys.stderr

    from .cases import build_cases, configure_threads
    from .coldstart import coldstart_script, installed_mb
    from .engines.lepton import lepton_backend
    from .machine import engine_versions, threadpools
    from .parity import parity
    from .workloads import workload_checksum

    def send(obj):
        proto.write(json.dumps(obj, default=json_default) + "\n")
        proto.flush()

    base = engine.partition(":")[0]
    cases: dict[str, Any] = {}
    try:
        limiter = configure_threads(base, threads)  # noqa: F841 (kept alive on purpose)
        hello = {"engine": engine, "threads": threads, "versions": engine_versions(base)}
        if base == "lepton":
            be = lepton_backend(engine.partition(":")[2] or None)
            hello["backend"] = be.name
        hello["threadpools"] = threadpools()
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
                built = build_cases(engine, wl)
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
                send({"cases": out, "checksum": workload_checksum(wl)})
            elif op == "warmup":
                c = cases[msg["case"]]
                send(_calibrate(c, msg["target"], 32 if c.round is not None else 3))
            elif op == "round":
                c = cases[msg["case"]]
                r = c.run(int(msg["n"]))
                send(_round_reply(r, c.job_seconds))
            elif op == "drop":
                for k in [k for k in cases if k.startswith(msg["workload"] + "|")]:
                    del cases[k]
                send({"ok": True})
            elif op == "coldstart":
                script, how = coldstart_script(engine, msg["dir"])  # sizes: this interpreter's
                send({"script": script, "how": how, "installed_mb": installed_mb(engine)})
            elif op == "peak":
                from .machine import gemm_peak

                send(gemm_peak(int(msg.get("repeats", 5)), float(msg.get("target", 0.05))))
            elif op == "parity":
                send({"rows": parity(engine, quick=msg.get("quick", False))})
            else:
                send({"error": f"unknown op {op!r}"})
        except ImportError as exc:
            send({"error": f"not installed: {exc}", "skip": True})
        except Exception as exc:
            traceback.print_exc()
            send({"error": f"{type(exc).__name__}: {exc}"})
    return 0


def _round_reply(r, jobs=None) -> dict:
    """A round's result: its seconds; for latency cases also the per-call distribution as
    201 quantiles (0, 0.5, ..., 100 %) in microseconds, which keeps the JSON small; with each
    call's pool job seconds (``jobs``, NaN: none), the quantiles of the job times and of the
    rest of those calls (latency - job) too, and how many calls ran a job."""
    if not isinstance(r, list):
        return {"seconds": r}
    import numpy as np

    def quantiles(v):
        return np.round(np.percentile(np.asarray(v) * 1e6, np.linspace(0, 100, 201)), 3).tolist()

    out = {"seconds": float(sum(r)), "calls": len(r), "quantiles_us": quantiles(r)}
    if jobs is not None and len(jobs) == len(r):
        j = np.asarray(jobs, np.float64)
        ran = ~np.isnan(j)
        out["job_calls"] = int(ran.sum())
        if ran.any():
            out["job_quantiles_us"] = quantiles(j[ran])
            out["outside_quantiles_us"] = quantiles(np.asarray(r)[ran] - j[ran])
    return out


def json_default(o):
    """JSON for NumPy scalars and arrays; anything else as its ``str``."""
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)
