"""ONNX Runtime-quantized CNNs and MLPs, in both of its formats (QDQ and QOperator), imported
onto the int8 kernels and checked against ONNX Runtime on the same file.

The tolerance is one step of the output grid (``y_scale``): both sides give values on that
grid, and a value that falls on a rounding edge of an intermediate grid may round the other
way (float32 sums in another order, ONNX Runtime's fixed-point multipliers and lookup
tables); anything more would be a different network. Files with uint8 activations and full
8-bit weights are compared with the ONNX semantics (ONNX Runtime with graph optimizations off)
for QDQ only: ONNX Runtime's x64 u8 x s8 kernels saturate int16 pair sums there (see
test_onnx_quantized), which ``reduce_range`` avoids (its graph optimizations turn int8 QDQ
activations into uint8, so int8 activations avoid it in QOperator files only)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
quantization = pytest.importorskip("onnxruntime.quantization")

import lepton_nn.onnx as lo  # noqa: E402
from lepton_nn import runtime  # noqa: E402
from lepton_nn.errors import ModelFormatError  # noqa: E402

F = torch.nn.functional
IMAGE = (3, 12, 12)


class _Residual(torch.nn.Module):
    """Conv + BatchNorm + ReLU, a residual block, max pooling, a strided conv, global
    average pooling, a linear layer: logits."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = torch.nn.Conv2d(8, 12, 3, stride=2)
        self.fc = torch.nn.Linear(12, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.c1(x)))
        y = F.max_pool2d(torch.relu(y + self.c2(y)), 2)
        return self.fc(F.adaptive_avg_pool2d(torch.relu(self.c3(y)), 1).flatten(1))


class _Gated(_Residual):
    """Adds a gate (leaky ReLU times sigmoid), average pooling, a concatenation and a softmax:
    every operator of ONNX Runtime's QOperator format for CNNs."""

    def __init__(self):
        super().__init__()
        self.c3, self.c4 = torch.nn.Conv2d(16, 12, 3, stride=2), torch.nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = torch.relu(self.bn(self.c1(x)))
        y = torch.relu(y + self.c2(y))
        gate = F.leaky_relu(self.c4(y), 0.1) * torch.sigmoid(y)
        y = torch.cat([F.max_pool2d(y, 2), F.avg_pool2d(gate, 2)], 1)
        y = F.adaptive_avg_pool2d(torch.relu(self.c3(y)), 1).flatten(1)
        return torch.softmax(self.fc(y), -1)


class _Depthwise(torch.nn.Module):
    """A depthwise conv (no int8 kernel for groups yet: float on the dequantized weight),
    asymmetric pads and a stride, then Flatten -> Linear (int8 through the Flatten)."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=(0, 1), groups=8, stride=2)
        self.fc = torch.nn.Linear(8 * 5 * 6, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.dw(torch.relu(self.c1(x)))).flatten(1))


class _MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        lin = torch.nn.Linear
        self.a, self.b, self.c = lin(8, 16), lin(16, 12), lin(12, 3)

    def forward(self, x):
        return torch.softmax(self.c(torch.sigmoid(self.b(F.leaky_relu(self.a(x), 0.1)))), -1)


#: name -> (network, input shape, its int8 layers (Conv + Gemm, but for grouped convs))
MODELS = {"residual-cnn": (_Residual, IMAGE, 4), "gated-cnn": (_Gated, IMAGE, 5),
          "mlp": (_MLP, (8,), 3), "depthwise-cnn": (_Depthwise, IMAGE, 2)}  # fmt: skip


def _quantized(tmp_path, model: str, fmt: str, act: str, per_channel: bool, reduce_range: bool):
    net_cls, shape, _ = MODELS[model]
    torch.manual_seed(0)
    net = net_cls().eval()
    src, dst = tmp_path / "f.onnx", tmp_path / f"{model}-{fmt}.onnx"

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"x": rng.standard_normal((8, *shape)).astype(np.float32)}
                            for _ in range(4)])  # fmt: skip

        def get_next(self):
            return next(self.it, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(2, *shape),), str(src), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}},
                          opset_version=17)  # fmt: skip
        quantization.quantize_static(
            str(src), str(dst), Reader(), quant_format=getattr(quantization.QuantFormat, fmt),
            activation_type=getattr(quantization.QuantType, act), per_channel=per_channel,
            reduce_range=reduce_range,
        )  # fmt: skip
    return dst, np.random.default_rng(1).standard_normal((200, *shape)).astype(np.float32)


def _session(path, optimized: bool):
    so = ort.SessionOptions()
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _step(path) -> float:
    """The output grid's scale (the DequantizeLinear giving the graph output)."""
    m = onnx.load(str(path))
    last = next(n for n in m.graph.node if n.output[0] == m.graph.output[0].name)
    return float(next(onnx.numpy_helper.to_array(t) for t in m.graph.initializer
                      if t.name == last.input[1]))  # fmt: skip


