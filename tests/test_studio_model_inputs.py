"""The studio on a graph ``nn.Model`` of several inputs (autograd, not the runtime): sample
rows given as a dict by input name (any order) or a list in input order, sliced together;
every layer call's x, y, dL/dy and dL/dx checked against NumPy in float64 through the real
server."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

import lepton_nn.inspect as I  # noqa: E402
from lepton_nn import LeptonError, nn  # noqa: E402
from lepton_nn.inspect.studio import rows  # noqa: E402


def _arr(view):
    return np.array(view["values"], dtype=np.float64)


def _net():
    a, b = nn.Input((5,), name="a"), nn.Input((4,), name="b")
    shared = nn.Dense(4, "tanh", name="shared")
    ha, hb = shared(a), shared(nn.Dense(5, name="proj")(b))
    return nn.Model([a, b], nn.Dense(1, name="value")(nn.Multiply(name="gate")([ha, hb])))


def _data(n=20):
    rng = np.random.default_rng(0)
    f32 = np.float32
    return (
        rng.normal(size=(n, 5)).astype(f32),
        rng.normal(size=(n, 4)).astype(f32),
        rng.normal(size=(n, 1)).astype(f32),
    )


def _numpy(net, a, b, y):
    """Every call's output, and dL/d(gate) for L = mean((value - y)^2), in float64."""
    p = {m.name: [q.data.astype(np.float64) for q in m.parameters()] for m in net.layers}
    ha = np.tanh(a @ p["shared"][0] + p["shared"][1])
    pb = b @ p["proj"][0] + p["proj"][1]
    hb = np.tanh(pb @ p["shared"][0] + p["shared"][1])
    value = (ha * hb) @ p["value"][0] + p["value"][1]
    d_gate = (2 * (value - y) / value.size) @ p["value"][0].T
    outs = {"shared": ha, "proj": pb, "shared@1": hb, "gate": ha * hb, "value": value}
    return outs, d_gate, float(np.mean((value - y) ** 2))


def test_a_graph_model_of_two_inputs_in_the_studio():
    net = _net()
    A, B, Y = _data()
    st = I.studio(net, ({"b": B, "a": A}, Y))  # a dict: by name, any order
    try:
        g = httpx.get(st.url + "api/graph", timeout=60).json()
        assert g["inputs"] == ["a", "b"]
        nodes = {n["name"]: n for n in g["nodes"]}
        assert set(nodes) == {"shared", "proj", "shared@1", "gate", "value"}
        assert nodes["gate"]["inputs"] == ["shared", "shared@1"]
        assert nodes["proj"]["inputs"] == ["b"] and nodes["gate"]["shape"] == "(N, 4)"
        a, b, y = (v[:8].astype(np.float64) for v in (A, B, Y))
        want, d_gate, loss = _numpy(net, a, b, y)
        for name, v in want.items():
            got = httpx.get(st.url + f"api/tensors/{name}", timeout=60).json()
            assert got["rows"] == 8
            np.testing.assert_allclose(_arr(got["output"]), v, rtol=2e-5, atol=2e-6)
            assert got["loss"] == pytest.approx(loss, rel=1e-5)
        gate = httpx.get(st.url + "api/tensors/gate", timeout=60).json()
        ha, hb = want["shared"], want["shared@1"]
        np.testing.assert_allclose(_arr(gate["inputs"][0]), ha, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(_arr(gate["inputs"][1]), hb, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(_arr(gate["grad_in"]), d_gate, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(_arr(gate["grad_out"][0]), d_gate * hb, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(_arr(gate["grad_out"][1]), d_gate * ha, rtol=1e-4, atol=1e-7)
        proj = httpx.get(st.url + "api/tensors/proj", timeout=60).json()
        np.testing.assert_allclose(_arr(proj["inputs"][0]), b, rtol=1e-6)  # input b's rows
        ops = httpx.get(st.url + "api/ops/shared@1", timeout=60).json()
        assert ops["rows"] == 8 and [o["label"] for o in ops["ops"]] == ["x W", "+ b", "tanh"]
        np.testing.assert_allclose(_arr(ops["ops"][-1]["value"]), hb, rtol=2e-5, atol=2e-6)
        back = httpx.get(st.url + "api/backward", timeout=60).json()
        assert back["loss"] == pytest.approx(loss, rel=1e-5)
        assert {"shared", "shared@1", "gate"} <= {s["layer"] for s in back["steps"]}
        assert httpx.get(st.url + "api/features?row=0", timeout=60).json()["layers"] == []
        for ask in ("api/explain?row=0", "api/saliency?row=0"):  # one-input views: clear 400
            r = httpx.get(st.url + ask, timeout=60)
            assert r.status_code == 400 and "one" in r.json()["error"]
    finally:
        st.close()
    st = I.studio(net, [A, B], sample_rows=6)  # a list: in input order; no labels
    try:
        got = httpx.get(st.url + "api/tensors/gate", timeout=60).json()
        assert got["rows"] == 6 and got["objective"].startswith("L = sum")
        want6, _, _ = _numpy(net, A[:6].astype(np.float64), B[:6].astype(np.float64), Y[:6])
        np.testing.assert_allclose(_arr(got["output"]), want6["gate"], rtol=2e-5, atol=2e-6)
    finally:
        st.close()


def test_bad_rows_of_several_inputs_are_refused_clearly():
    net = _net()
    A, B, Y = _data()
    with pytest.raises(LeptonError, match=r"missing \['b'\]"):
        I.studio(net, ({"a": A}, Y))
    with pytest.raises(LeptonError, match="differ in number"):
        I.studio(net, ({"a": A, "b": B[:7]}, Y))
    with pytest.raises(ValueError, match="one input"):
        I.studio(net, ({"a": A, "b": B}, Y), epochs=1)


def test_the_studio_as_a_callback_slices_rows_of_several_inputs():
    net = _net()
    A, B, Y = _data()
    st = I.Studio(model=net, sample=({"a": A, "b": B}, Y))
    x = st.sample_x()
    assert isinstance(x, rows.Rows) and len(x) == 20 and len(x[:8]) == 8
    np.testing.assert_array_equal(x[2:4].arrays["b"], B[2:4])
    assert st.tensors("gate", rows=3)["rows"] == 3
