"""Dense kernels on every available backend, beside PyTorch where it is installed.

    python -m pytest benchmarks/bench_kernels.py --benchmark-only -q --benchmark-min-rounds=20

Groups: ``adam-1M-f32`` (one Adam step over 2^20 float32 parameters; PyTorch's fused Adam is
the peer) and ``bias-relu-128x512-f32`` (the dense epilogue out = max(z + b, 0)). Our kernels
run on one thread; PyTorch runs on one thread and on its default count (``extra_info``).
"""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn.backend as backend
from lepton_nn.backend.reference import RELU

pytest.importorskip("pytest_benchmark")

BACKENDS = backend.available()  # always includes "reference"
N_PARAMS = 1 << 20
EPILOGUE = (128, 512)
ADAM = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}


def _adam_state(seed=0):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(N_PARAMS, dtype=np.float32)
    g = rng.standard_normal(N_PARAMS, dtype=np.float32)
    return p, g, np.zeros_like(p), np.zeros_like(p)


def _epilogue_data(seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(EPILOGUE, dtype=np.float32)
    b = rng.standard_normal(EPILOGUE[1], dtype=np.float32)
    return z, b, np.empty_like(z)


@pytest.mark.benchmark(group="adam-1M-f32")
@pytest.mark.parametrize("name", BACKENDS)
def test_adam_step(benchmark, name):
    with backend.use_backend(name) as b:
        p, g, m, v = _adam_state()
        a = ADAM
        args = (a["lr"], a["beta1"], a["beta2"], a["eps"], a["weight_decay"], 1, False)
        b.adam_step(p, g, m, v, *args)  # compile (Numba) and touch the memory once
        benchmark.extra_info["threads"] = 1
        benchmark(b.adam_step, p, g, m, v, *args)
        assert np.isfinite(p).all()


@pytest.fixture(params=["1", "default"])
def torch_threads(request):
    """PyTorch on one thread (like our kernels) and on its default thread count."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    if request.param == "1":
        torch.set_num_threads(1)
    try:
        yield torch
    finally:
        torch.set_num_threads(before)


@pytest.mark.benchmark(group="adam-1M-f32")
def test_adam_step_torch_fused(benchmark, torch_threads):
    torch = torch_threads
    p0, g0, _, _ = _adam_state()
    p = torch.nn.Parameter(torch.from_numpy(p0))
    p.grad = torch.from_numpy(g0)
    a = ADAM
    opt = torch.optim.Adam(
        [p], lr=a["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"], fused=True
    )
    opt.step()
    benchmark.extra_info["threads"] = torch.get_num_threads()
    benchmark(opt.step)
    assert torch.isfinite(p).all()


@pytest.mark.benchmark(group="bias-relu-128x512-f32")
@pytest.mark.parametrize("name", BACKENDS)
def test_bias_relu(benchmark, name):
    with backend.use_backend(name) as b:
        z, bias, out = _epilogue_data()
        b.bias_act_forward(z, bias, RELU, out)
        benchmark.extra_info["threads"] = 1
        benchmark(b.bias_act_forward, z, bias, RELU, out)
        np.testing.assert_allclose(out, np.maximum(z + bias, 0))


@pytest.mark.benchmark(group="bias-relu-128x512-f32")
def test_bias_relu_torch(benchmark, torch_threads):
    torch = torch_threads
    z, bias, out = (torch.from_numpy(a) for a in _epilogue_data())

    def epilogue():
        return torch.add(z, bias, out=out).relu_()

    epilogue()
    benchmark.extra_info["threads"] = torch.get_num_threads()
    benchmark(epilogue)
    np.testing.assert_allclose(out.numpy(), np.maximum(z.numpy() + bias.numpy(), 0))
