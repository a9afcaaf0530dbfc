"""Each supported ONNX op, alone in a graph with random attributes, converted and run by
lepton_nn's runtime against ONNX Runtime on random inputs (property-based where shapes,
pads and strides vary). Layers the manifest validator cannot check yet are compared through
the layers alone (see ``_check``)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import lepton_nn.onnx as lo  # noqa: E402
from lepton_nn import runtime  # noqa: E402
from lepton_nn.errors import ModelFormatError  # noqa: E402

TOL = 1e-5
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)


def _check(nodes, inits, in_shape, out_shape, opset=17, n=3, seed=0, net_too=False):
    """Convert the graph x -> nodes -> y; compare the runtime (and the layers) with ORT.

    While the manifest validator has no shape rule for a layer of the ``ops`` branch (a
    merge gap, see ``_missing_rules``), only the layers are compared: they are built from
    the converted manifest without the validator, which both loaders run first."""
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *out_shape])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    x = np.random.default_rng(seed).standard_normal((n, *in_shape)).astype(np.float32)
    ref = ort.InferenceSession(data).run(None, {"x": x})[0]
    manifest, arrays, _ = lo.onnx_to_manifest(data)
    if _missing_rules(manifest):
        from lepton_nn.io import module_from_lnn

        net = module_from_lnn(manifest["model"], arrays)
        np.testing.assert_allclose(net(x).data, ref, rtol=1e-5, atol=TOL)
        return
    got = runtime.from_manifest(manifest, arrays).predict(x)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=TOL)
    if net_too:
        np.testing.assert_allclose(lo.load(data)(x).data, ref, rtol=1e-5, atol=TOL)


def _missing_rules(manifest) -> list[str]:
    """Layers of the manifest the validator cannot check yet (grouped Conv2D included)."""
    import inspect

    from lepton_nn.runtime import validate

    arch = manifest["model"]["architecture"]["config"]["layers"]
    out = [c["class"] for c in arch if c["class"] not in validate.SHAPE_RULES]
    conv = inspect.getsource(validate.SHAPE_RULES["Conv2D"])
    out += ["Conv2D groups" for c in arch if c["config"].get("groups", 1) > 1
            and "groups" not in conv]  # fmt: skip
    for c in arch:
        if c["class"] == "Activation":
            try:
                validate.SHAPE_RULES["Activation"](c["config"], (3,), "probe")
            except Exception:
                out.append(c["config"]["activation"])
    return out


def _rng(seed=0):
    return np.random.default_rng(seed)


def _w(*shape, seed=1):
    return (_rng(seed).standard_normal(shape) * 0.5).astype(np.float32)


def _out(n, p0, p1, k, s, d):
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


@SETTINGS
@given(
    c=st.integers(1, 3), g=st.sampled_from([1, 2]), f=st.integers(1, 2), h=st.integers(5, 9),
    w=st.integers(5, 9), k=st.integers(1, 3), s=st.integers(1, 2), d=st.integers(1, 2),
    pads=st.lists(st.integers(0, 2), min_size=4, max_size=4), bias=st.booleans(),
)  # fmt: skip
def test_conv2d(c, g, f, h, w, k, s, d, pads, bias):
    cin, cout = c * g, f * g
    oh = _out(h, pads[0], pads[2], k, s, d)
    ow = _out(w, pads[1], pads[3], k, s, d)
    inits = {"W": _w(cout, c, k, k)}
    if bias:
        inits["B"] = _w(cout, seed=2)
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "dilations": [d, d], "pads": pads}
    node = helper.make_node("Conv", ["x", "W"] + (["B"] if bias else []), ["y"], group=g, **attrs)
    _check([node], inits, (cin, h, w), (cout, oh, ow))


@SETTINGS
@given(auto=st.sampled_from(["SAME_UPPER", "SAME_LOWER", "VALID"]), k=st.integers(1, 4),
       s=st.integers(1, 3), h=st.integers(4, 9))  # fmt: skip
def test_conv2d_auto_pad(auto, k, s, h):
    o = -(-h // s) if auto != "VALID" else (h - k) // s + 1
    node = helper.make_node("Conv", ["x", "W"], ["y"], kernel_shape=[k, k], strides=[s, s],
                            auto_pad=auto)  # fmt: skip
    _check([node], {"W": _w(2, 3, k, k)}, (3, h, h), (2, o, o))


@SETTINGS
@given(c=st.integers(1, 3), g=st.sampled_from([1, 3]), length=st.integers(5, 12),
       k=st.integers(1, 4), s=st.integers(1, 2), d=st.integers(1, 2),
       pads=st.lists(st.integers(0, 2), min_size=2, max_size=2))  # fmt: skip
def test_conv1d(c, g, length, k, s, d, pads):
    ol = _out(length, pads[0], pads[1], k, s, d)
    node = helper.make_node("Conv", ["x", "W", "B"], ["y"], group=g, kernel_shape=[k],
                            strides=[s], dilations=[d], pads=pads)  # fmt: skip
    _check([node], {"W": _w(2 * g, c, k), "B": _w(2 * g, seed=3)}, (c * g, length), (2 * g, ol),
           net_too=True)  # fmt: skip


@SETTINGS
@given(op=st.sampled_from(["MaxPool", "AveragePool"]), k=st.integers(1, 3), s=st.integers(1, 3),
       p=st.integers(0, 1), h=st.integers(4, 9), cip=st.sampled_from([0, 1]))  # fmt: skip
def test_pools(op, k, s, p, h, cip):
    p = min(p, k // 2)
    o = _out(h, p, p, k, s, 1)
    attrs = {"count_include_pad": cip} if op == "AveragePool" else {}
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[k, k], strides=[s, s],
                            pads=[p, p, p, p], **attrs)  # fmt: skip
    _check([node], {}, (2, h, h), (2, o, o))


@SETTINGS
@given(ta=st.just(0), tb=st.sampled_from([0, 1]), alpha=st.floats(0.1, 2), beta=st.floats(0, 2),
       c_shape=st.sampled_from(["vec", "row", "none", "scalar"]))  # fmt: skip
def test_gemm(ta, tb, alpha, beta, c_shape):
    w = _w(5, 4) if tb else _w(4, 5)
    inits = {"B": w}
    if c_shape != "none":
        inits["C"] = {"vec": _w(5, seed=4), "row": _w(1, 5, seed=4),
                      "scalar": np.float32(0.7)}[c_shape]  # fmt: skip
    node = helper.make_node("Gemm", ["x", "B"] + (["C"] if "C" in inits else []), ["y"],
                            transB=tb, alpha=alpha, beta=beta)  # fmt: skip
    _check([node], inits, (4,), (5,), net_too=True)


ACTS = [
    ("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("LeakyRelu", {"alpha": 0.2}),
    ("Elu", {"alpha": 0.7}),
    ("Selu", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}),
    ("Softplus", {}), ("Mish", {}), ("Softmax", {"axis": -1}), ("LogSoftmax", {"axis": -1}),
    ("Gelu", {}), ("Gelu", {"approximate": "tanh"}),
]  # fmt: skip


@pytest.mark.parametrize("op,attrs", ACTS)
def test_activations(op, attrs):
    opset = 20 if op == "Gelu" else 18 if op == "Mish" else 17
    _check([helper.make_node(op, ["x"], ["y"], **attrs)], {}, (7,), (7,), opset, n=9,
           net_too=True)  # fmt: skip


@pytest.mark.parametrize("lo_,hi", [(0.0, None), (0.0, 6.0), (-1.0, 0.5), (None, 0.3)])
def test_clip(lo_, hi):
    inits = {"lo": np.float32(lo_ if lo_ is not None else -np.inf)}
    ins = ["x", "lo"]
    if hi is not None:
        inits["hi"] = np.float32(hi)
        ins.append("hi")
    _check([helper.make_node("Clip", ins, ["y"])], inits, (6,), (6,), net_too=True)


def _formula(kind):
    """GELU written out as exporters do (x * 0.5 * (1 + erf(x / sqrt 2)), or tanh form)."""
    if kind == "erf":
        nodes = [helper.make_node("Div", ["x", "r2"], ["a"]), helper.make_node("Erf", ["a"], ["b"]),
                 helper.make_node("Add", ["b", "one"], ["c"]),
                 helper.make_node("Mul", ["x", "c"], ["d"]),
                 helper.make_node("Mul", ["d", "half"], ["y"])]  # fmt: skip
        return nodes, {"r2": np.float32(2**0.5), "one": np.float32(1), "half": np.float32(0.5)}
    nodes = [helper.make_node("Pow", ["x", "three"], ["a"]),
             helper.make_node("Mul", ["a", "k"], ["b"]), helper.make_node("Add", ["x", "b"], ["c"]),
             helper.make_node("Mul", ["c", "s"], ["d"]), helper.make_node("Tanh", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["f"]),
             helper.make_node("Mul", ["x", "half"], ["g"]),
             helper.make_node("Mul", ["g", "f"], ["y"])]  # fmt: skip
    return nodes, {"three": np.float32(3), "k": np.float32(0.044715),
                   "s": np.float32((2 / np.pi) ** 0.5), "one": np.float32(1),
                   "half": np.float32(0.5)}  # fmt: skip


@pytest.mark.parametrize("kind", ["erf", "tanh"])
def test_gelu_formulas_after_a_dense(kind):
    nodes, inits = _formula(kind)
    nodes[0].input[0] = "h"
    for n in nodes:
        n.input[:] = ["h" if i == "x" else i for i in n.input]
    dense = helper.make_node("MatMul", ["x", "W"], ["h"])
    _check([dense, *nodes], {**inits, "W": _w(4, 6)}, (4,), (6,), n=7)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_then_conv(mode):
    pads = np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)
    nodes = [helper.make_node("Pad", ["x", "pads", "v"], ["p"], mode=mode),
             helper.make_node("Conv", ["p", "W"], ["y"], kernel_shape=[3, 3])]  # fmt: skip
    _check(nodes, {"pads": pads, "v": np.float32(0.5), "W": _w(2, 2, 3, 3)}, (2, 5, 5),
           (2, 6, 6), net_too=True)  # fmt: skip


def test_norms_and_affine_constants():
    nodes = [
        helper.make_node("Sub", ["x", "mu"], ["a"]), helper.make_node("Div", ["a", "sd"], ["b"]),
        helper.make_node("Gemm", ["b", "W", "c"], ["h"], transB=1),
        helper.make_node("BatchNormalization", ["h", "g", "be", "m", "v"], ["n"], epsilon=1e-3),
        helper.make_node("Mul", ["n", "sc"], ["n2"]),
        helper.make_node("LayerNormalization", ["n2", "g", "be"], ["y"], epsilon=1e-4),
    ]  # fmt: skip
    inits = {"mu": _w(4), "sd": np.abs(_w(4, seed=2)) + 0.5, "W": _w(6, 4), "c": _w(6, seed=3),
             "g": _w(6, seed=4), "be": _w(6, seed=5), "m": _w(6, seed=6),
             "v": np.abs(_w(6, seed=7)) + 0.5, "sc": np.float32(1.5)}  # fmt: skip
    _check(nodes, inits, (4,), (6,), n=5, net_too=True)


def test_views_that_cancel_out():
    nodes = [
        helper.make_node("Unsqueeze", ["x", "ax"], ["a"]),
        helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Transpose", ["b"], ["c"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Squeeze", ["c", "ax"], ["d"]),
        helper.make_node("Conv", ["d", "W"], ["e"], kernel_shape=[1, 3]),
        helper.make_node("Reshape", ["e", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "G"], ["y"]),
    ]  # fmt: skip
    inits = {"ax": np.array([1], np.int64), "W": _w(3, 2, 1, 3), "shape": np.array([0, -1]),
             "G": _w(15, 4, seed=5)}  # fmt: skip
    _check(nodes, inits, (2, 1, 7), (4,), net_too=True)


def test_reshape_that_splits_an_axis_is_refused():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    with pytest.raises(Exception, match="splits an axis"):
        _check(nodes, {"shape": np.array([0, 2, 3])}, (6,), (2, 3))


@pytest.mark.parametrize("op", ["GRU", "LSTM", "RNN"])
def test_bidirectional_with_sequence_lengths(op):
    """sequence_lens as a model input of its own: the runtime's predict(x, lengths=)."""
    g = {"GRU": 3, "LSTM": 4, "RNN": 1}[op]
    t, f, u = 6, 3, 4
    attrs = {"hidden_size": u, "direction": "bidirectional"}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node(op, ["xt", "W", "R", "B", "lens"], ["Y", "Yh"], **attrs),
        helper.make_node("Transpose", ["Yh"], ["h"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["h", "shape"], ["y"]),
    ]  # fmt: skip
    inits = {"W": _w(2, g * u, f), "R": _w(2, g * u, u, seed=2), "B": _w(2, 2 * g * u, seed=3),
             "shape": np.array([0, -1])}  # fmt: skip
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", t, f]),
         helper.make_tensor_value_info("lens", TensorProto.INT32, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2 * u])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )  # fmt: skip
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = data.SerializeToString()
    x = np.random.default_rng(0).standard_normal((5, t, f)).astype(np.float32)
    lens = np.array([6, 1, 3, 2, 5], np.int32)
    ref = ort.InferenceSession(data).run(None, {"x": x, "lens": lens})[0]
    manifest, arrays, report = lo.onnx_to_manifest(data)
    assert report["lengths_input"] == "lens"
    got = runtime.from_manifest(manifest, arrays).predict(x, lengths=lens)
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)


