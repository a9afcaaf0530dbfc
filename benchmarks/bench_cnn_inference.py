"""W3 CNN inference at batch 256: the runtime's float32 file against its int8 files, and PyTorch.

    python -m pytest benchmarks/bench_cnn_inference.py --benchmark-columns=median,ops \
        --benchmark-group-by=group

The W3 network of ``lepton_nn/bench_workloads.py`` (Conv 3x3 16 same, ReLU, MaxPool 2 ->
Conv 3x3 32 same, ReLU, MaxPool 2 -> Dense 10) with its seeded weights, served by
``lepton_nn.runtime`` from three files: float32, int8 with dynamic activations (one scale
per image), and int8 with static activations calibrated on the benchmark's own 256 images.
PyTorch runs the same weights under ``inference_mode`` when installed, in its default NCHW
layout and in channels_last. One call predicts 256
images; ``extra_info`` holds images/s at the median. Threads: ``LEPTON_BENCH_THREADS``
(default 1) for every engine. Each case checks its answer first: float32 engines agree to
float rounding, int8 files stay within 5 % (relative norm) of float32.
"""

from __future__ import annotations

import numpy as np
import pytest
from workloads import (
    THREADS_N,
    W3,
    configure_threads,
    lepton_net,
    net_data,
    net_weights,
    record_rate,
    torch_net,
)

pytest.importorskip("pytest_benchmark")

BATCH = 256
VARIANTS = [
    "lepton fp32",
    "lepton int8 dynamic",
    "lepton int8 static",
    "torch fp32",
    "torch fp32 channels_last",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import lepton_nn as L
    from lepton_nn import runtime
    from lepton_nn.compress import quantize

    x = np.ascontiguousarray(net_data(W3)[0].reshape(-1, *W3.shape)[:BATCH])
    model = lepton_net(W3, net_weights(W3)).eval()
    want = model(x).data
    tmp = tmp_path_factory.mktemp("w3")
    configure_threads("lepton", THREADS_N)
    files = {"lepton fp32": model}
    for mode in ("dynamic", "static"):
        files[f"lepton int8 {mode}"] = quantize(model, x, mode)
    served = {}
    for name, m in files.items():
        L.save(m, tmp / "m.lnn")
        served[name] = runtime.load(tmp / "m.lnn", threads=THREADS_N).predict
    return x, want, served


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("variant", VARIANTS)
def test_w3_inference(benchmark, setup, variant):
    x, want, served = setup
    if variant.startswith("torch"):
        torch = pytest.importorskip("torch")
        _limits = configure_threads("torch", THREADS_N)  # noqa: F841 (held for the test)
        net = torch_net(W3, net_weights(W3)).eval()
        tx = torch.from_numpy(x)
        if variant.endswith("channels_last"):  # NHWC in memory, oneDNN's preferred layout
            net = net.to(memory_format=torch.channels_last)
            tx = tx.to(memory_format=torch.channels_last)

        def predict(_):
            with torch.inference_mode():
                return net(tx).numpy()
    else:
        predict = served[variant]
    got = predict(x)
    if "int8" in variant:
        assert _rel(got, want) < 0.05
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    benchmark.group = f"W3 inference, batch {BATCH}, {THREADS_N} thread(s)"
    benchmark(predict, x)
    record_rate(benchmark, BATCH, "images/s")
