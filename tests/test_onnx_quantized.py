"""ONNX Runtime-quantized files (QDQ from ``quantize_static``, ``quantize_dynamic``'s
DynamicQuantizeLinear + MatMulInteger, QLinearMatMul) imported and checked against ONNX
Runtime on the same file, and the quantize-dequantize layers they need (CNNs and the
QOperator format: test_onnx_qconv).

ONNX Runtime's x64 int8 kernels without VNNI saturate int16 pair sums for u8 x s8 products
(what its quantizer's ``reduce_range=True`` exists to avoid), so a file quantized with full
8-bit weights is checked against the ONNX semantics themselves (ONNX Runtime with graph
optimizations off for QDQ, ``onnx.reference`` for MatMulInteger), and a ``reduce_range`` file
against fully optimized ONNX Runtime (its fused int8 kernels)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
quantization = pytest.importorskip("onnxruntime.quantization")

import lepton_nn as L  # noqa: E402
import lepton_nn.onnx as lo  # noqa: E402
from lepton_nn import runtime  # noqa: E402
from lepton_nn.autograd import Tensor  # noqa: E402
from lepton_nn.compress.qdq import QuantizeDequantize, QuantizeDequantizeRows  # noqa: E402
from lepton_nn.errors import ModelFormatError  # noqa: E402
from lepton_nn.runtime.format import read_lnn  # noqa: E402

F = 8


def _mlp(path, softmax: bool) -> None:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(F, 16), torch.nn.ReLU(), torch.nn.Linear(16, 12), torch.nn.Tanh(),
              torch.nn.Linear(12, 3)]  # fmt: skip
    net = torch.nn.Sequential(*layers, *([torch.nn.Softmax(-1)] if softmax else [])).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(2, F),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}},
                          opset_version=17)  # fmt: skip


class _Reader(quantization.CalibrationDataReader):
    def __init__(self):
        rng = np.random.default_rng(0)
        self.it = iter([{"x": rng.standard_normal((16, F)).astype(np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self.it, None)


def _session(path, optimized=True):
    so = ort.SessionOptions()
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _output_scale(path) -> float:
    m = onnx.load(str(path))
    return float(onnx.numpy_helper.to_array(next(t for t in m.graph.initializer
                                                 if t.name == "y_scale")))  # fmt: skip


def _x(n=500, seed=1):
    return np.random.default_rng(seed).standard_normal((n, F)).astype(np.float32)


QDQ = {  # name -> (activation type, per_channel, reduce_range)
    "s8": ("QInt8", False, False),
    "u8-per-channel": ("QUInt8", True, False),
    "s8-reduce-range": ("QInt8", False, True),
    "u8-reduce-range": ("QUInt8", True, True),
}


@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
@pytest.mark.parametrize("name", list(QDQ))
def test_qdq_mlp_matches_onnxruntime(tmp_path, name, softmax):
    act, per_channel, reduce_range = QDQ[name]
    _mlp(tmp_path / "f.onnx", softmax)
    q = tmp_path / "q.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_static(
            str(tmp_path / "f.onnx"), str(q), _Reader(), quant_format=quantization.QuantFormat.QDQ,
            activation_type=getattr(quantization.QuantType, act),
            weight_type=quantization.QuantType.QInt8, per_channel=per_channel,
            reduce_range=reduce_range,
        )  # fmt: skip
    x = _x()
    step = _output_scale(q)
    manifest, _, report = lo.onnx_to_manifest(str(q))
    assert manifest["kind"] == "compressed" and report["int8_layers"] == 3  # the int8 kernels
    ours = runtime.load(str(q)).predict(x)
    net = lo.load(str(q))
    assert "QuantizeDequantize" in [type(m).__name__ for m in net.modules()]
    assert np.abs(np.asarray(net(x).data) - ours).max() <= step * 1.001
    oracles = [(_session(q, optimized=False), False)]
    if reduce_range:  # ONNX Runtime's fused int8 kernels are exact on these
        oracles.append((_session(q), True))
    for sess, fused in oracles:
        ref = sess.run(None, {"x": x})[0]
        diff = np.abs(ours - ref)
        assert diff.max() <= step * 1.001  # one step of the output grid at most
        if not softmax:  # logits: the same grid values, hence the same labels
            assert (ours.argmax(1) == ref.argmax(1)).all()
        if not (softmax and fused):  # (its QLinearSoftmax rounds otherwise: one step often)
            assert (diff > step / 2).mean() < 0.01  # and almost always none


@pytest.mark.parametrize("weights", ["reduce-range", "u8", "s8"])
def test_dynamic_mlp_matches_onnxruntime_per_row(tmp_path, weights):
    _mlp(tmp_path / "f.onnx", softmax=False)
    q = tmp_path / "q.onnx"
    kw = {"reduce-range": {"reduce_range": True},
          "u8": {"weight_type": quantization.QuantType.QUInt8}, "s8": {}}[weights]  # fmt: skip
    quantization.quantize_dynamic(str(tmp_path / "f.onnx"), str(q), **kw)
    x = _x(60)
    ours = runtime.load(str(q)).predict(x)
    if weights == "s8":  # the ONNX semantics (ONNX Runtime's kernel saturates, see the top)
        from onnx.reference import ReferenceEvaluator

        ref_eval = ReferenceEvaluator(str(q))
        run = lambda row: ref_eval.run(None, {"x": row})[0]  # noqa: E731
    else:
        sess = _session(q)
        run = lambda row: sess.run(None, {"x": row})[0]  # noqa: E731
    # ONNX Runtime takes one grid for the whole batch, lepton_nn one per row: same at batch 1
    ref = np.concatenate([run(x[i : i + 1]) for i in range(len(x))])
    assert np.abs(ours - ref).max() < 1e-5
    assert (ours.argmax(1) == ref.argmax(1)).all()
    net = lo.load(str(q))
    assert np.abs(np.asarray(net(x).data) - ours).max() < 1e-5


def _qlinear_matmul_model(a_zp, b_zp, y_zp, b_max=127):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    b = rng.integers(-b_max, b_max + 1, (F, 5)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "a_s"),
        numpy_helper.from_array(np.array(a_zp, np.uint8), "a_zp"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array(0.01, np.float32), "b_s"),
        numpy_helper.from_array(np.array(b_zp, np.int8), "b_zp"),
        numpy_helper.from_array(np.array(0.05, np.float32), "y_s"),
        numpy_helper.from_array(np.array(y_zp, np.uint8), "y_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_s", "a_zp"], ["xq"]),
        helper.make_node(
            "QLinearMatMul", ["xq", "a_s", "a_zp", "b", "b_s", "b_zp", "y_s", "y_zp"], ["yq"]
        ),  # fmt: skip
        helper.make_node("DequantizeLinear", ["yq", "y_s", "y_zp"], ["y"]),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["n", F])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
                          inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("oracle", ["onnxruntime", "onnx.reference"])
@pytest.mark.parametrize("zps", [(128, 0, 128), (100, 3, 0)])
def test_qlinear_matmul_matches_onnxruntime(zps, oracle):
    from onnx.reference import ReferenceEvaluator

    # 7-bit weights for ONNX Runtime's u8 x s8 kernel (see the top), 8-bit for the reference
    model = _qlinear_matmul_model(*zps, b_max=63 if oracle == "onnxruntime" else 127)
    onnx.checker.check_model(model, full_check=True)
    x = _x(300) * 2
    if oracle == "onnxruntime":
        ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    else:
        ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    ours = runtime.from_manifest(*lo.onnx_to_manifest(model)[:2]).predict(x)
    # float layers on the dequantized B vs the int8 kernel: a rounding edge at most
    assert np.abs(np.asarray(lo.load(model)(x).data) - ours).max() <= 0.05 * 1.001
    assert np.abs(ours - ref).max() <= 0.05 * 1.001
    assert (np.abs(ours - ref) > 0.025).mean() < 0.01
    if zps[2] == 0:  # a zero point at the grid's low end: a ReLU folded in
        assert ours.min() >= 0


def test_quantized_integers_read_elsewhere_are_refused():
    from onnx import helper

    model = _qlinear_matmul_model(128, 0, 128)
    g = model.graph
    g.node.insert(1, helper.make_node("Identity", ["xq"], ["xq2"]))
    g.node[2].input[0] = "xq2"
    with pytest.raises(ModelFormatError, match="QuantizeLinear"):
        lo.onnx_to_manifest(model)


# ------------------------------------------------------------------ the layers themselves


def test_quantize_dequantize_layer_rounds_to_the_grid_with_a_straight_through_gradient():
    layer = QuantizeDequantize(0.1, zero_point=-128, qmin=-128, qmax=127)
    x = np.array([[-0.3, 0.04, 0.05, 0.15, 0.25, 30.0]], np.float32)
    t = Tensor(x, requires_grad=True)
    y = layer(t)
    # a zero point at the low end: a ReLU; ties to even (0.5 -> 0, 1.5 -> 2, 2.5 -> 2); 25.5 max
    np.testing.assert_allclose(y.data, [[0, 0, 0, 0.2, 0.2, 25.5]], atol=1e-6)
    y.sum().backward()
    np.testing.assert_array_equal(t.grad, [[0, 1, 1, 1, 1, 0]])


def test_quantize_dequantize_rows_uses_each_rows_range():
    x = np.array([[-1.0, 0.5, 3.0], [0.0, 0.0, 0.0], [0.2, 0.4, 0.6]], np.float32)
    y = np.asarray(QuantizeDequantizeRows()(x).data)
    for row, got in zip(x, y):
        lo_, hi = min(0, row.min()), max(0, row.max())
        s = (hi - lo_) / 255 or 1.0
        z = np.clip(np.rint(-lo_ / s), 0, 255)
        np.testing.assert_allclose(got, (np.clip(np.rint(row / s) + z, 0, 255) - z) * s, atol=1e-6)


@pytest.mark.parametrize("bad", [{"scale": 0.0}, {"scale": 1.0, "zero_point": 300},
                                 {"scale": 1.0, "qmin": 5, "qmax": 2}])  # fmt: skip
def test_bad_grids_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        QuantizeDequantize(**bad)
    net = L.nn.Sequential([L.nn.Dense(3), QuantizeDequantize(0.5)])
    net.build((None, 4))
    path = tmp_path / "m.lnn"
    L.save(net, path)
    manifest, arrays = read_lnn(path)
    manifest["model"]["architecture"]["config"]["layers"][1]["config"].update(bad)
    with pytest.raises(ModelFormatError):
        runtime.from_manifest(manifest, arrays)


def test_imported_qdq_network_saves_and_serves(tmp_path):
    _mlp(tmp_path / "f.onnx", softmax=False)
    q = tmp_path / "q.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_static(str(tmp_path / "f.onnx"), str(q), _Reader(),
                                     quant_format=quantization.QuantFormat.QDQ)  # fmt: skip
    net = lo.load(str(q))
    L.save(net, tmp_path / "m.lnn")
    x = _x(50)
    served = runtime.load(str(tmp_path / "m.lnn")).predict(x)  # float layers
    int8 = runtime.load(str(q)).predict(x)  # the int8 kernels
    assert np.abs(served - int8).max() <= _output_scale(q) * 1.001
    again = L.load(tmp_path / "m.lnn")
    assert np.abs(np.asarray(again(x).data) - served).max() <= _output_scale(q) * 1.001


def test_convert_cli_checks_a_qdq_file_against_the_onnx_semantics(tmp_path):
    from lepton_nn.onnx import convert

    _mlp(tmp_path / "f.onnx", softmax=False)
    q = tmp_path / "q.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_static(str(tmp_path / "f.onnx"), str(q), _Reader(),
                                     quant_format=quantization.QuantFormat.QDQ)  # fmt: skip
    r = convert(q, tmp_path / "q.lnn")
    assert "optimizations off" in r["oracle"] and r["parity"] <= _output_scale(q) * 1.001
    assert r["ops"]["QuantizeLinear"] == 5  # the input and each Gemm's output
    served = runtime.load(str(tmp_path / "q.lnn"))
    assert served.kind == "compressed"  # int8 weights, the int8 kernels


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_round_trip_onnx_quantized_to_lepton_nn_to_onnx(tmp_path, kind):
    """A quantized file -> lepton_nn layers -> ONNX again: ONNX Runtime on the export gives
    what the layers give (rows quantized one by one in both)."""
    _mlp(tmp_path / "f.onnx", softmax=False)
    q = tmp_path / "q.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "static":
            quantization.quantize_static(str(tmp_path / "f.onnx"), str(q), _Reader(),
                                         quant_format=quantization.QuantFormat.QDQ)  # fmt: skip
        else:
            quantization.quantize_dynamic(str(tmp_path / "f.onnx"), str(q), reduce_range=True)
    net = lo.load(str(q))
    lo.export(net, tmp_path / "back.onnx")
    onnx.checker.check_model(str(tmp_path / "back.onnx"), full_check=True)
    x = _x(200)
    sess = _session(tmp_path / "back.onnx", optimized=False)
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    ours = np.asarray(net(x).data)
    tol = _output_scale(q) * 1.001 if kind == "static" else 1e-5
    assert np.abs(ours - ref).max() <= tol