@SETTINGS
@given(op=st.sampled_from(["Add", "Sub", "Mul", "Div"]), data_first=st.booleans(),
       image=st.booleans(), form=st.sampled_from(["scalar", "one", "channel", "full-rank"]),
       after_gemm=st.booleans())  # fmt: skip
def test_arithmetic_by_broadcast_constants(op, data_first, image, form, after_gemm):
    """x op c and c op x with c a scalar, a (1,) vector, one value per channel ((C,) on
    (N, C); (C, 1, 1) on (N, C, H, W)) or that at full rank ((1, C) / (1, C, 1, 1)); after a
    Gemm (folded into its bias where it can be) or on the input."""
    if op == "Div" and not data_first:
        data_first = True  # dividing by the data is refused (tested below)
    c = 3
    in_shape = (c, 4, 5) if image else (c,)
    shape = {"scalar": (), "one": (1,), "channel": (c, 1, 1) if image else (c,),
             "full-rank": (1, c, 1, 1) if image else (1, c)}[form]  # fmt: skip
    k = np.abs(_w(*shape, seed=9)) + 0.5 if op == "Div" else _w(*shape, seed=9)
    nodes, inits, src = [], {"k": np.asarray(k, np.float32)}, "x"
    if after_gemm and not image:
        nodes.append(helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1))
        inits.update(W=_w(c, c), b=_w(c, seed=4))
        src = "h"
    ins = [src, "k"] if data_first else ["k", src]
    nodes.append(helper.make_node(op, ins, ["y"]))
    _check(nodes, inits, in_shape, in_shape, n=4, net_too=True)


def test_dividing_by_the_data_is_refused():
    nodes = [helper.make_node("Div", ["k", "x"], ["y"])]
    with pytest.raises(ModelFormatError, match="dividing by the data"):
        _check(nodes, {"k": np.float32(2)}, (3,), (3,))
