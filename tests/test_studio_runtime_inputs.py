"""The studio on a saved network of several inputs, through the runtime alone (issue 22): a
graph model made with ``nn.Input``/``nn.Model`` and an ONNX file made here with the ``onnx``
helper API, every step's output checked against NumPy in float64 (and ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

import lepton_nn  # noqa: E402
import lepton_nn.inspect as I  # noqa: E402
from lepton_nn import LeptonError, nn  # noqa: E402
from lepton_nn.inspect.studio import runtime_view  # noqa: E402
from lepton_nn.runtime import load  # noqa: E402


def _arr(view):
    return np.array(view["values"], dtype=np.float64)


def _two_inputs(path):
    a, b = nn.Input((5,), name="a"), nn.Input((4,), name="b")
    shared = nn.Dense(4, "tanh", name="shared")  # cat: (8, 8), sent in full
    ha, hb = shared(a), shared(nn.Dense(5, name="proj")(b))
    value = nn.Dense(1, name="value")(nn.Multiply(name="gate")([ha, hb]))
    scores = nn.Dense(3, name="scores")(nn.Concatenate(name="cat")([ha, hb]))
    net = nn.Model([a, b], [scores, value])
    lepton_nn.save(net, path)
    return net


def test_a_graph_model_of_two_inputs_step_by_step(tmp_path):
    net = _two_inputs(tmp_path / "two.lnn")
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(20, 5)).astype(np.float32), rng.normal(size=(20, 4)).astype(np.float32)
    st = I.studio(str(tmp_path / "two.lnn"), {"b": B, "a": A})  # a dict: by name, any order
    try:
        g = httpx.get(st.url + "api/graph", timeout=30).json()
        assert g["inputs"] == ["a", "b"]
        nodes = {n["name"]: n for n in g["nodes"]}
        assert set(nodes) == {"shared", "proj", "shared@1", "gate", "value", "cat", "scores"}
        assert nodes["shared@1"]["inputs"] == ["proj"] and nodes["proj"]["inputs"] == ["b"]
        assert nodes["gate"]["inputs"] == ["shared", "shared@1"]
        assert nodes["cat"]["shape"] == "(N, 8)" and nodes["gate"]["kind"] == "Multiply"
        # every step on the first 8 rows, against NumPy in float64
        a, b = A[:8].astype(np.float64), B[:8].astype(np.float64)
        p = {m.name: [q.data.astype(np.float64) for q in m.parameters()] for m in net.layers}
        ha = np.tanh(a @ p["shared"][0] + p["shared"][1])
        pb = b @ p["proj"][0] + p["proj"][1]
        hb = np.tanh(pb @ p["shared"][0] + p["shared"][1])
        want = {
            "shared": ha,
            "proj": pb,
            "shared@1": hb,
            "gate": ha * hb,
            "value": (ha * hb) @ p["value"][0] + p["value"][1],
            "cat": np.concatenate([ha, hb], axis=1),
            "scores": np.concatenate([ha, hb], axis=1) @ p["scores"][0] + p["scores"][1],
        }
        for name, v in want.items():
            got = httpx.get(st.url + f"api/tensors/{name}", timeout=30).json()
            assert got["rows"] == 8
            np.testing.assert_allclose(_arr(got["output"]), v, rtol=2e-5, atol=2e-6)
        gate = httpx.get(st.url + "api/tensors/gate", timeout=30).json()
        np.testing.assert_allclose(_arr(gate["inputs"][0]), ha, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(_arr(gate["inputs"][1]), hb, rtol=2e-5, atol=2e-6)
        scores, value = load(tmp_path / "two.lnn").forward({"a": A[:8], "b": B[:8]})
        out = httpx.get(st.url + "api/tensors/scores", timeout=30).json()["output"]
        np.testing.assert_array_equal(np.array(out["values"], np.float32), scores)
        assert httpx.get(st.url + "api/features?row=0").json()["layers"] == []  # no images
    finally:
        st.close()
    st = I.studio(str(tmp_path / "two.lnn"), [A, B])  # a list: in input order
    try:
        got = httpx.get(st.url + "api/tensors/gate", timeout=30).json()
        np.testing.assert_allclose(_arr(got["output"]), want["gate"], rtol=2e-5, atol=2e-6)
    finally:
        st.close()
    with pytest.raises(LeptonError, match="missing \\['b'\\]"):
        I.studio(str(tmp_path / "two.lnn"), {"a": A})


def test_rows_of_several_inputs_slice_together():
    rows = runtime_view.Rows({"a": np.arange(10).reshape(5, 2), "b": np.arange(5)})
    assert len(rows) == 5 and len(rows[:3]) == 3
    np.testing.assert_array_equal(rows[1:3].arrays["a"], [[2, 3], [4, 5]])
    with pytest.raises(TypeError):
        rows[0]


def _onnx_file(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w, bias, w2 = (rng.normal(size=s).astype(np.float32) for s in ((3, 4), (4,), (6, 2)))
    nodes = [
        helper.make_node("Add", ["a", "b"], ["s"], name="sum"),
        helper.make_node("Gemm", ["s", "W", "bias"], ["h"], name="fc"),
        helper.make_node("Relu", ["h"], ["r"], name="act"),
        helper.make_node("Concat", ["r", "c"], ["rc"], axis=1, name="join"),
        helper.make_node("MatMul", ["rc", "W2"], ["y"], name="head"),
    ]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", k])
        for n, k in (("a", 3), ("b", 3), ("c", 2))
    ]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])]
    inits = [numpy_helper.from_array(v, n) for v, n in ((w, "W"), (bias, "bias"), (w2, "W2"))]
    model = helper.make_model(
        helper.make_graph(nodes, "three_inputs", inputs, out, initializer=inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return w, bias, w2


def test_an_onnx_file_of_three_inputs_step_by_step(tmp_path):
    w, bias, w2 = _onnx_file(tmp_path / "three.onnx")
    rng = np.random.default_rng(2)
    x = {k: rng.normal(size=(12, n)).astype(np.float32) for k, n in (("a", 3), ("b", 3), ("c", 2))}
    st = I.studio(load(str(tmp_path / "three.onnx")), x)
    try:
        g = httpx.get(st.url + "api/graph", timeout=30).json()
        assert g["inputs"] == ["a", "b", "c"]
        merge = [n for n in g["nodes"] if n["kind"] == "Add"]
        assert len(merge) == 1 and merge[0]["inputs"] == ["a", "b"]
        last = g["nodes"][-1]
        a, b, c = (x[k][:8].astype(np.float64) for k in "abc")
        h = np.maximum((a + b) @ w + bias, 0)
        y = np.concatenate([h, c], axis=1) @ w2
        got = httpx.get(st.url + f"api/tensors/{last['name']}", timeout=30).json()
        np.testing.assert_allclose(_arr(got["output"]), y, rtol=2e-5, atol=2e-6)
        added = httpx.get(st.url + f"api/tensors/{merge[0]['name']}", timeout=30).json()
        np.testing.assert_allclose(_arr(added["output"]), a + b, rtol=1e-6)
        assert len(added["inputs"]) == 2
        ort = pytest.importorskip("onnxruntime")
        sess = ort.InferenceSession(str(tmp_path / "three.onnx"))
        want = sess.run(None, {k: v[:8] for k, v in x.items()})[0]
        np.testing.assert_allclose(_arr(got["output"]), want, rtol=2e-5, atol=2e-6)
    finally:
        st.close()
