"""int8 post-training quantization: scales, exactness, accuracy, budget, files, every ISA."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import PKG_PARENT

import lepton_nn as L
import lepton_nn.runtime as rt
from lepton_nn import datasets, losses, nn, optim
from lepton_nn.backend import use_backend
from lepton_nn.compress import QuantizedModel, load_quantized, quantize, quantize_weight
from lepton_nn.compress.quantization import activation_params
from lepton_nn.errors import ModelFormatError
from lepton_nn.runtime.format import read_lnn, write_lnn
from lepton_nn.runtime.plan import DenseStep, Int8DenseStep
from lepton_nn.runtime.steps_conv import ConvStep, Int8ConvStep


def _mlp(n_in: int, sizes=(32, 16), n_out: int = 3, seed: int = 0, out_act=None) -> nn.Module:
    L.set_seed(seed)
    layers = [nn.Dense(u, "relu") for u in sizes] + [nn.Dense(n_out, out_act)]
    model = nn.Sequential(layers)
    model.build((None, n_in))
    return model.eval()


def _data(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)


# --------------------------------------------------------------------------- the math


def test_per_channel_weight_scales():
    w = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    w[:, 2] *= 100  # one loud output unit must not cost the others their precision
    w[:, 4] = 0
    q, s = quantize_weight(w)
    assert q.dtype == np.int8 and q.shape == (6, 20) and s.shape == (6,)
    np.testing.assert_allclose(s[[0, 1, 2, 3, 5]], np.abs(w).max(axis=0)[[0, 1, 2, 3, 5]] / 127)
    assert s[4] == 1 and not q[4].any()
    assert np.abs(q).max() == 127 and q.min() >= -127
    deq = (q.astype(np.float32) * s[:, None]).T
    assert np.all(np.abs(deq - w) <= s / 2 * (1 + 1e-6))
    _, shared = quantize_weight(w, per_channel=False)
    assert np.all(shared == np.abs(w).max() / 127)


def test_activation_params():
    s, z = activation_params(-1.0, 3.0)
    assert np.isclose(s, 4 / 255) and z == 64  # rint(1 / (4 / 255)) = rint(63.75)
    assert activation_params(0.5, 2.0) == (pytest.approx(2 / 255), 0)  # range keeps 0
    assert activation_params(0.0, 0.0) == (1.0, 0)


def _quant_rows(a: np.ndarray) -> np.ndarray:
    """Dynamic uint8 per row, dequantized: (q - z) s, by the documented rules (float32)."""
    lo = np.minimum(a.min(axis=1), 0).astype(np.float32)
    hi = np.maximum(a.max(axis=1), 0).astype(np.float32)
    s = ((hi - lo) / np.float32(255)).astype(np.float32)
    s[s == 0] = 1
    z = np.clip(np.rint(-lo / s), 0, 255)
    q = np.clip(np.rint(a * (np.float32(1) / s)[:, None]) + z[:, None], 0, 255)
    return (q - z[:, None]) * s[:, None].astype(np.float64)


def _reference_dense(layer, x: np.ndarray) -> np.ndarray:
    """f(dequant(q_x) @ dequant(q_w) + b) in float64, from the per-row uint8 quantization."""
    xd = _quant_rows(x)
    wd = layer.q.astype(np.float64).T * layer.scale.astype(np.float64)
    y = xd @ wd + (0 if layer.bias is None else layer.bias)
    return np.maximum(y, 0) if layer.activation == "relu" else y


@pytest.mark.parametrize("backend", ["cython", "reference"])
def test_int_path_matches_the_dequantized_reference(backend):
    model = _mlp(37, (29,), 5)  # ragged sizes: K, N not multiples of the kernel blocks
    x = _data(13, 37)
    with use_backend(backend):
        qm = quantize(model)
        layer = qm.layers["layers.0"]
        got = layer.forward(x)
    np.testing.assert_allclose(got, _reference_dense(layer, x), rtol=1e-5, atol=1e-5)
    assert layer.forward(x[:0]).shape == (0, 29)


# --------------------------------------------------------------------------- accuracy


@pytest.fixture(scope="module")
def trained():
    from lepton_nn.datasets import load_breast_cancer

    t = load_breast_cancer()
    x = np.column_stack([t[c] for c in t.columns]).astype(np.float32)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = (np.asarray(t.target) == "M").astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:400], idx[400:]
    model = _mlp(x.shape[1], (32, 16), 2, seed=1)
    model.train()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = losses.cross_entropy(model(x[tr]), y[tr])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, x[tr], y[tr], x[te], y[te]


def _acc(out: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(out.argmax(axis=1) == y))


@pytest.mark.parametrize(
    "mode, method", [("dynamic", "minmax"), ("static", "minmax"), ("static", "percentile")]
)
def test_accuracy_drop_under_one_point(trained, mode, method):
    model, xtr, ytr, xte, yte = trained
    base = _acc(model(xte).data, yte)
    assert base > 0.9
    qm = quantize(model, xtr, mode, method)
    assert _acc(qm.predict(xte), yte) >= base - 0.01
    errors = [r["error"] for r in qm.report]
    assert all(0 < e < 0.05 for e in errors)
    assert all(r["int8"] for r in qm.report)


def test_static_scales_come_from_calibration(trained):
    model, xtr, *_ = trained
    qm = quantize(model, xtr, "static", "minmax")
    layer = qm.layers["layers.0"]
    want = activation_params(float(xtr.min()), float(xtr.max()))
    assert (layer.act_scale, layer.act_zero_point) == (pytest.approx(want[0]), want[1])
    # an outlier stretches min-max but not the percentile range
    spiky = xtr.copy()
    spiky[0, 0] = 1e4
    wide = quantize(model, spiky, "static", "minmax").layers["layers.0"]
    narrow = quantize(model, spiky, "static", "percentile", percentile=99.9).layers["layers.0"]
    assert narrow.act_scale < wide.act_scale / 10
    # the first layer's input is the data itself: its dynamic error is smallest
    dyn = quantize(model, xtr, "dynamic")
    assert dyn.layers["layers.0"].error <= layer.error * 1.5


def test_exclude_keeps_layers_in_float(trained, tmp_path):
    model, xtr, *_ = trained
    qm = quantize(model, xtr, exclude=["layers.2"])
    assert set(qm.layers) == {"layers.0", "layers.1"}
    assert [r["reason"] for r in qm.report] == ["", "", "excluded"]
    by_name = quantize(model, exclude=[model.layers[0].name, "layers.[1]"])
    assert set(by_name.layers) == {"layers.2"}
    with pytest.raises(ValueError, match="matches no Dense layer"):
        quantize(model, exclude=["nope"])
    L.save(qm, tmp_path / "q.lnn")
    steps = rt.load(tmp_path / "q.lnn").network.steps
    assert [type(s) for s in steps] == [Int8DenseStep, Int8DenseStep, DenseStep]


def test_budget_keeps_the_costly_layer_in_float():
    model = _mlp(16, (32, 32), 8, seed=4)
    w = model.layers[1].weight.data
    w[0, 0] = 300 * np.abs(w).max()  # per-tensor scale now crushes layer 1's other weights
    x = _data(600, 16, seed=1)
    y = model(x).data.argmax(axis=1)  # the float model is right by definition
    blunt = quantize(model, x, per_channel=False)
    worst = max(blunt.report, key=lambda r: r["error"])
    assert worst["layer"] == "layers.1"
    assert _acc(blunt.predict(x), y) < 0.9
    qm = quantize(model, x, per_channel=False, max_accuracy_drop=0.05, eval_data=(x, y))
    assert "layers.1" not in qm.layers and {"layers.0", "layers.2"} <= set(qm.layers)
    assert [r["reason"] for r in qm.report] == ["", "budget", ""]
    assert qm.scores["float"] == 1.0 and qm.scores["quantized"] >= 0.95
    assert "budget" in qm.summary()
    with pytest.raises(ValueError, match="eval_data"):
        quantize(model, x, max_accuracy_drop=0.01)


def test_argument_checks():
    model = _mlp(4)
    with pytest.raises(ValueError, match="calibration_data"):
        quantize(model, mode="static")
    with pytest.raises(ValueError, match="mode"):
        quantize(model, mode="weekly")
    with pytest.raises(ValueError, match="method"):
        quantize(model, _data(8, 4), "static", "median")


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_file_round_trip_to_the_runtime(tmp_path, mode):
    model = _mlp(784, (512, 256), 10, seed=2, out_act="softmax")
    x = _data(64, 784, seed=3)
    qm = quantize(model, x, mode)
    L.save(qm, tmp_path / "q.lnn")
    L.save(model, tmp_path / "f.lnn")
    manifest, arrays = read_lnn(tmp_path / "q.lnn")
    assert manifest["kind"] == "compressed"
    entry = manifest["model"]["compression"]["layers"][0]
    assert entry["method"] == "int8" and entry["activations"]["mode"] == mode
    assert arrays[entry["weight"]["q"]].dtype == np.int8
    assert "layers.0.weight" not in manifest["model"]["params"]
    assert os.path.getsize(tmp_path / "q.lnn") <= 0.3 * os.path.getsize(tmp_path / "f.lnn")
    served = rt.load(tmp_path / "q.lnn")
    assert all(isinstance(s, Int8DenseStep) for s in served.network.steps[:3])
    for n in (0, 1, 7, 64):
        np.testing.assert_array_equal(served.predict(x[:n]), qm.predict(x[:n]))
    back = load_quantized(tmp_path / "q.lnn")
    assert isinstance(back, QuantizedModel) and back.mode == mode
    np.testing.assert_array_equal(back.predict(x), qm.predict(x))
    floaty = L.load(tmp_path / "q.lnn")  # the float model with dequantized weights
    np.testing.assert_allclose(floaty(x).data, qm.dequantized()(x).data, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(floaty(x).data, model(x).data, atol=0.02)


def test_static_layer_is_one_quantize_and_one_qlinear_call(tmp_path):
    # static activations: quantize_rows(x, q, scale, zp, True) with the calibrated pair, then
    # qlinear; no NumPy calls in between; batch 1 = batch n = QuantizedModel = the reference
    model = _mlp(26, (32, 16), 1, seed=4)
    x = _data(200, 26, seed=5) * 3
    qm = quantize(model, x[:100], "static")
    L.save(qm, tmp_path / "q.lnn")
    served = rt.load(tmp_path / "q.lnn")
    one = served.plan_for(1)  # compiled: the three layers in one call (tests/test_qgemv.py)
    names = [fn.__name__ for fn, *_ in one.head] + [fn.__name__ for fn, _ in one.tail]
    assert names in (["qdense_chain_forward"], ["quantize_rows", "qlinear"] * 3)
    plan = served.plan_for(8)  # past the chain's rows: two calls a layer
    names = [fn.__name__ for fn, *_ in plan.head] + [fn.__name__ for fn, _ in plan.tail]
    assert names == ["quantize_rows", "qlinear"] * 3
    for fn, args in plan.tail:
        if fn.__name__ == "quantize_rows":
            assert args[-1] is True and args[2].shape == (1,) and args[3].shape == (1,)
    with use_backend("reference"):  # qlinear's reference twin rounds without FMA: ~1 ulp
        ref = rt.load(tmp_path / "q.lnn")
        want = np.concatenate([ref.predict(x[i : i + 1]) for i in range(len(x))])
        np.testing.assert_array_equal(ref.predict(x), want)
    rows = np.concatenate([served.predict(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(rows, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(served.predict(x), rows)
    np.testing.assert_array_equal(qm.predict(x), rows)


def test_every_isa_gives_the_same_answer(tmp_path):
    qgemm = pytest.importorskip("lepton_nn.kernels._qgemm")
    model = _mlp(100, (33,), 7, seed=6)
    x = _data(70, 100)
    with use_backend("reference"):
        want = quantize(model).predict(x)
    qm = quantize(model)
    L.save(qm, tmp_path / "q.lnn")
    served = rt.load(tmp_path / "q.lnn")
    active = qgemm.isa()
    try:
        for isa in qgemm.supported_isas():
            assert qgemm.set_isa(isa) == isa
            np.testing.assert_allclose(qm.predict(x), want, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(served.predict(x[:1]), want[:1], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(served.predict(x), want, rtol=1e-6, atol=1e-6)
    finally:
        qgemm.set_isa(active)


# --------------------------------------------------------------------------- QAT


def test_qat_forward_is_the_int8_model_and_trains(trained):
    from lepton_nn.compress import QATDense, convert_qat, prepare_qat

    model, xtr, ytr, xte, yte = trained
    m = copy.deepcopy(model)
    want = quantize(m).predict(xte)  # dynamic int8 of the same weights
    prepare_qat(m)
    assert all(isinstance(layer, QATDense) for layer in m.layers)
    assert list(m.state_dict()) == list(model.state_dict())  # same parameter names
    np.testing.assert_allclose(m(xte).data, want, rtol=1e-4, atol=1e-4)
    m.train()
    opt = optim.Adam(m.parameters(), lr=1e-3)
    before = m.layers[0].weight.data.copy()
    for _ in range(20):
        loss = losses.cross_entropy(m(xtr), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not np.array_equal(m.layers[0].weight.data, before)  # gradients got through
    convert_qat(m).eval()
    assert not any(isinstance(layer, QATDense) for layer in m.modules())
    assert _acc(quantize(m).predict(xte), yte) >= _acc(model(xte).data, yte) - 0.01


def test_lepton_isa_environment_forces_a_path(tmp_path):
    import json
    import subprocess
    import sys

    qgemm = pytest.importorskip("lepton_nn.kernels._qgemm")
    model = _mlp(40, (24,), 3, seed=7)
    x = _data(5, 40)
    L.save(quantize(model), tmp_path / "q.lnn")
    np.save(tmp_path / "x.npy", x)
    want = rt.load(tmp_path / "q.lnn").predict(x)
    root = str(PKG_PARENT)
    code = f"""
