"""W1 and W2 training: lepton_nn beside hand-written NumPy, PyTorch and TensorFlow.

    python -m pytest benchmarks/bench_training.py --benchmark-only

W1: 32 -> 64 -> 32 -> 1, batch 64, Adam, BCE; W2: 784 -> 512 -> 256 -> 10, batch 128, Adam,
cross-entropy (definitions in ``lepton_nn/bench/workloads.py``). One benchmark call is one
training step (``Model.fit`` / ``Trainer.fit``: one fit over 16 batches); ``extra_info``
holds samples/s at the median. Peers are skipped when not installed. For the fair
side-by-side report (own process per engine, interleaved rounds) run ``lepton-nn bench``.
"""

from __future__ import annotations

import pytest
from workloads import TRAINING, benchmark_training, case, lepton_backends

pytest.importorskip("pytest_benchmark")
VARIANTS = [
    *[(f"lepton:{b}", "step loop") for b in lepton_backends()],
    (f"lepton:{lepton_backends()[0]}", "Trainer.fit"),
    ("numpy", "hand-written"),
    ("torch", "standard loop"),
    ("tensorflow", "tf.function step"),
    ("tensorflow", "Model.fit"),
]


@pytest.mark.parametrize("workload", list(TRAINING))
@pytest.mark.parametrize(("engine", "variant"), VARIANTS, ids=[f"{e}-{v}" for e, v in VARIANTS])
def test_training(benchmark, engine, variant, workload):
    benchmark_training(benchmark, case(engine, workload, variant), f"{workload} training")
