"""The studio's op nodes and saliency maps (issue 22): the ops inside a layer against NumPy in
float64 (values, and gradients of the whole network's loss), the expanded layer computing what
the fused op computes, backprop stepping through the ops, and saliency maps against a
central-difference gradient."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_nn import explain as E
from lepton_nn import nn
from lepton_nn.autograd import Tensor
from lepton_nn.inspect.studio import model_view, ops_view
from lepton_nn.inspect.studio.saliency import class_gradient, saliency_maps
from lepton_nn.inspect.studio.tensor_view import heat
from lepton_nn.losses import get_loss


def _arr(view):
    return np.array(view["values"], dtype=np.float64)


def _mlp():
    layers = [nn.Dense(8, "relu", name="hidden"), nn.Dense(4, "tanh", name="mid")]
    net = nn.Sequential([*layers, nn.Dense(1, name="out")]).build((None, 4))
    return net.astype("float64")


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return x, (x[:, :1] + x[:, 2:3] > 0).astype(np.float64)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_dense_ops_values_and_gradients_match_numpy_in_float64():
    net, (x, y) = _mlp(), _data()
    (w1, b1), (w2, b2), (w3, b3) = ([p.data for p in m.parameters()] for m in net.layers)
    # forward, every intermediate
    a1 = x @ w1
    z1 = a1 + b1
    h1 = np.maximum(z1, 0)
    a2 = h1 @ w2
    z2 = a2 + b2
    h2 = np.tanh(z2)
    z3 = h2 @ w3 + b3
    # backward of the mean BCE with logits
    dz3 = (_sigmoid(z3) - y) / len(x)
    dh2 = dz3 @ w3.T
    dz2 = dh2 * (1 - h2**2)
    dh1 = dz2 @ w2.T
    dz1 = dh1 * (z1 > 0)
    loss = get_loss("bce")
    for name, want in (
        ("hidden", [(a1, dz1), (z1, dz1), (h1, dh1)]),
        ("mid", [(a2, dz2), (z2, dz2), (h2, dh2)]),
        ("out", [(z3 - b3, dz3), (z3, dz3)]),
    ):
        d = ops_view.layer_ops(net, name, x, y, loss)
        assert [o["op"] for o in d["ops"]][:2] == ["MatMul", "Add"]
        assert len(d["ops"]) == len(want)
        for o, (v, g) in zip(d["ops"], want):
            np.testing.assert_allclose(_arr(o["value"]), v, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(_arr(o["grad"]), g, rtol=1e-9, atol=1e-12)
            assert o["value_norm"] == pytest.approx(np.linalg.norm(v))
            assert o["grad_norm"] == pytest.approx(np.linalg.norm(g))
    assert [o["op"] for o in ops_view.layer_ops(net, "mid", x, y, loss)["ops"]][2] == "Tanh"
    assert all(p.grad is None for p in net.parameters())  # left as they were


def test_graph_nodes_carry_their_ops_with_shapes():
    net, (x, _) = _mlp(), _data()
    g = model_view.layer_graph(net, x)
    ops = {n["name"]: n["ops"] for n in g["nodes"]}
    assert [(o["id"], o["label"], o["op"], o["shape"]) for o in ops["hidden"]] == [
        (0, "x W", "MatMul", "(N, 8)"),
        (1, "+ b", "Add", "(N, 8)"),
        (2, "relu", "Relu", "(N, 8)"),
    ]
    assert ops["hidden"][1]["inputs"] == [0, "bias"]
    assert "unbroadcast" in ops["hidden"][1]["derivative"]
    assert [o["label"] for o in ops["out"]] == ["x W", "+ b"]  # no activation: no op


def test_conv_ops_match_numpy_and_other_layers_show_the_ops_they_record():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 2, 7, 7))
    layers = [nn.Conv2D(3, 3, activation="relu", name="conv"), nn.MaxPool2D(2, name="pool")]
    net = nn.Sequential([*layers, nn.Flatten(name="flat"), nn.Dense(1, name="out")])
    net = net.build((None, 2, 7, 7)).astype("float64")
    conv = net.layers[0]
    w, b = conv.weight.data, conv.bias.data
    b[:] = rng.normal(size=b.shape)
    z = np.zeros((4, 3, 5, 5))
    for i in range(5):
        for j in range(5):
            z[:, :, i, j] = np.einsum("nchw,ochw->no", x[:, :, i : i + 3, j : j + 3], w)
    _, objective, ops = ops_view.op_arrays(net, "conv", x)  # no labels: L = sum of outputs
    assert objective.startswith("L = sum")
    assert [o["label"] for o, _, _ in ops] == ["W * x", "+ b", "relu"]
    assert [o["shape"] for o, _, _ in ops] == ["(N, 3, 5, 5)"] * 3
    want = [z, z + b[:, None, None], np.maximum(z + b[:, None, None], 0)]
    for (_, v, _), v_want in zip(ops, want):
        np.testing.assert_allclose(v, v_want, rtol=1e-10, atol=1e-12)
    graph = {n["name"]: n for n in model_view.layer_graph(net, x[:2])["nodes"]}
    assert [o["op"] for o in graph["pool"]["ops"]] == ["MaxPool2d"]
    assert [o["op"] for o in graph["flat"]["ops"]] == ["Reshape"]
    assert graph["pool"]["ops"][0]["shape"] == "(N, 3, 2, 2)"


def test_a_merge_call_shows_its_own_ops_only():
    # a merge reads a list of tensors: the walk from its output stops at each of them (it
    # went on through the layers before it, showing their ops as the merge's)
    a, b = nn.Input((3,), name="a"), nn.Input((3,), name="b")
    ha, hb = nn.Dense(4, "tanh", name="left")(a), nn.Dense(4, name="right")(b)
    gate = nn.Multiply(name="gate")([ha, hb])
    total = nn.Add(name="total")([gate, ha, hb])
    net = nn.Model([a, b], nn.Dense(1, name="out")(total)).astype("float64")
    rng = np.random.default_rng(5)
    x = {"a": rng.normal(size=(6, 3)), "b": rng.normal(size=(6, 3))}
    graph = {n["name"]: n for n in model_view.layer_graph(net, x)["nodes"]}
    assert [o["op"] for o in graph["gate"]["ops"]] == ["Mul"]
    assert [o["op"] for o in graph["total"]["ops"]] == ["Add", "Add"]
    assert graph["total"]["ops"][1]["inputs"] == [0, "x"]
    _, _, ops = ops_view.op_arrays(net, "gate", x)
    left, right = net.get_layer("left"), net.get_layer("right")
    h_a = np.tanh(x["a"] @ left.weight.data + left.bias.data)
    h_b = x["b"] @ right.weight.data + right.bias.data
    assert len(ops) == 1
    np.testing.assert_allclose(ops[0][1], h_a * h_b, rtol=1e-12)
    rules = model_view.formula_of(net, "total", x)["rules"]
    assert [r["op"] for r in rules] == ["Add", "Add"]


def test_conv_op_gradients_are_the_layer_gradient_through_relu():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 1, 6, 6))
    layers = [nn.Conv2D(2, 3, activation="relu", name="conv"), nn.Flatten(name="flat")]
    net = nn.Sequential([*layers, nn.Dense(1, name="out")]).build((None, 1, 6, 6))
    net = net.astype("float64")
    # L = the sum of the outputs: dL/d(flat) = w_out per row, so dL/dy_conv is known exactly
    w_out = net.layers[2].weight.data[:, 0]
    dy = np.broadcast_to(w_out.reshape(1, 2, 4, 4), (3, 2, 4, 4))
    _, _, ops = ops_view.op_arrays(net, "conv", x)
    pre = ops[1][1]
    np.testing.assert_allclose(ops[2][2], dy, atol=1e-12)
    np.testing.assert_allclose(ops[1][2], dy * (pre > 0), atol=1e-12)
    np.testing.assert_allclose(ops[0][2], dy * (pre > 0), atol=1e-12)


def _numpy_lstm(x, w_ih, w_hh, b, u):
    n, steps, _ = x.shape
    h, c = np.zeros((n, u)), np.zeros((n, u))
    out = {k: [] for k in "zifgoch"}
    for t in range(steps):
        z = x[:, t] @ w_ih + h @ w_hh + b
        i, f = _sigmoid(z[:, :u]), _sigmoid(z[:, u : 2 * u])
        g, o = np.tanh(z[:, 2 * u : 3 * u]), _sigmoid(z[:, 3 * u :])
        c = f * c + i * g
        h = o * np.tanh(c)
        for k, v in zip("zifgoch", (z, i, f, g, o, c, h)):
            out[k].append(v)
    return {k: np.stack(v, axis=1) for k, v in out.items()}


@pytest.mark.parametrize("sequences", [False, True])
def test_lstm_gates_per_step_match_numpy_and_the_fused_op(sequences):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 3, 2))
    lstm = nn.LSTM(5, return_sequences=sequences, name="lstm")
    net = nn.Sequential([lstm, nn.Flatten(name="flat"), nn.Dense(1, name="out")])
    net = net.build((None, 3, 2)).astype("float64")
    lstm.bias.data[:] = rng.normal(size=lstm.bias.data.shape)
    want = _numpy_lstm(x, lstm.weight_ih.data, lstm.weight_hh.data, lstm.bias.data, 5)
    _, _, ops = ops_view.op_arrays(net, "lstm", x)
    labels = ["x W_ih", "z_t", "i", "f", "g", "o", "c_t", "h_t"] + (["stack"] if sequences else [])
    assert [o["label"] for o, _, _ in ops] == labels
    assert ops[2][0]["shape"] == "(N, 3, 5)" and ops[2][0]["steps"] == 3
    for k, key in enumerate("zifgoch", start=1):
        np.testing.assert_allclose(ops[k][1], want[key], rtol=1e-10, atol=1e-12)
    # the expansion computes what the fused LSTM op computes, forward and backward
    expanded = ops_view.expand(lstm, (Tensor(x),))
    fused = np.asarray(lstm(x).data)
    np.testing.assert_allclose(ops_view.output_of(lstm, expanded).data, fused, atol=1e-12)
    fused_dx = model_view.node_tensors(net, "lstm", x)["grad_out"][0]
    xt = Tensor(x, requires_grad=True)
    seen = {}
    hook = ops_view.expanding_hook("lstm", seen)
    h = lstm.register_forward_hook(lambda m, i, o: hook("lstm", m, i, o))
    try:
        net(xt).sum().backward()
    finally:
        h.remove()
    assert "lstm" in seen  # the expansion stood in for the fused op
    np.testing.assert_allclose(xt.grad, _arr(fused_dx), rtol=1e-9, atol=1e-12)
    # the last step of h_t gets the layer's dL/dy and the gradient of the last step's o is
    # dL/dh_T * tanh(c_T) (y = h_T = o_T tanh(c_T); later steps read h_T only)
    if not sequences:
        g_y = _arr(model_view.node_tensors(net, "lstm", x)["grad_in"])
        np.testing.assert_allclose(ops[7][2][:, -1], g_y, rtol=1e-9, atol=1e-12)
        want_o = g_y * np.tanh(want["c"][:, -1])
        np.testing.assert_allclose(ops[5][2][:, -1], want_o, rtol=1e-9, atol=1e-12)


def test_backprop_steps_through_the_ops_in_reverse_order():
    net, (x, y) = _mlp(), _data()
    loss = get_loss("bce")
    steps = model_view.backward_steps(net, x, y, loss, ops=True)["steps"]
    assert steps[0]["label"] == "BCEWithLogits" and steps[0]["layer"] is None
    walked = [(s["layer"], s["op"]) for s in steps if s["op"] is not None]
    assert walked == [
        ("out", 1), ("out", 0), ("mid", 2), ("mid", 1), ("mid", 0),
        ("hidden", 2), ("hidden", 1), ("hidden", 0),
    ]  # fmt: skip
    # each step's gradient is the op's gradient on the same rows
    ops = ops_view.layer_ops(net, "mid", x, y, loss)["ops"]
    for s in steps:
        if s["layer"] == "mid" and s["op"] is not None:
            assert s["grad_norm"] == pytest.approx(ops[s["op"]]["grad_norm"], rel=1e-9)
    plain = model_view.backward_steps(net, x, y, loss)["steps"]  # the fused ops, as before
    fused = ["BCEWithLogits", "Linear", "Linear tanh", "Linear relu"]
    assert [s["label"] for s in plain[:4]] == fused
    assert all(s["op"] is None for s in plain)


# -- saliency -----------------------------------------------------------------------------------
def _convnet(classes=3):
    layers = [nn.Conv2D(3, 3, activation="relu", name="conv"), nn.MaxPool2D(2, name="pool")]
    net = nn.Sequential([*layers, nn.Flatten(name="flat"), nn.Dense(classes, name="out")])
    return net.build((None, 2, 8, 8)).astype("float64")


def test_saliency_gradient_matches_central_differences_in_float64():
    net = _convnet()
    image = np.random.default_rng(6).normal(size=(2, 8, 8))
    for target in (0, 2):
        g, f = class_gradient(net, image, target)
        num = np.zeros_like(image)
        eps = 1e-6
        for i in np.ndindex(image.shape):
            up, down = image.copy(), image.copy()
            up[i] += eps
            down[i] -= eps
            num[i] = (class_gradient(net, up, target)[1] - class_gradient(net, down, target)[1]) / (
                2 * eps
            )
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)
        assert f == pytest.approx(float(net(image[None]).data[0, target]))
    assert all(p.grad is None for p in net.parameters())


def test_saliency_maps_of_a_chosen_image_and_class():
    net = _convnet()
    x = np.random.default_rng(7).normal(size=(5, 2, 8, 8))
    d = saliency_maps(net, x, 3, target=1)
    assert d["target"] == 1 and d["index"] == 3 and d["shape"] == [2, 8, 8]
    g, f = class_gradient(net, x[3], 1)
    assert d["score"] == pytest.approx(f)
    assert d["gradient"] == heat(np.abs(g).max(axis=0), 64, 64)
    ig, delta = E.integrated_gradients(net, x[3:4], steps=16, target=1, return_delta=True)
    np.testing.assert_allclose(d["integrated"]["values"], ig[0].sum(axis=0).ravel(), atol=1e-12)
    assert d["delta"] == pytest.approx(delta[0])
    out = net(x[3:4]).data[0]
    assert saliency_maps(net, x, 3)["target"] == int(np.argmax(out))  # default: the top class
    with pytest.raises(IndexError):
        saliency_maps(net, x, 5)
    with pytest.raises(ValueError, match="not an output"):
        saliency_maps(net, x, 0, target=3)
    with pytest.raises(ValueError, match="images"):
        saliency_maps(_mlp(), np.zeros((2, 4)), 0)


# -- over HTTP ------------------------------------------------------------------------------------
@pytest.fixture
def http():
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    return pytest.importorskip("httpx")


def test_ops_backward_ops_and_saliency_routes(http, tmp_path):
    import lepton_nn
    import lepton_nn.inspect as I

    net, (x, y) = _mlp(), _data(16)
    st = I.studio(net, (x, y), loss="bce")
    try:
        d = http.get(st.url + "api/ops/mid", timeout=30).json()
        assert d["rows"] == 8 and [o["label"] for o in d["ops"]] == ["x W", "+ b", "tanh"]
        _, _, want = ops_view.op_arrays(net, "mid", x[:8], y[:8], get_loss("bce"))
        for o, (_, v, g) in zip(d["ops"], want):
            np.testing.assert_allclose(_arr(o["value"]), v, rtol=1e-12)
            np.testing.assert_allclose(_arr(o["grad"]), g, rtol=1e-12)
        assert http.get(st.url + "api/ops/nope").status_code == 404
        steps = http.get(st.url + "api/backward-ops", timeout=30).json()["steps"]
        assert [(s["layer"], s["op"]) for s in steps[1:3]] == [("out", 1), ("out", 0)]
        r = http.get(st.url + "api/saliency?row=0")
        assert r.status_code == 400 and "images" in r.json()["error"]
    finally:
        st.close()
    conv = _convnet()
    images = np.random.default_rng(8).normal(size=(4, 2, 8, 8))
    st = I.studio(conv, images)
    try:
        d = http.get(st.url + "api/saliency?row=2&target=1", timeout=30).json()
        assert d["target"] == 1 and d["gradient"] == saliency_maps(conv, images, 2, 1)["gradient"]
        assert http.get(st.url + "api/saliency?row=9").status_code == 404
    finally:
        st.close()
    lepton_nn.save(_mlp().astype("float32"), tmp_path / "net.lnn")
    st = I.studio(str(tmp_path / "net.lnn"), x.astype(np.float32))
    try:
        for api in ("api/ops/hidden", "api/backward-ops"):
            r = http.get(st.url + api)
            assert r.status_code == 400, api
    finally:
        st.close()


def test_an_expansion_that_does_not_compute_the_call_is_not_used(monkeypatch):
    net, (x, y) = _mlp(), _data()

    def wrong(layer, x):  # the ops of x W alone: not what the layer computes
        return [ops_view.Op("x W", "z = x W", [Tensor(x) @ layer.weight], ["x", "weight"])]

    monkeypatch.setitem(ops_view.EXPANSIONS, "Dense", wrong)
    g = {n["name"]: n["ops"] for n in model_view.layer_graph(net, x)["nodes"]}
    assert [o["op"] for o in g["hidden"]] == ["Linear relu"]  # the op the call recorded
    _, _, ops = ops_view.op_arrays(net, "hidden", x, y, get_loss("bce"))
    assert len(ops) == 1
    np.testing.assert_allclose(ops[0][1], net.layers[0](x).data)


def test_a_masked_lstm_call_shows_its_fused_op():
    x = np.random.default_rng(9).normal(size=(3, 4, 2))
    lstm = nn.LSTM(3, name="lstm").build((None, 4, 2)).astype("float64")
    lengths = np.array([4, 2, 1])
    out = lstm(Tensor(x), lengths=lengths)
    ops = ops_view.expand(lstm, (Tensor(x),), out)  # the hook does not see lengths=
    assert [op.label for op in ops] != ["x W_ih", "z_t", "i", "f", "g", "o", "c_t", "h_t"]
    assert ops_view.output_of(lstm, ops) is out
