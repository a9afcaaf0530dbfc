"""What the report says about the machine: CPU, ISA, BLAS and thread pools, load, environment
variables of note, and the versions each engine runs on."""

from __future__ import annotations

import contextlib
import os
import platform

import numpy as np

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


def cpu_seconds(pids: list[int] = ()) -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine so far, CPU seconds of this benchmark so far),
    or None where /proc is missing. The machine's busy time counts user, nice, system, irq,
    softirq and steal (on a virtual machine: time the host gave someone else) from
    /proc/stat; the benchmark's is this process, its reaped children (cold-start runs) and
    the live processes ``pids`` (the engines' workers, every thread). Their difference over
    an interval is what other processes used: a 2-thread round raises the load average to
    ~2 by itself, so the load average cannot tell a quiet machine from a busy one."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as fh:
            f = [int(v) for v in fh.readline().split()[1:9]]
        busy = (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / tick
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                own += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            except (OSError, IndexError, ValueError):
                continue
        return busy, own
    except (OSError, ValueError, AttributeError, IndexError):
        return None


def foreign_cpus(before, after, seconds: float) -> float | None:
    """CPUs' worth of work other processes did between two :func:`cpu_seconds` readings
    ``seconds`` apart (0: the machine ran only this benchmark)."""
    if before is None or after is None or seconds <= 0:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / seconds)


def loadavg() -> list[float] | None:
    """Load average over 1, 5 and 15 minutes (None where the OS has none)."""
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
    """CPU, ISA, platform, versions, BLAS pools and environment variables of note."""
    from .. import __version__
    from ..backend import available
    from ..kernels import cpu_features

    info = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "isa": list(cpu_features()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "lepton_nn": __version__,
        "backends_available": available(),
        "blas": threadpools(),
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_REPORTED)},
    }
    try:
        import threadpoolctl

        info["threadpoolctl"] = threadpoolctl.__version__
    except ImportError:
        info["threadpoolctl"] = None
    return info


def threadpools() -> list[dict]:
    """The BLAS and OpenMP pools loaded in this process (threadpoolctl, if installed)."""
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


def engine_versions(engine: str) -> dict[str, str]:
    """Versions of the libraries an engine runs on (imports them)."""
    v = {"python": platform.python_version(), "numpy": np.__version__}
    if engine.startswith("lepton"):
        import lepton_nn

        v["lepton_nn"] = lepton_nn.__version__
    elif engine == "torch":
        import torch

        v["torch"] = torch.__version__
    elif engine == "tensorflow":
        import keras
        import tensorflow as tf

        v["tensorflow"], v["keras"] = tf.__version__, keras.__version__
    elif engine == "onnxruntime":
        import onnxruntime as ort

        v["onnxruntime"] = ort.__version__
        try:
            import onnx

            v["onnx"] = onnx.__version__
        except ImportError:
            pass
    return v


PEAK_N = 1024  # the GEMM the peak is measured on: (N, N) x (N, N) float32


def gemm_peak(repeats: int = 5, target: float = 0.05, n: int = PEAK_N) -> dict:
    """The machine's fp32 GEMM peak as this process sees it: NumPy's sgemm (its BLAS, its
    thread count) on ``(n, n) x (n, n)``, ``repeats`` samples of about ``target`` seconds.

    ``best`` (GFLOP/s, 2 n^3 / time) is the fastest sample: the limit the training workloads'
    fractions are taken of (a busy neighbour only ever slows a sample down); ``median`` shows
    the spread under the run's load.
    """
    import time

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)  # BLAS pool start-up, first-touch pages
    t = time.perf_counter()
    np.matmul(a, b, out=c)
    calls = max(1, int(target / max(time.perf_counter() - t, 1e-6)))
    rates = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        for _ in range(calls):
            np.matmul(a, b, out=c)
        rates.append(2.0 * n**3 * calls / (time.perf_counter() - t) / 1e9)
    rates.sort()
    return {
        "best": rates[-1],
        "median": rates[len(rates) // 2],
        "min": rates[0],
        "n": n,
        "samples": len(rates),
        "calls_per_sample": calls,
        "how": f"NumPy float32 matmul ({n}, {n}) x ({n}, {n}), {len(rates)} samples of "
        f"{calls} calls; peak = the fastest sample",
    }
