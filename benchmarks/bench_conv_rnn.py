"""W3 CNN and W4 LSTM training steps: lepton_nn against PyTorch and TensorFlow.

    python -m pytest benchmarks/bench_conv_rnn.py --benchmark-columns=median,ops \
        --benchmark-group-by=group

W3: (64, 1, 28, 28) -> Conv 3x3 16 same, ReLU -> MaxPool 2 -> Conv 3x3 32 same, ReLU ->
MaxPool 2 -> Flatten -> Dense 10; W4: (32, 50, 8) -> LSTM 64 (last state) -> Dense 10; both
softmax cross-entropy with Adam. The definitions, data and initial weights (identical in every
engine, converted to each one's layout) are in ``lepton_nn/bench/`` (``workloads.py``,
``engines/``); TensorFlow runs the CNN channels_last (NHWC, its recommended CPU layout) inside
a compiled ``tf.function`` step. One benchmark call is one training step (``Trainer.fit`` /
``Model.fit``: one fit over ``FIT_STEPS`` batches); ``extra_info`` holds samples/s at the
median. Threads: ``LEPTON_BENCH_THREADS`` (default 1); peers are skipped when not installed.
For the fair side-by-side (own process per engine, interleaved rounds) run
``lepton-nn bench --workloads W3,W4``.
"""

from __future__ import annotations

import pytest
from workloads import NETS, benchmark_training, case, lepton_backends

pytest.importorskip("pytest_benchmark")

VARIANTS = [
    *[(f"lepton:{b}", "step loop") for b in lepton_backends()],
    (f"lepton:{lepton_backends()[0]}", "Trainer.fit"),
    (f"lepton:{lepton_backends()[0]}", "step loop, unfused"),  # W3: conv and pool one by one
    ("torch", "standard loop"),
    ("tensorflow", "tf.function step"),
    ("tensorflow", "Model.fit"),
]


@pytest.mark.parametrize("workload", list(NETS))
@pytest.mark.parametrize(("engine", "variant"), VARIANTS, ids=[f"{e}-{v}" for e, v in VARIANTS])
def test_training_step(benchmark, engine, variant, workload):
    benchmark_training(benchmark, case(engine, workload, variant), f"{workload} training")