import json, numpy as np, lepton_nn.runtime as rt
from lepton_nn.kernels import _qgemm
out = rt.load({str(tmp_path / "q.lnn")!r}).predict(np.load({str(tmp_path / "x.npy")!r}))
print(json.dumps([_qgemm.isa(), out.tolist()]))
"""
    for isa in qgemm.supported_isas():
        env = {**os.environ, "LEPTON_ISA": isa, "PYTHONPATH": root}
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root
        )
        assert res.returncode == 0, res.stderr
        active, out = json.loads(res.stdout)
        assert active == isa
        np.testing.assert_allclose(np.array(out, np.float32), want, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- Conv2D

DIGITS = Path(datasets.path("digits"))  # bundled with the package


def _cnn(seed: int = 0, filters=(8,)) -> nn.Module:
    L.set_seed(seed)
    layers: list = []
    for f in filters:
        layers += [nn.Conv2D(f, 3, padding="same", activation="relu"), nn.MaxPool2D(2)]
    layers += [nn.Flatten(), nn.Dense(32, activation="relu"), nn.Dense(10)]
    model = nn.Sequential(layers)
    model.build((None, 1, 8, 8))
    return model.eval()


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_conv_int8_is_close_to_float_and_served_exactly(tmp_path, mode):
    model = _cnn(seed=1)
    x = _images(200, seed=2)
    qm = quantize(model, x[:100], mode)
    conv = qm.layers["layers.0"]
    assert conv.conv_shape == (8, 1, 3, 3) and conv.q.shape == (8, 9)
    assert set(qm.layers) == {"layers.0", "layers.3", "layers.4"}
    assert 0 < qm.report[0]["error"] < 0.02 and qm.report[0]["shape"] == [8, 1, 3, 3]
    # the conv alone (fed its float input) and the whole model, against the float model
    want = model.layers[0](x).data
    assert _rel(conv.forward(x), want) < 0.02
    assert _rel(qm.predict(x), model(x).data) < 0.02
    L.save(qm, tmp_path / "q.lnn")
    served = rt.load(tmp_path / "q.lnn")
    assert isinstance(served.network.steps[0], Int8ConvStep)
    for n in (1, 7, 64, 200):
        np.testing.assert_array_equal(served.predict(x[:n]), qm.predict(x[:n]))
    rows = np.concatenate([served.predict(x[i : i + 1]) for i in range(20)])
    np.testing.assert_array_equal(rows, qm.predict(x[:20]))  # batch-independent


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_conv_file_round_trip(tmp_path, mode):
    model = _cnn(seed=3, filters=(4, 8))
    x = _images(64, seed=4)
    qm = quantize(model, x, mode)
    L.save(qm, tmp_path / "q.lnn")
    manifest, arrays = read_lnn(tmp_path / "q.lnn")
    assert manifest["kind"] == "compressed"
    entries = {e["layer"]: e for e in manifest["model"]["compression"]["layers"]}
    e = entries["layers.2"]
    assert e["method"] == "int8" and e["activations"]["mode"] == mode
    assert e["weight"]["shape"] == [8, 4, 3, 3]
    assert arrays[e["weight"]["q"]].shape == (8, 36) and arrays[e["weight"]["q"]].dtype == np.int8
    assert arrays[e["weight"]["scale"]].shape == (8,)
    assert "layers.2.weight" not in manifest["model"]["params"]
    back = load_quantized(tmp_path / "q.lnn")
    assert back.layers["layers.2"].conv_shape == (8, 4, 3, 3)
    np.testing.assert_array_equal(back.predict(x), qm.predict(x))
    floaty = L.load(tmp_path / "q.lnn")  # the float model with dequantized weights
    np.testing.assert_array_equal(
        floaty.layers[2].weight.data, qm.layers["layers.2"].dequantized_weight()
    )
    np.testing.assert_allclose(floaty(x).data, qm.dequantized()(x).data, rtol=1e-5, atol=1e-6)
    assert _rel(floaty(x).data, model(x).data) < 0.02


def test_conv_exclude_and_budget(tmp_path):
    model = _cnn(seed=5)
    x = _images(64, seed=6)
    qm = quantize(model, x, "static", exclude=["conv2d*"])
    assert "layers.0" not in qm.layers and qm.report[0]["reason"] == "excluded"
    L.save(qm, tmp_path / "q.lnn")
    served = rt.load(tmp_path / "q.lnn")
    assert isinstance(served.network.steps[0], ConvStep)
    np.testing.assert_array_equal(served.predict(x), qm.predict(x))
    # a zero budget on labels the float model gets right: every int8 layer that changes one
    # prediction goes back to float, the conv included when it is the costliest
    y = model(x).data.argmax(axis=1)
    qb = quantize(model, x, "static", max_accuracy_drop=0.0, eval_data=(x, y))
    assert qb.scores["quantized"] == qb.scores["float"] == 1.0
    assert _acc(qb.predict(x), y) == 1.0
    with pytest.raises(ValueError, match="matches no Dense layer"):
        quantize(model, exclude=["nope"])


@pytest.mark.skipif(not DIGITS.exists(), reason="digits.csv not found beside the repository")
@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_digits_cnn_loses_under_one_point(digits_cnn, mode, tmp_path):
    model, xtr, xte, yte = digits_cnn
    base = _acc(model(xte).data, yte)
    assert base > 0.9
    qm = quantize(model, xtr[:500], mode)
    assert all(r["int8"] for r in qm.report)
    out = qm.predict(xte)
    assert _acc(out, yte) >= base - 0.01
    L.save(qm, tmp_path / "q.lnn")
    np.testing.assert_array_equal(rt.load(tmp_path / "q.lnn").predict(xte), out)


@pytest.fixture(scope="module")
def digits_cnn():
    if not DIGITS.exists():
        pytest.skip("digits.csv not found beside the repository")
    table = np.loadtxt(DIGITS, delimiter=",", skiprows=1)
    x = (table[:, :64] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = table[:, 64].astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:1300], idx[1300:]
    model = _cnn(seed=0, filters=(8, 16))
    model.train()
    opt = optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(4):
        order = rng.permutation(tr)
        for i in range(0, len(order), 32):
            b = order[i : i + 32]
            loss = losses.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model, x[tr], x[te], y[te]


# --------------------------------------------------------------------------- recurrent


def _rnn(cell, bidirectional=False, sequences=False, seed=0) -> nn.Module:
    L.set_seed(seed)
    layers = [cell(16, bidirectional=bidirectional, return_sequences=sequences)]
    layers += [nn.Flatten()] if sequences else []
    model = nn.Sequential([*layers, nn.Dense(3)])
    model.build((None, 7, 5))
    return model.eval()


def _series(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 7, 5)).astype(np.float32)


RNN_CASES = [
    (cell, bi, seq)
    for cell in (nn.LSTM, nn.GRU, nn.SimpleRNN)
    for bi, seq in ((False, False), (True, True))
]


@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize(("cell", "bi", "seq"), RNN_CASES)
def test_recurrent_int8_is_close_and_served_exactly(tmp_path, cell, bi, seq, mode):
    model, x = _rnn(cell, bi, seq), _series(40)
    qm = quantize(model, x, mode)
    rnn = qm.layers["layers.0"]
    want = {"weight_ih", "weight_hh"} | (
        {"weight_ih_reverse", "weight_hh_reverse"} if bi else set()
    )
    assert set(rnn.mats) == want and qm.report[0]["int8"] and 0 < qm.report[0]["error"] < 0.03
    assert _rel(qm.predict(x), model(x).data) < 0.03
    sizes = qm.weight_bytes()
    assert sizes["quantized"] < 0.36 * sizes["float"]
    L.save(qm, tmp_path / "q.lnn")
    manifest, _ = read_lnn(tmp_path / "q.lnn")
    entries = {e["param"]: e for e in manifest["model"]["compression"]["layers"]}
    assert {f"layers.0.{a}" for a in want} <= set(entries)
    assert entries["layers.0.weight_hh"]["activations"] == {"mode": "dynamic"}
    assert entries["layers.0.weight_ih"]["activations"]["mode"] == mode
    served = rt.load(tmp_path / "q.lnn")
    assert "int8 weights" in served.network.steps[0].describe()
    for n in (1, 13, 40):  # the runtime and the wrapper run the same kernels: same bits
        np.testing.assert_array_equal(served.predict(x[:n]), qm.predict(x[:n]))
    np.testing.assert_array_equal(load_quantized(tmp_path / "q.lnn").predict(x), qm.predict(x))
    floaty = L.load(tmp_path / "q.lnn")  # the float model with the dequantized weights
    np.testing.assert_allclose(floaty(x).data, qm.dequantized()(x).data, rtol=1e-6, atol=1e-6)


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_recurrent_int8_equals_a_numpy_oracle(cell):
    """An independent loop in float64 over the dequantized operands: x and every h quantized
    per row, W_ih and W_hh per output column; gates as the layer's docstring gives them."""
    model, x = _rnn(cell), _series(12, seed=3)
    qm = quantize(model, x, "dynamic")
    rnn, layer = qm.layers["layers.0"], model.layers[0]
    w = {a: (q.astype(np.float64) * s[:, None]).T for a, (q, s) in rnn.mats.items()}
    u = layer.units
    xz = _quant_rows(x.reshape(-1, 5)).reshape(12, 7, 5) @ w["weight_ih"] + layer.bias.data
    h, c = np.zeros((12, u)), np.zeros((12, u))
    for t in range(7):
        hz = _quant_rows(h.astype(np.float32)) @ w["weight_hh"]
        if cell is nn.LSTM:
            z = xz[:, t] + hz
            i, f, o = (_sigmoid(z[:, k * u : (k + 1) * u]) for k in (0, 1, 3))
            g = np.tanh(z[:, 2 * u : 3 * u])
            c = f * c + i * g
            h = o * np.tanh(c)
        else:
            a = hz + layer.bias_hh.data
            zg = _sigmoid(xz[:, t, :u] + a[:, :u])
            r = _sigmoid(xz[:, t, u : 2 * u] + a[:, u : 2 * u])
            n = np.tanh(xz[:, t, 2 * u :] + r * a[:, 2 * u :])
            h = (1 - zg) * n + zg * h
    want = h @ model.layers[1].weight.data + model.layers[1].bias.data
    head = qm.layers["layers.1"]  # the Dense head is int8 too: compare the state through it
    np.testing.assert_allclose(head.forward(h.astype(np.float32)), qm.predict(x), atol=2e-5)
    assert _rel(qm.predict(x), want) < 0.02


