"""ONNX import: PyTorch models exported to ONNX, converted, run by lepton_nn's runtime and
its layers, against ONNX Runtime on the same file (the oracle), within 1e-5."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import PKG_PARENT

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
nn = torch.nn

import lepton_nn.onnx as lo  # noqa: E402
from lepton_nn import runtime  # noqa: E402
from lepton_nn.errors import ModelFormatError  # noqa: E402

TOL = 1e-5


class _Rec(nn.Module):
    """A recurrent layer and a head: ``mode`` h (final states), last (outputs[:, -1]) or
    flat (all outputs flattened)."""

    def __init__(self, cell, bi, mode, f=3, u=5, t=4, vocab=0):
        super().__init__()
        self.emb = nn.Embedding(vocab, f) if vocab else None
        self.r = cell(f, u, batch_first=True, bidirectional=bi)
        d = 2 if bi else 1
        self.fc = nn.Linear(d * u * (t if mode == "flat" else 1), 3)
        self.mode, self.bi = mode, bi

    def forward(self, x):
        if self.emb is not None:
            x = self.emb(x)
        o, h = self.r(x)
        h = h[0] if isinstance(h, tuple) else h
        if self.mode == "h":
            return self.fc(torch.cat([h[-2], h[-1]], 1) if self.bi else h[-1])
        if self.mode == "last":
            return self.fc(o[:, -1])
        return self.fc(o.reshape(o.shape[0], -1))


class _Residual(nn.Module):
    """A residual CNN block (identity skip, then a projection skip) and a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                   nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))  # fmt: skip
        self.down = nn.Conv2d(4, 6, 1, stride=2)
        self.main = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))

    def forward(self, x):
        h = self.stem(x)
        h = torch.relu(h + self.block(h))
        return self.head(self.down(h) + self.main(h))


