"""Keras models through tf2onnx, imported and checked against ONNX Runtime on the same file.

The files in tests/data/keras are written by tests/data/make_keras_onnx.py (TensorFlow 2.21,
Keras 3.15, tf2onnx 1.17, opset 17; it runs where TensorFlow installs) and committed, so
these tests need only ONNX Runtime. What tf2onnx writes and the importer has to read:
channels-last images transposed for each Conv (a ``Permute`` layer at the input, another
before a Flatten), MatMul + Add for Dense, BatchNorm as Mul + Add, the time-major LSTM with
its zero states built from Shape subgraphs, the last step taken by a ``Slice``, Keras's
negative-id handling of an embedding as integer ops before the Gather, and ``Bidirectional``
as the two directions sliced out of one bidirectional LSTM and concatenated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import lepton_nn as L  # noqa: E402
import lepton_nn.onnx as lo  # noqa: E402
from lepton_nn import nn, runtime  # noqa: E402
from lepton_nn.autograd import Tensor, gradcheck  # noqa: E402
from lepton_nn.errors import ModelFormatError, ShapeError  # noqa: E402

DATA = Path(__file__).parent / "data" / "keras"
#: file -> (per-sample input shape, the layers it converts to)
MODELS = {
    "mlp": ((8,), ["Dense", "Dense", "Dense"]),
    "cnn": ((12, 12, 3), ["Permute", "Conv2D", "BatchNorm", "Activation", "Conv2D", "Add",
                          "MaxPool2D", "Conv2D", "GlobalAvgPool2D", "Dense"]),
    "cnn_flatten": ((10, 10, 2), ["Permute", "Conv2D", "Conv2D", "MaxPool2D", "Permute",
                                  "Flatten", "Dense"]),
    "lstm": ((6, 5), ["LSTM", "LSTM", "Dense"]),
    "text": ((9,), ["Embedding", "LSTM", "Dense"]),
    "bilstm": ((7, 4), ["LSTM", "LSTM", "Dense"]),
}  # fmt: skip


def _x(name: str, n: int) -> np.ndarray:
    shape = MODELS[name][0]
    rng = np.random.default_rng(n)
    if name == "text":
        return rng.integers(0, 30, (n, *shape)).astype(np.int32)
    return rng.standard_normal((n, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", list(MODELS))
def test_keras_model_matches_onnxruntime(name, tmp_path):
    path = DATA / f"{name}.onnx"
    _, report = lo.onnx_to_manifest(str(path))[::2]
    assert report["layers"] == MODELS[name][1]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    served = runtime.load(str(path))
    net = lo.load(str(path))
    for n in (1, 64):
        x = _x(name, n)
        ref = sess.run(None, {"x": x})[0]
        ours = served.predict(x)
        assert ours.shape == ref.shape
        scale = max(1.0, float(np.abs(ref).max()))  # (the CNN's logits reach ~8)
        assert np.abs(ours - ref).max() <= 1e-5 * scale
        assert (ours.argmax(1) == ref.argmax(1)).all()
        assert np.abs(np.asarray(net(x).data) - ref).max() <= 1e-5 * scale
    # the converted network saves, serves and exports again like any other
    L.save(net, tmp_path / "m.lnn")
    x = _x(name, 16)
    np.testing.assert_allclose(runtime.load(tmp_path / "m.lnn").predict(x), served.predict(x),
                               atol=1e-6)  # fmt: skip
    lo.export(net, tmp_path / "back.onnx")
    back = ort.InferenceSession(str(tmp_path / "back.onnx"), providers=["CPUExecutionProvider"])
    got = back.run(None, {back.get_inputs()[0].name: x.astype(np.int64) if name == "text" else x})
    np.testing.assert_allclose(got[0], served.predict(x), atol=1e-5 * scale)


def test_negative_ids_as_keras_in_the_runtime_refused_by_the_layer():
    """Keras takes id -k from the end of the table (the file's integer ops, checked to leave
    every valid id unchanged); the runtime's Embedding does the same, the trainable
    Embedding refuses such ids."""
    path = DATA / "text.onnx"
    x = np.random.default_rng(5).integers(-30, 30, (40, 9)).astype(np.int32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    assert np.abs(runtime.load(str(path)).predict(x) - ref).max() <= 1e-5
    with pytest.raises(ValueError, match="ids must lie in"):
        lo.load(str(path))(x)


# ------------------------------------------------------------------ the Permute layer


def test_permute_layer_gradient_and_shapes():
    layer = nn.Permute((2, 3, 1)).astype("float64")
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    y = layer(x)
    np.testing.assert_array_equal(y.data, x.transpose(0, 2, 3, 1))
    assert gradcheck(lambda t: layer(t), Tensor(x, requires_grad=True))
    with pytest.raises(ShapeError, match="need 4-D"):
        layer(np.zeros((2, 3)))
    for bad in [(1, 1, 2), (0, 1), "12", (1, 2.0)]:
        with pytest.raises(ValueError):
            nn.Permute(bad)


def test_permute_layer_in_the_runtime_and_export(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = nn.Sequential([nn.Permute((3, 1, 2)), nn.Conv2D(4, 3, activation="relu"),
                           nn.Permute((2, 3, 1)), nn.Flatten(), nn.Dense(3)])  # fmt: skip
    x = np.random.default_rng(1).standard_normal((5, 7, 6, 2)).astype(np.float32)
    want = np.asarray(model(x).data)
    L.save(model, tmp_path / "p.lnn")
    np.testing.assert_allclose(runtime.load(tmp_path / "p.lnn").predict(x), want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(L.load(tmp_path / "p.lnn")(x).data), want, atol=1e-6)
    proto = lo.export(model, tmp_path / "p.onnx")
    onnx.checker.check_model(proto, full_check=True)
    got = ort.InferenceSession(str(tmp_path / "p.onnx")).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    again = lo.load(str(tmp_path / "p.onnx"))  # and imported: Transposes become Permutes
    np.testing.assert_allclose(np.asarray(again(x).data), want, atol=1e-5)


def test_a_bad_permute_in_a_file_is_refused(tmp_path):
    from lepton_nn.runtime.format import read_lnn

    model = nn.Sequential([nn.Permute((2, 1)), nn.Flatten(), nn.Dense(2)])
    model.build((None, 3, 4))
    L.save(model, tmp_path / "p.lnn")
    manifest, arrays = read_lnn(tmp_path / "p.lnn")
    manifest["model"]["architecture"]["config"]["layers"][0]["config"]["dims"] = [1, 1]
    with pytest.raises(ModelFormatError, match="permutation"):
        runtime.from_manifest(manifest, arrays)


@pytest.mark.parametrize("perm", [(0, 1, 2, 3), (0, 3, 1, 2), (0, 2, 3, 1), (0, 1, 3, 2),
                                  (0, 3, 2, 1), (0, 2, 1, 3)])  # fmt: skip
@pytest.mark.parametrize("head", ["conv", "flatten"])
def test_transposed_images_become_permute_layers(perm, head):
    """Any reordering of the axes after the batch before a Conv (which needs (N, C, H, W))
    or a Flatten (whose feature order it fixes): a Permute layer, checked against ONNX
    Runtime."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(sum(perm))
    dims = (4, 5, 3)  # per sample, before the Transpose
    after = [dims[p - 1] for p in perm[1:]]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=list(perm)),
             helper.make_node("Relu", ["t"], ["r"])]  # fmt: skip
    inits = []
    if head == "conv":
        w = rng.standard_normal((2, after[0], 2, 2)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, "w"))
        nodes.append(helper.make_node("Conv", ["r", "w"], ["c"]))
        width = 2 * (after[1] - 1) * (after[2] - 1)
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["c"]))
        width = int(np.prod(after))
    g = rng.standard_normal((width, 3)).astype(np.float32)
    inits.append(numpy_helper.from_array(g, "g"))
    nodes += [helper.make_node("Flatten", ["c"], ["f"]),
              helper.make_node("Gemm", ["f", "g"], ["y"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *dims])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((6, *dims)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    manifest, arrays, report = lo.onnx_to_manifest(model)
    np.testing.assert_allclose(runtime.from_manifest(manifest, arrays).predict(x), ref,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(np.asarray(lo.load(model)(x).data), ref, atol=1e-5)
    if head == "conv" and perm != (0, 1, 2, 3):
        assert report["layers"][:2] == ["Activation", "Permute"]


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn_flatten"])
def test_quantized_keras_models_run_on_the_int8_kernels(tmp_path, name, fmt):
    """The Keras files quantized by ONNX Runtime (reduce_range: its fused kernels are exact,
    see test_onnx_quantized): every MatMul (QLinearMatMul in QOperator files) and Conv on
    the int8 kernels, through the Permute, MaxPool and Flatten between them, and the result
    ONNX Runtime's within one step of the output grid (here: to the bit)."""
    import warnings

    from onnxruntime import quantization

    shape = MODELS[name][0]

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"x": rng.standard_normal((8, *shape)).astype(np.float32)}
                            for _ in range(4)])  # fmt: skip

        def get_next(self):
            return next(self.it, None)

    q = tmp_path / "q.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_static(
            str(DATA / f"{name}.onnx"), str(q), Reader(), per_channel=True, reduce_range=True,
            quant_format=getattr(quantization.QuantFormat, fmt),
        )  # fmt: skip
    manifest, _, report = lo.onnx_to_manifest(str(q))
    linear = sum(c in ("Dense", "Conv2D") for c in MODELS[name][1])
    assert manifest["kind"] == "compressed" and report["int8_layers"] == linear
    x = _x(name, 100)
    ours = runtime.load(str(q)).predict(x)
    so = ort.SessionOptions()  # QDQ: the ONNX semantics (optimized, a softmax on a 1/255
    if fmt == "QDQ":  # grid is ONNX Runtime's QLinearSoftmax, one step off often)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0]
    import onnx

    m = onnx.load(str(q))
    last = next(n for n in m.graph.node if n.output[0] == m.graph.output[0].name)
    step = float(next(onnx.numpy_helper.to_array(t) for t in m.graph.initializer
                      if t.name == last.input[1]))  # fmt: skip
    assert np.abs(ours - ref).max() <= step * 1.001
    assert (np.abs(ours - ref) > step / 2).mean() < 0.02


def test_integer_ops_off_token_ids_are_listed_as_unsupported():
    from onnx import TensorProto, helper, numpy_helper

    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    nodes = [helper.make_node("Greater", ["x", "zero"], ["pos"], name="g"),
             helper.make_node("Where", ["pos", "x", "zero"], ["y"], name="w")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [zero],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelFormatError, match=r"(?s)Greater x1: g.*Where x1: w"):
        lo.onnx_to_manifest(model)