def test_recurrent_int8_refuses_what_it_cannot_run(tmp_path):
    model = nn.Sequential([nn.GRU(8, return_state=True)])  # a tuple out: runtime has none
    model.build((None, 7, 5))
    qm = quantize(model.eval(), _series(4), "dynamic")
    assert qm.report[0]["reason"] == "return_state" and not qm.layers

    class Padded(nn.Module):  # a model that passes lengths (or a state) to its GRU
        def __init__(self, state=False):
            super().__init__()
            self.gru, self.state = nn.GRU(8, input_size=5), state

        def call(self, x):
            if self.state:
                return self.gru(x, initial_state=[np.zeros((x.shape[0], 8), np.float32)])
            return self.gru(x, lengths=np.array([7, 3, 0]))

    padded = Padded().eval()
    x = _series(3)
    qm = quantize(padded, x, "dynamic")
    assert _rel(qm.predict(x), padded(x).data) < 0.03
    short = qm.predict(x)[1]  # the second sequence has 3 real steps: the rest cannot matter
    x[1, 3:] = 100.0
    np.testing.assert_array_equal(qm.predict(x)[1], short)
    with pytest.raises(L.LeptonError, match="initial_state"):
        quantize(Padded(state=True).eval(), None, "dynamic")(_series(3))
    # a file with only one of the GRU's matrices in int8: the runtime runs it, the wrapper not
    qm = quantize(_rnn(nn.GRU), _series(8))
    manifest, arrays = qm.to_lnn()
    comp = manifest["model"]["compression"]["layers"]
    hh = next(e for e in comp if e["param"] == "layers.0.weight_hh")
    comp.remove(hh)
    q, s = arrays.pop(hh["weight"]["q"]), arrays.pop(hh["weight"]["scale"])
    arrays["params/layers.0.weight_hh"] = (q.astype(np.float32) * s[:, None]).T.copy()
    manifest["model"]["params"].append("layers.0.weight_hh")
    write_lnn(tmp_path / "part.lnn", manifest, arrays)
    assert rt.load(tmp_path / "part.lnn").predict(_series(3)).shape == (3, 3)
    with pytest.raises(ModelFormatError, match="needs all of"):
        load_quantized(tmp_path / "part.lnn")
    # hostile: an int8 entry for a bias, and an int8 matrix of the wrong shape
    bad = copy.deepcopy(manifest)
    bad["model"]["compression"]["layers"][0]["param"] = "layers.0.bias"
    write_lnn(tmp_path / "bias.lnn", bad, arrays)
    with pytest.raises(ModelFormatError, match="not a weight of"):
        rt.load(tmp_path / "bias.lnn")
    manifest, arrays = qm.to_lnn()
    ih = next(e for e in manifest["model"]["compression"]["layers"] if e["param"].endswith("ih"))
    ih["weight"]["shape"] = [4, 48]
    arrays[ih["weight"]["q"]] = arrays[ih["weight"]["q"]][:, :4].copy()
    write_lnn(tmp_path / "shape.lnn", manifest, arrays)
    with pytest.raises(ModelFormatError, match="shape"):
        rt.load(tmp_path / "shape.lnn")


def test_recurrent_int8_of_a_float64_model():
    """The int8 step runs in float32 whatever the model's dtype: biases included (the GRU's
    bias_hh goes straight to the compiled step)."""
    L.set_seed(0)
    model = nn.Sequential([nn.GRU(16, dtype="float64"), nn.Dense(3, dtype="float64")])
    model.build((None, 7, 5))
    rng = np.random.default_rng(4)
    gru = model.layers[0]
    for b in (gru.bias, gru.bias_hh):
        b.data = rng.standard_normal(b.shape)
    x = _series(20).astype(np.float64)
    qm = quantize(model.eval(), x)
    assert _rel(qm.predict(x), model(x).data) < 0.03
