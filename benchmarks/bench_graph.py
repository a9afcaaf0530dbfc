"""Graph models at inference: a small residual CNN (3 blocks of Conv-BN-ReLU-Conv-BN + skip on
16x16 images, 16 channels) served by our runtime against PyTorch ``inference_mode`` on the
same weights, batch 1 and 64, one thread each; ``extra_info`` holds the plan's activation
memory with and without buffer reuse.

    python -m pytest benchmarks/bench_graph.py --benchmark-columns=median,ops -q
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

BATCHES = (1, 64)
BLOCKS, CH, HW = 3, 16, 16


def build():
    import lepton_nn as ln
    from lepton_nn import nn

    ln.set_seed(0)
    x = nn.Input((3, HW, HW), name="img")
    h = nn.ReLU()(nn.BatchNorm()(nn.Conv2D(CH, 3, padding="same")(x)))
    for _ in range(BLOCKS):
        r = nn.ReLU()(nn.BatchNorm()(nn.Conv2D(CH, 3, padding="same")(h)))
        r = nn.BatchNorm()(nn.Conv2D(CH, 3, padding="same")(r))
        h = nn.ReLU()(nn.Add()([h, r]))
    model = nn.Model(x, nn.Dense(10)(nn.GlobalAvgPool2D()(h)))
    rng = np.random.default_rng(0)
    for m in model.layers:  # running statistics that are not the identity
        if type(m).__name__ == "BatchNorm":
            m.load_buffers(
                {
                    "running_mean": (0.1 * rng.standard_normal(CH)).astype(np.float32),
                    "running_var": rng.uniform(0.5, 2, CH).astype(np.float32),
                }
            )
    return model.eval()


def torch_twin(model):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    tnn = torch.nn

    def conv(layer):
        c = tnn.Conv2d(layer.weight.shape[1], layer.filters, 3, padding=1)
        c.weight.data = torch.from_numpy(layer.weight.data.copy())
        c.bias.data = torch.from_numpy(layer.bias.data.copy())
        return c

    def bn(layer):
        b = tnn.BatchNorm2d(CH, eps=layer.eps)
        for k in ("weight", "bias"):
            getattr(b, k).data = torch.from_numpy(getattr(layer, k).data.copy())
        bufs = layer.buffers()
        b.running_mean.data = torch.from_numpy(np.asarray(bufs["running_mean"]).copy())
        b.running_var.data = torch.from_numpy(np.asarray(bufs["running_var"]).copy())
        return b

    kinds = [type(m).__name__ for m in model.layers]
    convs = iter([m for m, k in zip(model.layers, kinds) if k == "Conv2D"])
    bns = iter([m for m, k in zip(model.layers, kinds) if k == "BatchNorm"])

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.stem = tnn.Sequential(conv(next(convs)), bn(next(bns)), tnn.ReLU())
            self.blocks = tnn.ModuleList(
                tnn.Sequential(
                    conv(next(convs)), bn(next(bns)), tnn.ReLU(), conv(next(convs)), bn(next(bns))
                )  # fmt: skip
                for _ in range(BLOCKS)
            )
            dense = [m for m in model.layers if type(m).__name__ == "Dense"][0]
            self.head = tnn.Linear(CH, 10)
            self.head.weight.data = torch.from_numpy(dense.weight.data.T.copy())
            self.head.bias.data = torch.from_numpy(dense.bias.data.copy())

        def forward(self, x):
            h = self.stem(x)
            for b in self.blocks:
                h = torch.relu(h + b(h))
            return self.head(h.mean(dim=(2, 3)))

    net = Net().eval()

    def run(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    return run


@pytest.fixture(scope="module")
def engines():
    import lepton_nn as ln
    import lepton_nn.runtime as rt

    model = build()
    path = os.path.join(tempfile.mkdtemp(), "resnet.lnn")
    ln.save(model, path)
    served = rt.load(path, threads=1)
    return {"lepton_nn runtime": served, "torch": torch_twin(model)}


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("engine", ["lepton_nn runtime", "torch"])
def test_residual_cnn_inference(benchmark, engines, engine, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 3, HW, HW)).astype(np.float32)
    served = engines["lepton_nn runtime"]
    fn = served.predict if engine == "lepton_nn runtime" else engines[engine]
    np.testing.assert_allclose(fn(x), served.predict(x), rtol=1e-4, atol=1e-4)
    benchmark.group = f"residual CNN, batch {batch}"
    if engine == "lepton_nn runtime":
        benchmark.extra_info.update(served.plan_info(batch))
    benchmark(fn, x)
