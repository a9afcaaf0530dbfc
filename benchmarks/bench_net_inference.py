"""W3 CNN and W4 LSTM inference: the runtime's float32 file against its int8 files, and PyTorch.

    python -m pytest benchmarks/bench_net_inference.py --benchmark-columns=median,ops \
        --benchmark-group-by=group

The W3 network (Conv 3x3 16 same, ReLU, MaxPool 2 -> Conv 3x3 32 same, ReLU, MaxPool 2 ->
Dense 10) at batch 256 and the W4 network (LSTM 64 over 50 steps x 8 features, last state ->
Dense 10) at batch 32 and 256, with the seeded weights of ``lepton_nn/bench/workloads.py``,
served by ``lepton_nn.runtime`` from three files: float32, int8 with dynamic activations,
and int8 with static activations calibrated on the benchmark's own inputs (W4: the input
product static, h always per row). PyTorch runs the same weights under ``inference_mode``
when installed: W3 in NCHW and channels_last, W4 in float32 and as
``torch.ao.quantization.quantize_dynamic`` (int8 LSTM and Linear). ``extra_info`` holds
samples/s at the median. Threads: ``LEPTON_BENCH_THREADS`` (default 1) for every engine.
Each case checks its answer first: float32 engines agree to float rounding, int8 ones stay
within 5 % (relative norm) of float32.
"""

from __future__ import annotations

import numpy as np
import pytest
from workloads import (
    NETS,
    THREADS_N,
    configure_threads,
    lepton_net,
    net_data,
    net_weights,
    record_rate,
    torch_net,
)

pytest.importorskip("pytest_benchmark")

CASES = [("W3", 256), ("W4", 32), ("W4", 256)]
LEPTON = ["lepton fp32", "lepton int8 dynamic", "lepton int8 static"]
TORCH = {"W3": ["torch fp32", "torch fp32 channels_last"], "W4": ["torch fp32", "torch int8"]}
PARAMS = [(w, b, v) for w, b in CASES for v in LEPTON + TORCH[w]]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import lepton_nn as L
    from lepton_nn import runtime
    from lepton_nn.compress import quantize

    configure_threads("lepton", THREADS_N)
    out = {}
    for workload in NETS:
        spec = NETS[workload]
        x = np.ascontiguousarray(net_data(spec)[0].reshape(-1, *spec.shape)[:256])
        model = lepton_net(spec, net_weights(spec)).eval()
        tmp = tmp_path_factory.mktemp(workload)
        files = {"lepton fp32": model}
        for mode in ("dynamic", "static"):
            files[f"lepton int8 {mode}"] = quantize(model, x, mode)
        engines = {}
        for name, m in files.items():
            L.save(m, tmp / "m.lnn")
            engines[name] = runtime.load(tmp / "m.lnn", threads=THREADS_N).predict
        out[workload] = (x, model(x).data, engines)
    return out


def _torch(workload: str, variant: str):
    torch = pytest.importorskip("torch")
    _limits = configure_threads("torch", THREADS_N)  # noqa: F841 (held while building)
    spec = NETS[workload]
    net = torch_net(spec, net_weights(spec)).eval()
    if variant.endswith("channels_last"):  # NHWC in memory, oneDNN's preferred layout
        net = net.to(memory_format=torch.channels_last)
    if variant.endswith("int8"):
        net = torch.ao.quantization.quantize_dynamic(
            net, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8
        )

    def predict(x):
        with torch.inference_mode():
            tx = torch.from_numpy(x)
            if variant.endswith("channels_last"):
                tx = tx.to(memory_format=torch.channels_last)
            return net(tx).numpy()

    return predict


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(("workload", "batch", "variant"), PARAMS)
def test_inference(benchmark, served, workload, batch, variant):
    x_all, want_all, engines = served[workload]
    x, want = x_all[:batch], want_all[:batch]
    predict = _torch(workload, variant) if variant.startswith("torch") else engines[variant]
    got = predict(x)
    if "int8" in variant:
        assert _rel(got, want) < 0.05
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    benchmark.group = f"{workload} inference, batch {batch}, {THREADS_N} thread(s)"
    benchmark(predict, x)
    record_rate(benchmark, batch)
