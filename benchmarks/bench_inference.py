"""W5 inference of the W2 model (batch 1 latency, batch 256 throughput) and W7 cold start.

    python -m pytest benchmarks/bench_inference.py --benchmark-only --benchmark-group-by=group

W5 engines: lepton_nn (``model(x)`` under ``no_grad`` and the inference runtime), hand-written
NumPy, PyTorch ``inference_mode``, TensorFlow (``model(x)``, ``tf.function``, ``predict``) and
ONNX Runtime. W7 times a fresh interpreter that imports the engine, loads a saved W2 model and
predicts one row. Peers are skipped when not installed.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import pytest
from workloads import INFERENCE, case, coldstart_script, lepton_backends

pytest.importorskip("pytest_benchmark")

VARIANTS = [
    *[(f"lepton:{b}", "model(x)") for b in lepton_backends()],
    *[
        (f"lepton:{lepton_backends()[0]}", v)
        for v in ("runtime", "runtime int8", "runtime pruned 90%")
    ],
    ("numpy", "hand-written"),
    ("torch", "inference_mode"),
    ("tensorflow", "model(x)"),
    ("tensorflow", "tf.function"),
    ("tensorflow", "predict"),
    ("onnxruntime", "InferenceSession"),
]
COLD = ["lepton", "numpy", "torch", "tensorflow", "onnxruntime"]


@pytest.mark.parametrize("workload", list(INFERENCE))
@pytest.mark.parametrize(("engine", "variant"), VARIANTS, ids=[f"{e}-{v}" for e, v in VARIANTS])
def test_inference(benchmark, engine, variant, workload):
    c = case(engine, workload, variant)
    benchmark.group = f"{workload} inference"
    counter = itertools.count()
    if not benchmark.disabled:
        c.run(2)
    benchmark(lambda: c.step(next(counter)))
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["samples/s"] = round(c.samples / stats.stats.median)


@pytest.mark.parametrize("engine", COLD)
def test_cold_start(benchmark, engine, tmp_path):
    module = {"lepton": "lepton_nn", "tensorflow": "keras"}.get(engine, engine)
    pytest.importorskip(module, exc_type=ImportError)
    if engine == "onnxruntime":
        pytest.importorskip("onnx", exc_type=ImportError)
    script, _how = coldstart_script(engine, str(tmp_path))
    benchmark.group = "W7 cold start"

    def fresh_process():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
        return time.perf_counter() - t

    benchmark.pedantic(fresh_process, rounds=1 if benchmark.disabled else 3, iterations=1)
