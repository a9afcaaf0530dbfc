"""ONNX export: lepton_nn networks written as ONNX pass the full checker, and ONNX Runtime
on the file gives what lepton_nn's runtime gives (within 1e-5); round trips PyTorch ->
ONNX -> lepton_nn -> ONNX -> ONNX Runtime keep the numbers."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import lepton_nn as L  # noqa: E402
import lepton_nn.onnx as lo  # noqa: E402
from lepton_nn import nn, runtime  # noqa: E402

TOL = 1e-5


def _build(layers, shape):
    L.random.set_seed(0) if hasattr(L, "random") else None
    model = nn.Sequential(layers)
    model.build((None, *shape))
    rng = np.random.default_rng(0)
    for p in model.parameters():  # nonzero biases and statistics: every term is checked
        p.data[...] = rng.standard_normal(p.data.shape).astype(p.data.dtype) * 0.5
    for _, m in model._named_modules():
        if isinstance(m, nn.BatchNorm):
            m.running_mean = rng.standard_normal(m.running_mean.shape).astype(np.float32)
            m.running_var = rng.uniform(0.5, 2, m.running_var.shape).astype(np.float32)
    model.eval()
    return model


def _cases():
    return {
        "mlp": ([nn.Dense(16, "relu"), nn.Dropout(0.3), nn.Dense(8, "gelu"),
                 nn.Dense(4, "softmax")], (10,)),
        "mlp_norms": ([nn.Dense(12), nn.BatchNorm(), nn.Tanh(), nn.LayerNorm(),
                       nn.Dense(3, "log_softmax")], (5,)),
        "cnn": ([nn.Conv2D(4, 3, padding="same", activation="relu"), nn.BatchNorm(),
                 nn.MaxPool2D(2), nn.Conv2D(5, (3, 2), stride=(2, 1), padding=1, dilation=1),
                 nn.Sigmoid(), nn.AvgPool2D(3, stride=1, padding=1, count_include_pad=False),
                 nn.Flatten(), nn.Dense(3)], (2, 9, 8)),
        "cnn_gap": ([nn.Conv2D(6, 3, dilation=2, stride=2, padding="same"), nn.ReLU(),
                     nn.GlobalAvgPool2D(), nn.Dense(2, "sigmoid")], (3, 11, 11)),
        "lstm": ([nn.LSTM(6, return_sequences=True), nn.LSTM(5), nn.Dense(2)], (7, 3)),
        "bigru_seq": ([nn.GRU(4, return_sequences=True, bidirectional=True), nn.Flatten(),
                       nn.Dense(3)], (5, 3)),
        "birnn": ([nn.SimpleRNN(4, bidirectional=True), nn.Dense(2)], (6, 2)),
        "embedding_gru": ([nn.Embedding(30, 6), nn.GRU(5, bidirectional=True), nn.Dense(3)],
                          (9,)),
    }  # fmt: skip


CASES = _cases()


def _input(shape, n, name, seed=3):
    rng = np.random.default_rng(seed)
    if name.startswith("embedding"):
        return rng.integers(0, 30, (n, *shape))
    return rng.standard_normal((n, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", list(CASES))
def test_export_matches_runtime_in_onnxruntime(tmp_path, name):
    layers, shape = CASES[name]
    model = _build(layers, shape)
    L.save(model, tmp_path / "m.lnn")
    served = runtime.load(tmp_path / "m.lnn")
    for source in (model, tmp_path / "m.lnn"):  # a network in memory, or its file
        proto = lo.export(source, tmp_path / "m.onnx")
        onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")), full_check=True)
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
        session = ort.InferenceSession(str(tmp_path / "m.onnx"))
        for n in (1, 6):
            x = _input(shape, n, name)
            ref = served.predict(x)
            got = session.run(None, {"input": x})[0]
            np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)
    # and back: the exported file imports to the same network
    back = runtime.load(tmp_path / "m.onnx")
    x = _input(shape, 4, name)
    np.testing.assert_allclose(back.predict(x), served.predict(x), rtol=0, atol=TOL)


def test_gelu_as_one_node_from_opset_20(tmp_path):
    model = _build([nn.Dense(8, "gelu"), nn.Dense(2)], (4,))
    proto = lo.export(model, tmp_path / "g.onnx", opset=20)
    assert "Gelu" in {n.op_type for n in proto.graph.node}
    x = _input((4,), 5, "g")
    got = ort.InferenceSession(str(tmp_path / "g.onnx")).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model(x).data, rtol=0, atol=TOL)


def test_fixed_batch(tmp_path):
    model = _build([nn.Dense(3)], (4,))
    x = _input((4,), 5, "x")
    proto = lo.export(model, tmp_path / "f.onnx", example_input=x, dynamic_batch=False)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 5


@pytest.mark.parametrize("name", ["cnn_bn", "bilstm_flat", "bigru_h", "embedding_bigru"])
def test_round_trip_torch_onnx_lepton_onnx(tmp_path, name):
    torch = pytest.importorskip("torch")
    from test_onnx_import import MODELS, _export, _sample

    net, shape = MODELS[name]
    ids = _export(net, shape, tmp_path / "t.onnx")
    ours = lo.load(tmp_path / "t.onnx")
    lo.export(ours, tmp_path / "back.onnx")
    onnx.checker.check_model(onnx.load(str(tmp_path / "back.onnx")), full_check=True)
    x = _sample(shape, 5, ids)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    a = ort.InferenceSession(str(tmp_path / "t.onnx")).run(None, {"x": x})[0]
    b = ort.InferenceSession(str(tmp_path / "back.onnx")).run(None, {"input": x})[0]
    np.testing.assert_allclose(a, ref, atol=TOL)
    np.testing.assert_allclose(b, a, rtol=0, atol=TOL)


def _randomize(model):
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.data.shape).astype(p.data.dtype) * 0.5
    model.eval()
    return model


def _graph_models():
    x = nn.Input((3, 8, 8), name="img")
    h = nn.Conv2D(4, 3, padding="same", activation="relu")(x)
    skip = nn.Add()([h, nn.Conv2D(4, 3, padding=1)(nn.Conv2D(4, 1, activation="relu")(h))])
    a = nn.MaxPool2D(2)(skip)
    b = nn.AvgPool2D(2)(skip)
    j = nn.Concatenate(axis=1)([a, b])
    cnn = nn.Model(x, nn.Dense(3)(nn.Flatten()(j)))
    u, v = nn.Input((5,), name="u"), nn.Input((4,), name="v")
    shared = nn.Dense(6, "tanh")
    hu, hv = shared(nn.Dense(4)(u)), shared(v)  # one layer called twice: weights shared
    two = nn.Model(
        [u, v],
        [
            nn.Subtract()([hu, hv]),
            nn.Average()([hu, nn.Multiply()([hu, hv]), nn.Maximum()([hu, hv])]),
        ],
    )
    return {"residual_concat_cnn": (cnn, {"img": (3, 8, 8)}),
            "two_inputs_shared_layer": (two, {"u": (5,), "v": (4,)})}  # fmt: skip


@pytest.mark.parametrize("name", ["residual_concat_cnn", "two_inputs_shared_layer"])
def test_export_graph_models(tmp_path, name):
    model, shapes = _graph_models()[name]
    _randomize(model)
    L.save(model, tmp_path / "g.lnn")
    served = runtime.load(tmp_path / "g.lnn")
    lo.export(tmp_path / "g.lnn", tmp_path / "g.onnx")
    onnx.checker.check_model(onnx.load(str(tmp_path / "g.onnx")), full_check=True)
    rng = np.random.default_rng(1)
    feeds = {k: rng.standard_normal((4, *s)).astype(np.float32) for k, s in shapes.items()}
    got = ort.InferenceSession(str(tmp_path / "g.onnx")).run(None, feeds)
    ref = served.predict(feeds if len(feeds) > 1 else next(iter(feeds.values())))
    ref = ref if isinstance(ref, list) else [ref]
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=0, atol=TOL)
    back = runtime.load(tmp_path / "g.onnx").predict(feeds if len(feeds) > 1 else
                                                     next(iter(feeds.values())))  # fmt: skip
    for b, r in zip(back if isinstance(back, list) else [back], ref, strict=True):
        np.testing.assert_allclose(b, r, rtol=0, atol=TOL)


def test_export_new_activations_convs_and_padding(tmp_path):
    """Layers of the interchange set: ONNX Runtime on the export against the layers."""
    model = nn.Sequential([
        nn.Pad2D((1, 0, 2, 1), mode="reflect"), nn.Conv2D(4, 3, groups=2, padding=(1, 0, 0, 1)),
        nn.LeakyReLU(0.2), nn.Conv2D(4, 3, groups=4, activation="elu"), nn.HardSwish(),
        nn.Flatten(), nn.Dense(8, "gelu_erf"), nn.SELU(), nn.HardSigmoid(0.3, 0.4),
        nn.Dense(6, "softplus"), nn.Mish(), nn.ReLU6(), nn.Clip(0.1, 0.9), nn.ELU(0.5),
    ])  # fmt: skip
    model.build((None, 2, 7, 7))
    _randomize(model)
    seq = nn.Sequential(
        [
            nn.Pad1D((2, 1), mode="replicate"),
            nn.Conv1D(4, 3, stride=2, padding="same", groups=2, activation="leaky_relu"),
            nn.Flatten(),
        ]
    )
    seq.build((None, 2, 9))
    _randomize(seq)
    for net, shape in ((model, (2, 7, 7)), (seq, (2, 9))):
        for opset in (17, 20):
            lo.export(net, tmp_path / "n.onnx", opset=opset)
            onnx.checker.check_model(onnx.load(str(tmp_path / "n.onnx")), full_check=True)
            x = _input(shape, 5, "x")
            got = ort.InferenceSession(str(tmp_path / "n.onnx")).run(None, {"input": x})[0]
            np.testing.assert_allclose(got, net(x).data, rtol=1e-5, atol=TOL)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_export_int8_dense_matches_the_int8_runtime(tmp_path, mode):
    from lepton_nn.compress import quantize

    # ReLU between the int8 layers: a tanh there may differ by one ulp between engines, and
    # one ulp at a rounding tie of the next layer's quantization is a whole quantum
    model = _build([nn.Dense(48, "relu"), nn.Dropout(0.1), nn.Dense(24, "relu"),
                    nn.Dense(5, "softmax")], (20,))  # fmt: skip
    calib = _input((20,), 256, "x", seed=7)
    q = quantize(model, calib, mode=mode)
    L.save(q, tmp_path / "q.lnn")
    served = runtime.load(tmp_path / "q.lnn")
    for source in (q, tmp_path / "q.lnn"):
        proto = lo.export(source, tmp_path / "q.onnx")
        onnx.checker.check_model(proto, full_check=True)
        weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
        assert len(weights) == 3  # stored as int8
        session = ort.InferenceSession(str(tmp_path / "q.onnx"))
        for n in (1, 33):
            x = _input((20,), n, "x", seed=n)
            got = session.run(None, {"input": x})[0]
            np.testing.assert_allclose(got, served.predict(x), rtol=0, atol=TOL)


@pytest.mark.parametrize("opset", [17, 21])
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_export_int8_conv_as_qdq_matches_the_int8_runtime(tmp_path, mode, opset):
    """int8 Conv2D layers as QDQ: ONNX semantics (ONNX Runtime, optimizations off) equal the
    int8 runtime up to a rounding edge of some layer's grid: rare, one step there (see
    lepton_nn.onnx.quantized). Optimized, ONNX Runtime's x64 u8 x s8 kernels saturate on
    full 8-bit weights (test_onnx_quantized), so the ONNX semantics are the oracle."""
    from lepton_nn.compress import quantize

    model = _build([nn.Conv2D(8, 3, padding="same", activation="relu"), nn.MaxPool2D(2),
                    nn.Conv2D(12, 3, stride=2, activation="relu"), nn.Flatten(),
                    nn.Dense(5, "softmax")], (3, 12, 12))  # fmt: skip
    q = quantize(model, _input((3, 12, 12), 128, "x", seed=7), mode=mode)
    L.save(q, tmp_path / "q.lnn")
    proto = lo.export(tmp_path / "q.lnn", tmp_path / "q.onnx", opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") == 2 and ops.count("Conv") == 2
    weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 3  # both conv weights and the Dense weight stored as int8
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), so)
    x = _input((3, 12, 12), 300, "x", seed=11)
    ours = runtime.load(tmp_path / "q.lnn").predict(x)
    got = session.run(None, {"input": x})[0]
    diff = np.abs(got - ours)
    assert (diff > TOL).mean() < 0.02  # almost always the same to float32 rounding
    assert diff.max() < 0.01  # and a rare rounding edge moves a probability a little
    top = np.sort(ours, 1)
    clear = top[:, -1] - top[:, -2] > 0.01
    assert (got.argmax(1) == ours.argmax(1))[clear].all() and clear.mean() > 0.5


def test_export_int8_recurrent_is_refused_clearly(tmp_path):
    from lepton_nn.compress import quantize

    model = _build([nn.LSTM(4), nn.Dense(2)], (5, 3))
    L.save(quantize(model), tmp_path / "q.lnn")
    with pytest.raises(L.LeptonError, match="int8 LSTM cannot be exported yet"):
        lo.export(tmp_path / "q.lnn", tmp_path / "q.onnx")