def _check(ours: np.ndarray, ref: np.ndarray, step: float, rare: bool = True) -> None:
    diff = np.abs(ours - ref)
    assert diff.max() <= step * 1.001
    if rare:
        assert (diff > step / 2).mean() < 0.02  # and almost always none
    top = np.sort(ref, 1)
    clear = top[:, -1] - top[:, -2] > step * 1.5  # (softmax grids tie often on such nets)
    assert clear.mean() > 0.5
    assert (ours.argmax(1) == ref.argmax(1))[clear].all()


QDQ = {  # variant -> (activation type, per_channel, reduce_range, optimized ONNX Runtime too)
    "u8": ("QUInt8", False, False, False),
    "u8-per-channel-reduce-range": ("QUInt8", True, True, True),
    "s8": ("QInt8", False, False, False),  # (optimized, ONNX Runtime turns s8 into u8: as u8)
    "s8-per-channel": ("QInt8", True, False, False),
}


@pytest.mark.parametrize("variant", list(QDQ))
@pytest.mark.parametrize("model", ["residual-cnn", "gated-cnn"])
def test_qdq_cnn_runs_on_the_int8_conv_kernels_as_onnxruntime(tmp_path, model, variant):
    act, per_channel, reduce_range, optimized = QDQ[variant]
    path, x = _quantized(tmp_path, model, "QDQ", act, per_channel, reduce_range)
    manifest, _, report = lo.onnx_to_manifest(str(path))
    assert manifest["kind"] == "compressed" and report["int8_layers"] == MODELS[model][2]
    entries = manifest["model"]["compression"]["layers"]
    assert sum(len(e["weight"]["shape"]) == 4 for e in entries) == MODELS[model][2] - 1
    ours = runtime.load(str(path)).predict(x)
    step = _step(path)
    for opt in [False] + [True] * optimized:
        # (optimized, a softmax on a 1/255 grid is ONNX Runtime's QLinearSoftmax, whose table
        # rounds otherwise: one step often)
        rare = not (opt and model == "gated-cnn")
        _check(ours, _session(path, opt).run(None, {"x": x})[0], step, rare)
    net = lo.load(str(path))  # float layers and quantize-dequantize layers: trainable
    assert np.abs(np.asarray(net(x).data) - ours).max() <= step * 1.001


QOPERATOR = {"s8-per-channel": ("QInt8", True, False), "u8-reduce-range": ("QUInt8", False, True)}


