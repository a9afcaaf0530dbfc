"""The case registry: which engine runs which workload, and how one run is timed.

Engines: ``lepton:<backend>`` (``lepton:cython``, ``lepton:reference``, ``lepton:numba``),
``numpy`` (a hand-written MLP with manual backprop: the ceiling of any NumPy engine),
``torch``, ``tensorflow``, ``onnxruntime`` (W5 and W8 inference, the W6 int8 matmul). Each has
an adapter in :mod:`lepton_nn.bench.engines` whose ``BUILDERS`` maps a workload family to the
function building its cases; peers are imported only inside those functions, so the adapters
import NumPy and nothing else at load. :func:`supports` says which engines have cases for a
workload.

A *case* is one engine's way of running one workload: ``case.run(n)`` times ``n`` steps
(training steps or inference calls) and returns seconds, or per-call seconds for latency cases.
Thread counts are set through each library's own API (:func:`configure_threads`) as well as
the environment.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .workloads import INFERENCE, MATMUL, NET_INFERENCE, NETS, TRAINING

ENGINES = ("lepton", "numpy", "torch", "tensorflow", "onnxruntime")
PEERS = ("tensorflow", "torch", "onnxruntime")  # optional engines (``--against``)
THREADS = {"n": 1}  # set by configure_threads; read by builders that take a thread count
_ADAPTERS = {  # engine -> its module in lepton_nn.bench.engines
    "lepton": "lepton",
    "numpy": "handwritten_numpy",
    "torch": "pytorch",
    "tensorflow": "tensorflow_keras",
    "onnxruntime": "onnx_runtime",
}


@dataclass
class Case:
    """One engine's way of running one workload.

    ``step(i)`` runs step ``i`` (training step or inference call on batch ``i mod n``);
    ``round(n)``, when given, replaces the timed loop (Keras ``fit`` runs its own loop).
    ``latency`` cases return each call's seconds instead of the total. For W6, ``samples`` is
    the operations of one call (2 M K N) and ``unit`` is ``"op"``. ``jobs``, when given (a
    latency case of lepton_nn's runtime), records the native pool's jobs meanwhile:
    ``jobs(n)`` starts a record of the jobs of ``n`` calls and returns a function that stops
    it and gives their (post_ns, job_ns) arrays; ``run`` then leaves in ``job_seconds`` each
    call's pool job time beside its latency (NaN: the call ran no job of the pool), so a slow
    call shows whether the job was slow (the host) or the rest of the call.
    """

    workload: str
    engine: str
    variant: str
    how: str
    samples: int  # rows per step
    step: Callable[[int], Any] | None = None
    round: Callable[[int], float] | None = None
    sync: Callable[[Any], Any] | None = None  # wait for asynchronous results, if any
    latency: bool = False
    info: dict = field(default_factory=dict)
    unit: str = "samples"  # what ``samples`` counts per step: "samples" or "op" (W6)
    jobs: Callable[[int], Callable[[], tuple[Any, Any]]] | None = None
    job_seconds: list[float] | None = None  # the last latency run's, per call (see jobs)

    @property
    def key(self) -> str:
        return f"{self.engine}/{self.variant}"

    def run(self, n: int) -> float | list[float]:
        if self.round is not None:
            return self.round(n)
        step, clock = self.step, time.perf_counter
        if self.latency:
            ns = time.perf_counter_ns  # CLOCK_MONOTONIC, the pool's clock
            stop = self.jobs(n) if self.jobs is not None else None
            starts, ends = [], []
            for i in range(n):
                t = ns()
                step(i)
                ends.append(ns())
                starts.append(t)
            if stop is not None:
                self.job_seconds = per_call_jobs(starts, ends, *stop())
            return [(e - t) / 1e9 for t, e in zip(starts, ends, strict=True)]
        out = None
        t = clock()
        for i in range(n):
            out = step(i)
        if self.sync is not None:
            self.sync(out)
        return clock() - t


def per_call_jobs(starts, ends, post_ns, job_ns) -> list[float]:
    """Each call's pool job seconds: the jobs posted within its [start, end) (ns, the same
    monotonic clock), summed; NaN for a call that posted none."""
    post = np.asarray(post_ns, np.int64)
    order = np.argsort(post, kind="stable")
    post, took = post[order], np.asarray(job_ns, np.float64)[order] / 1e9
    cum = np.concatenate(([0.0], np.cumsum(took)))
    lo = np.searchsorted(post, np.asarray(starts, np.int64), "left")
    hi = np.searchsorted(post, np.asarray(ends, np.int64), "left")
    return np.where(hi > lo, cum[hi] - cum[lo], np.nan).tolist()


def _family(workload: str) -> str:
    if workload in TRAINING:
        return "mlp"
    if workload in INFERENCE:
        return "inference"
    if workload in NETS:
        return "net"
    if workload in NET_INFERENCE:
        return "net inference"
    if workload in MATMUL:
        return "matmul"
    raise ValueError(f"unknown workload {workload!r}")


def _adapter(engine: str):
    """The adapter module of ``engine`` (imports the module, not the engine's library)."""
    name = _ADAPTERS.get(engine.partition(":")[0])
    return importlib.import_module(f"{__package__}.engines.{name}") if name else None


def supports(engine: str, workload: str) -> bool:
    """Whether ``engine`` has cases for ``workload`` (without importing the engine). W6 int8
    kernels run on the compiled backends only (:mod:`lepton_nn.bench.engines.lepton`)."""
    family = _family(workload)
    if workload in MATMUL and engine == "lepton:reference":
        return False
    adapter = _adapter(engine)
    return adapter is not None and family in adapter.BUILDERS


def build_cases(engine: str, workload: str) -> list[Case]:
    """The cases of ``engine`` for ``workload`` (``W1``, ``W2``, ``W3``, ``W4``, ``W5b1``,
    ``W5b64``, ``W5b256``, ``W6m1`` ... ``W6m1024``, ``W8cnn1`` ... ``W8gru64``).

    Raises ImportError when the engine is not installed, ValueError when it has no such
    workload (say, ONNX Runtime training).
    """
    family = _family(workload)
    if not supports(engine, workload):
        raise ValueError(f"{engine} has no {workload} workload")
    fn = _adapter(engine).BUILDERS[family]
    spec = {
        "mlp": TRAINING,
        "inference": INFERENCE,
        "net": NETS,
        "net inference": NET_INFERENCE,
        "matmul": MATMUL,
    }[family][workload]
    if engine.startswith("lepton"):
        return fn(workload, spec, engine.partition(":")[2] or None)
    return fn(workload, spec)


def configure_threads(engine: str, n: int) -> Any:
    """Pin ``engine`` to ``n`` threads through its own API (the caller also sets the
    environment: OMP/OPENBLAS/MKL_NUM_THREADS). Returns the threadpoolctl limiter (keep it)."""
    THREADS["n"] = int(n)
    if engine.startswith("lepton"):  # its intra-op threads (convolution chunks)
        from lepton_nn.backend.threads import set_num_threads

        set_num_threads(n)
    elif engine == "torch":
        import torch

        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # already started: only allowed once, before any parallel work
            pass
    elif engine == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:  # the TF runtime already started in this process
            pass
    try:  # BLAS and OpenMP pools loaded so far (NumPy's OpenBLAS, torch's OpenMP...)
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n)


def cycle(x: np.ndarray):
    """Batches of ``x`` as a list (cheap per-step access, same for every engine)."""
    return [x[k] for k in range(len(x))]


def round_arrays(x, y):
    """Builders of the arrays for an n-step round (untimed): the batches cycled in order."""
    nb = len(x)

    def take(a):
        def make(n):
            idx = np.arange(n) % nb
            return np.ascontiguousarray(a[idx].reshape(n * a.shape[1], *a.shape[2:]))

        return make

    return take(x), take(y)
