"""Files from PyTorch's dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``, which
needs ``onnxscript``): an MLP, a residual CNN with BatchNorm, an LSTM and a GRU, imported and
run by the runtime and by the layers, against ONNX Runtime on the same file within 1e-5."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

import lepton_nn.onnx as lo  # noqa: E402
from lepton_nn import runtime  # noqa: E402

nn = torch.nn


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.c1(x)))
        h = torch.relu(h + self.c2(h))
        return self.fc(nn.functional.max_pool2d(h, 2).flatten(1))


class _Recurrent(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.r = cell(3, 5, batch_first=True)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        return self.fc(self.r(x)[0][:, -1])


def _models():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(8)
    return {
        "mlp": (
            nn.Sequential(nn.Linear(6, 8), bn, nn.ReLU(), nn.Linear(8, 3), nn.Softmax(-1)),
            (6,),
        ),  # fmt: skip
        "mlp-gelu-layernorm": (
            nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 3)),
            (6,),
        ),  # fmt: skip
        "cnn": (_Residual(), (2, 6, 6)),
        "lstm": (_Recurrent(nn.LSTM), (4, 3)),
        "gru": (_Recurrent(nn.GRU), (4, 3)),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_dynamo_export_imports(tmp_path, name):
    model, shape = _models()[name]
    model.eval()
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "m.onnx"
    logging.getLogger("torch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, *shape),), str(path), dynamo=True,
                          input_names=["x"], output_names=["y"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},))  # fmt: skip
    x = np.random.default_rng(1).standard_normal((7, *shape)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    served = runtime.load(str(path)).predict(x)
    assert np.abs(served - ref[0]).max() < 1e-5
    net = lo.load(str(path))
    assert np.abs(np.asarray(net(x).data) - ref[0]).max() < 1e-5
