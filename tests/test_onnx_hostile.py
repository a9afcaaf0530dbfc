"""Untrusted ONNX files: damaged, oversized, escaping their folder, naming custom operators
or operators lepton_nn does not convert. Each gives one clear ModelFormatError."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import lepton_nn.onnx as lo  # noqa: E402
from lepton_nn import runtime  # noqa: E402
from lepton_nn.errors import ModelFormatError  # noqa: E402


def _model(nodes, inits, in_shape=("N", 4), out_shape=("N", 3), domains=()):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        inits,
    )  # fmt: skip
    ops = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=ops)


def _dense():
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [w])


def test_a_valid_small_model_converts(tmp_path):
    onnx.save(_dense(), str(tmp_path / "m.onnx"))
    m = runtime.load(tmp_path / "m.onnx")
    np.testing.assert_allclose(m.predict(np.ones((2, 4), np.float32)), np.full((2, 3), 4.0))


def test_unsupported_ops_listed_together_with_names_and_counts():
    nodes = [
        helper.make_node("LpNormalization", ["x"], ["a"], name="lp1"),
        helper.make_node("Round", ["a"], ["b"], name="rnd"),
        helper.make_node("LpNormalization", ["b"], ["c"], name="lp2"),
        helper.make_node("Erf", ["c"], ["d"], name="erf"),
        helper.make_node("TopK", ["d", "k"], ["y", "i"], name="top"),
    ]
    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    with pytest.raises(ModelFormatError) as err:
        lo.onnx_to_manifest(_model(nodes, [k]))
    msg = str(err.value)
    assert "LpNormalization x2: lp1, lp2" in msg
    assert "Round x1: rnd" in msg and "TopK x1: top" in msg
    assert "Erf" not in msg  # an elementwise op: converted when its function is known


def test_a_product_of_two_values_is_refused_clearly():
    nodes = [helper.make_node("Transpose", ["x"], ["t"]),
             helper.make_node("MatMul", ["x", "t"], ["y"], name="gram")]  # fmt: skip
    with pytest.raises(ModelFormatError, match="'gram' \\(MatMul\\): reads several values"):
        lo.onnx_to_manifest(_model(nodes, [], out_shape=("N", "N")))


def test_silu_is_named():
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
    with pytest.raises(ModelFormatError, match="SiLU"):
        lo.onnx_to_manifest(_model(nodes, [], out_shape=("N", 4)))


@pytest.mark.parametrize("cut", [1, 10, 40, 0.5, -3])
def test_truncated_or_garbage_files(tmp_path, cut):
    data = _dense().SerializeToString()
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    with pytest.raises(ModelFormatError):
        lo.onnx_to_manifest(data[:n])
    (tmp_path / "g.onnx").write_bytes(b"\x93garbage" * 5)
    with pytest.raises(ModelFormatError):
        runtime.load(tmp_path / "g.onnx")


def test_empty_file(tmp_path):
    (tmp_path / "e.onnx").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty"):
        runtime.load(tmp_path / "e.onnx")


def test_custom_domain_refused():
    nodes = [helper.make_node("Evil", ["x"], ["y"], domain="com.evil")]
    with pytest.raises(ModelFormatError, match="custom"):
        lo.onnx_to_manifest(_model(nodes, [], domains=["com.evil"]))


def test_huge_declared_tensor_refused_before_allocation():
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10**6, 10**6])
    t.raw_data = b"\x00" * 16
    with pytest.raises(ModelFormatError, match="declared shape"):
        lo.onnx_to_manifest(_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [t]))


def _external_model(location, offset=0, length=48):
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 3])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [t])


def test_external_data_inside_the_folder_is_read(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    (tmp_path / "w.bin").write_bytes(b"\x00" * 8 + w.tobytes())
    onnx.save(_external_model("w.bin", offset=8), str(tmp_path / "m.onnx"))
    got = runtime.load(tmp_path / "m.onnx").predict(np.eye(4, dtype=np.float32))
    np.testing.assert_array_equal(got, w)


@pytest.mark.parametrize("location", ["../w.bin", "/etc/passwd", "sub/../../w.bin", "link.bin"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, location):
    inner = tmp_path / "model"
    inner.mkdir()
    (tmp_path / "w.bin").write_bytes(b"\x00" * 48)
    os.symlink(tmp_path / "w.bin", inner / "link.bin")
    onnx.save(_external_model(location), str(inner / "m.onnx"))
    with pytest.raises(ModelFormatError, match="outside the model's folder"):
        runtime.load(inner / "m.onnx")


def test_external_data_shorter_than_declared(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\x00" * 20)
    onnx.save(_external_model("w.bin"), str(tmp_path / "m.onnx"))
    with pytest.raises(ModelFormatError, match="does not fit"):
        runtime.load(tmp_path / "m.onnx")


def test_hostile_shape_subgraph_is_not_built():
    big = numpy_helper.from_array(np.array([10**7, 10**7], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["z"], name="bomb"),
             helper.make_node("Add", ["x", "z"], ["y"])]  # fmt: skip
    with pytest.raises(ModelFormatError, match="ConstantOfShape x1: bomb"):
        lo.onnx_to_manifest(_model(nodes, [big]))


def test_huge_declared_input_is_refused_by_the_budget(tmp_path):
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [], in_shape=("N", 10**9),
                   out_shape=("N", 10**9))  # fmt: skip
    onnx.save(model, str(tmp_path / "big.onnx"))
    for load in (runtime.load, lo.load):
        with pytest.raises(ModelFormatError, match="input_shape|limit|budget|elements"):
            load(tmp_path / "big.onnx")