@pytest.mark.parametrize("variant", list(QOPERATOR))
@pytest.mark.parametrize("model", ["mlp", "gated-cnn"])
def test_qoperator_files_match_onnxruntime(tmp_path, model, variant):
    path, x = _quantized(tmp_path, model, "QOperator", *QOPERATOR[variant])
    manifest, _, report = lo.onnx_to_manifest(str(path))
    source = report["ops"]  # the file's own operators
    assert source["com.microsoft.QGemm"] == (3 if model == "mlp" else 1)
    if model == "gated-cnn":
        for op in ("QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
                   "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
                   "QLinearSoftmax"):  # fmt: skip
            assert source[f"com.microsoft.{op}"] == 1, op
        assert source["QLinearConv"] == 4
    assert manifest["kind"] == "compressed" and report["int8_layers"] == MODELS[model][2]
    ours = runtime.load(str(path)).predict(x)
    ref = _session(path, True).run(None, {"x": x})[0]
    _check(ours, ref, _step(path))
    net = lo.load(str(path))
    assert np.abs(np.asarray(net(x).data) - ours).max() <= _step(path) * 1.001


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_grouped_conv_and_flatten_before_an_int8_dense(tmp_path, fmt):
    path, x = _quantized(tmp_path, "depthwise-cnn", fmt, "QUInt8", True, True)
    manifest, _, report = lo.onnx_to_manifest(str(path))
    assert report["int8_layers"] == 2  # the first conv and the Dense after the Flatten
    # the grids left: after the first conv (the depthwise conv's input) and the output;
    # the one after the depthwise conv is the int8 Dense's, through the Flatten
    assert report["layers"].count("QuantizeDequantize") == 2
    ours = runtime.load(str(path)).predict(x)
    for opt in (False, True):
        if fmt == "QDQ" or opt:  # (QOperator: ONNX Runtime's contrib kernels either way)
            _check(ours, _session(path, opt).run(None, {"x": x})[0], _step(path))


def test_other_onnxruntime_operators_are_listed_as_unsupported(tmp_path):
    path, _ = _quantized(tmp_path, "mlp", "QOperator", "QInt8", False, False)
    m = onnx.load(str(path))
    node = next(n for n in m.graph.node if n.op_type == "QLinearLeakyRelu")
    node.op_type, node.name = "QLinearReduceMean", "mean_1"
    del node.attribute[:]
    with pytest.raises(ModelFormatError, match=r"com\.microsoft\.QLinearReduceMean x1: mean_1"):
        lo.onnx_to_manifest(m)
    onnx.save(m, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelFormatError, match="QLinearReduceMean"):
        runtime.load(str(tmp_path / "bad.onnx"))


def test_a_local_function_in_a_built_in_domain_is_refused(tmp_path):
    from onnx import helper

    path, _ = _quantized(tmp_path, "mlp", "QOperator", "QInt8", False, False)
    m = onnx.load(str(path))
    fn = helper.make_function("com.microsoft", "QLinearSigmoid", ["x"], ["y"],
                              [helper.make_node("Identity", ["x"], ["y"])],
                              [helper.make_opsetid("", 17)])  # fmt: skip
    m.functions.append(fn)
    with pytest.raises(ModelFormatError, match="local function"):
        lo.onnx_to_manifest(m)


def test_convert_reports_a_qoperator_files_own_operators(tmp_path):
    path, _ = _quantized(tmp_path, "mlp", "QOperator", "QInt8", True, False)
    r = lo.convert(path, tmp_path / "m.lnn")
    assert r["ops"]["com.microsoft.QGemm"] == 3 and "Gemm" not in r["ops"]
    assert r["parity"] <= _step(path) * 1.001
    assert runtime.load(str(tmp_path / "m.lnn")).kind == "compressed"


@pytest.mark.parametrize("op", ["QLinearConv", "QGemm", "QLinearConcat"])
def test_a_qlinear_node_of_the_wrong_form_is_a_model_format_error(tmp_path, op):
    path, _ = _quantized(tmp_path, "gated-cnn", "QOperator", "QInt8", False, False)
    m = onnx.load(str(path))
    node = next(n for n in m.graph.node if n.op_type == op)
    del node.input[4 if op == "QLinearConcat" else 3 :]
    with pytest.raises(ModelFormatError, match=f"{op}.*inputs"):
        lo.onnx_to_manifest(m)