class _Branches(nn.Module):
    """Two inputs, branches joined by Concat, Sub and Mul, two outputs."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 4), nn.Linear(3, 4)
        self.c, self.d = nn.Linear(8, 2), nn.Linear(4, 2)

    def forward(self, x, z):
        a, b = torch.tanh(self.a(x)), torch.relu(self.b(z))
        return self.c(torch.cat([a, b], 1)), self.d(a * b - a)


def _models():
    torch.manual_seed(0)
    seq = (4, 3)
    return {
        "mlp": (
            nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Softmax(-1)),
            (8,),
        ),
        "mlp_bn_ln": (
            nn.Sequential(
                nn.Linear(6, 12),
                nn.BatchNorm1d(12),
                nn.Tanh(),
                nn.LayerNorm(12),
                nn.Linear(12, 3),
                nn.LogSoftmax(-1),
            ),
            (6,),
        ),  # fmt: skip
        "cnn_bn": (
            nn.Sequential(
                nn.Conv2d(2, 4, 3, padding=1),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(4, 6, 3, stride=2, dilation=1),
                nn.Sigmoid(),
                nn.AvgPool2d(2, padding=1),
                nn.Flatten(),
                nn.Linear(6 * 2 * 2, 5),
            ),
            (2, 10, 10),
        ),  # fmt: skip
        "cnn_gap": (
            nn.Sequential(
                nn.Conv2d(1, 4, 3, dilation=2),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(4, 2),
            ),
            (1, 9, 9),
        ),  # fmt: skip
        "lstm_h": (_Rec(nn.LSTM, False, "h"), seq),
        "lstm_last": (_Rec(nn.LSTM, False, "last"), seq),
        "bilstm_flat": (_Rec(nn.LSTM, True, "flat"), seq),
        "bigru_h": (_Rec(nn.GRU, True, "h"), seq),
        "gru_flat": (_Rec(nn.GRU, False, "flat"), seq),
        "birnn_h": (_Rec(nn.RNN, True, "h"), seq),
        "embedding_bigru": (_Rec(nn.GRU, True, "h", f=6, t=7, vocab=20), (7,)),
        "residual_cnn": (_Residual(), (2, 8, 8)),
    }


MODELS = _models()


def _export(model, shape, path, dynamic=True):
    model.eval()
    ids = shape == (7,)
    x = torch.randint(0, 20, (2, *shape)) if ids else torch.randn(2, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "batch"}} if dynamic else None, opset_version=17,
        )  # fmt: skip
    return ids


def _sample(shape, n, ids, seed=1):
    rng = np.random.default_rng(seed)
    if ids:
        return rng.integers(0, 20, (n, *shape)).astype(np.int64)
    return rng.standard_normal((n, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", list(MODELS))
def test_import_matches_onnxruntime(tmp_path, name):
    model, shape = MODELS[name]
    path = tmp_path / f"{name}.onnx"
    ids = _export(model, shape, path)
    session = ort.InferenceSession(str(path))
    served = runtime.load(path)  # converted in memory
    net = lo.load(path)  # a lepton_nn network
    for n in (1, 7):
        x = _sample(shape, n, ids)
        ref = session.run(None, {"x": x})[0]
        got = served.predict(x)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)
        np.testing.assert_allclose(net(x).data, ref, rtol=0, atol=TOL)


def test_two_inputs_two_outputs(tmp_path):
    torch.manual_seed(0)
    net = _Branches().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.randn(2, 5), torch.randn(2, 3)), str(tmp_path / "b.onnx"), dynamo=False,
            input_names=["x", "z"], output_names=["p", "q"],
            dynamic_axes={"x": {0: "n"}, "z": {0: "n"}}, opset_version=17,
        )  # fmt: skip
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((6, 5)).astype("f4"),
             "z": rng.standard_normal((6, 3)).astype("f4")}  # fmt: skip
    ref = ort.InferenceSession(str(tmp_path / "b.onnx")).run(None, feeds)
    got = runtime.load(tmp_path / "b.onnx").predict(feeds)
    layers = lo.load(tmp_path / "b.onnx")(feeds)
    for r, g, h in zip(ref, got, layers):
        np.testing.assert_allclose(g, r, rtol=0, atol=TOL)
        np.testing.assert_allclose(h.data, r, rtol=0, atol=TOL)


def test_imported_network_is_trainable_and_saves(tmp_path):
    import lepton_nn as L

    model, shape = MODELS["mlp_bn_ln"]
    _export(model, shape, tmp_path / "m.onnx")
    net = lo.load(tmp_path / "m.onnx")
    L.save(net, tmp_path / "m.lnn")
    x = _sample(shape, 5, False)
    np.testing.assert_allclose(runtime.load(tmp_path / "m.lnn").predict(x), net(x).data, atol=TOL)
    net.train()
    loss = (net(x) * net(x)).sum()
    loss.backward()
    assert all(p.grad is not None and np.isfinite(p.grad).all() for p in net.parameters())


def test_bidirectional_last_step_is_refused(tmp_path):
    _export(_Rec(nn.LSTM, True, "last"), (4, 3), tmp_path / "m.onnx")
    with pytest.raises(ModelFormatError, match="index"):
        lo.onnx_to_manifest(tmp_path / "m.onnx")


def test_report_lists_ops(tmp_path):
    model, shape = MODELS["cnn_bn"]
    _export(model, shape, tmp_path / "m.onnx")
    _, _, report = lo.onnx_to_manifest(tmp_path / "m.onnx")
    assert report["ops"]["Conv"] == 2 and report["ops"]["Gemm"] == 1


def test_runtime_load_of_onnx_imports_no_layers(tmp_path):
    model, shape = MODELS["bigru_h"]
    _export(model, shape, tmp_path / "m.onnx")
    code = f"""
import sys
import numpy as np
import lepton_nn.runtime as rt
assert "onnx" not in sys.modules, "import lepton_nn.runtime imported onnx"
m = rt.load({str(tmp_path / "m.onnx")!r})
print(m.predict(np.zeros((2, 4, 3), np.float32)).shape)
bad = [k for k in sys.modules if k.startswith(("lepton_nn.autograd", "lepton_nn.nn",
       "lepton_nn.ops", "lepton_nn.train", "lepton_nn.io", "numba", "torch"))]
assert not bad, bad
"""
    env = {**os.environ, "PYTHONPATH": str(PKG_PARENT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 3)"


class _View(nn.Module):
    """``h.view(h.size(0), -1)``: a Shape -> Gather -> Concat -> Reshape subgraph (or, at a
    fixed batch size, a constant target holding that size)."""

    def __init__(self):
        super().__init__()
        self.c, self.f = nn.Conv2d(1, 3, 3), nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        h = torch.relu(self.c(x))
        return self.f(h.view(h.size(0), -1))


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("dynamic", [True, False])
def test_shape_subgraphs_and_fixed_batch_exports(tmp_path, opset, dynamic):
    torch.manual_seed(0)
    net = _View().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(2, 1, 6, 6),), str(tmp_path / "v.onnx"), dynamo=False,
                          input_names=["x"], opset_version=opset,
                          dynamic_axes={"x": {0: "b"}} if dynamic else None)  # fmt: skip
    served = runtime.load(tmp_path / "v.onnx")
    for n in (1, 2, 5):  # the converted network takes any batch size
        x = _sample((1, 6, 6), n, False)
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(served.predict(x), ref, rtol=0, atol=TOL)
