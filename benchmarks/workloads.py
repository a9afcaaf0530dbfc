"""The benchmark workloads (W1-W7, accuracy parity) for the suites in this folder.

They are defined once, in :mod:`lepton_nn.bench` (specs and data in ``workloads.py``, each
engine's cases in ``engines/``), inside the package, so that ``lepton-nn bench`` works from an
installed wheel (this folder is not installed). This module re-exports them and adds
:func:`cases`, the pytest-side way to build one engine's cases, and
:func:`benchmark_training` / :func:`record_rate`, shared by the suites.

Threads: ``LEPTON_BENCH_THREADS`` (default 1) for every engine in the process. The suites run
all engines in one process; ``lepton-nn bench`` is the fair side-by-side (one process per
engine, interleaved rounds, medians).
"""

from __future__ import annotations

import functools
import itertools
import os

import pytest

from lepton_nn.bench.cases import ENGINES, PEERS, Case, build_cases, configure_threads, supports
from lepton_nn.bench.coldstart import coldstart_script
from lepton_nn.bench.engines.handwritten_numpy import NumpyMLP
from lepton_nn.bench.engines.lepton import lepton_net
from lepton_nn.bench.engines.onnx_runtime import onnx_matmulinteger_bytes, onnx_mlp_bytes
from lepton_nn.bench.engines.pytorch import torch_net
from lepton_nn.bench.engines.tensorflow_keras import keras_net
from lepton_nn.bench.parity import parity, parity_datasets
from lepton_nn.bench.workloads import (
    ADAM,
    INFERENCE,
    MATMUL,
    MATMUL_K,
    MATMUL_N,
    NETS,
    TRAINING,
    W1,
    W2,
    W3,
    W4,
    MLPSpec,
    NetSpec,
    checksum,
    glorot_weights,
    inference_data,
    magnitude_pruned,
    matmul_data,
    net_data,
    net_weights,
    quantize_weights_np,
    training_data,
    workload_checksum,
)

__all__ = [
    "MLPSpec",
    "NetSpec",
    "W1",
    "W2",
    "W3",
    "W4",
    "TRAINING",
    "NETS",
    "MATMUL",
    "MATMUL_K",
    "MATMUL_N",
    "INFERENCE",
    "ADAM",
    "Case",
    "ENGINES",
    "PEERS",
    "training_data",
    "net_data",
    "net_weights",
    "matmul_data",
    "workload_checksum",
    "supports",
    "inference_data",
    "glorot_weights",
    "checksum",
    "configure_threads",
    "build_cases",
    "NumpyMLP",
    "lepton_net",
    "torch_net",
    "keras_net",
    "onnx_matmulinteger_bytes",
    "onnx_mlp_bytes",
    "quantize_weights_np",
    "magnitude_pruned",
    "coldstart_script",
    "parity",
    "parity_datasets",
    "cases",
    "case",
    "THREADS_N",
    "lepton_backends",
    "benchmark_training",
    "record_rate",
]

THREADS_N = int(os.environ.get("LEPTON_BENCH_THREADS", "1"))
_REQUIRES = {
    "torch": ("torch",),
    "tensorflow": ("tensorflow", "keras"),
    "onnxruntime": ("onnxruntime", "onnx"),
}


def lepton_backends() -> list[str]:
    """``LEPTON_BENCH_BACKENDS`` (comma list), else the best available and ``reference``
    (Numba is left out by default: its first call compiles for seconds)."""
    from lepton_nn.backend import available

    env = os.environ.get("LEPTON_BENCH_BACKENDS")
    if env:
        return [b.strip() for b in env.split(",") if b.strip()]
    have = [b for b in available() if b != "numba"]
    return list(dict.fromkeys([have[0], "reference"]))


@functools.cache
def cases(engine: str, workload: str) -> dict:
    """``{variant: Case}`` of ``engine`` for ``workload``; skips if the engine is missing."""
    for module in _REQUIRES.get(engine, ()):
        pytest.importorskip(module, exc_type=ImportError)
    configure_threads(engine.partition(":")[0], THREADS_N)
    return {c.variant: c for c in build_cases(engine, workload)}


def case(engine: str, workload: str, variant: str):
    found = cases(engine, workload)
    if variant not in found:
        pytest.skip(f"{engine} has no {variant!r} case for {workload}")
    return found[variant]


def record_rate(benchmark, amount: float, key: str = "samples/s", scale: float = 1.0) -> None:
    """Store ``amount / median seconds * scale`` in ``extra_info[key]`` (when timed)."""
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info[key] = round(amount / stats.stats.median * scale, 1)


def benchmark_training(benchmark, c, group: str, fit_steps: int = 16) -> None:
    """Time one training step of case ``c`` (a ``fit`` case: one fit over ``fit_steps``
    batches) and record samples/s; the first calls (tracing, compilation) are excluded."""
    benchmark.group = group
    if c.round is not None:  # a fit call runs its own loop over fit_steps batches
        samples = fit_steps * c.samples
        fn, args = c.run, (fit_steps,)
    else:
        counter = itertools.count()
        samples = c.samples
        fn, args = (lambda: c.step(next(counter))), ()
    if not benchmark.disabled:
        c.run(2)  # warm-up: tracing, compilation, first-touch allocations
    benchmark(fn, *args)
    record_rate(benchmark, samples)
