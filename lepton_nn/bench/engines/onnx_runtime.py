"""ONNX Runtime's cases: an ``InferenceSession`` on an MLP graph (W5), on the W3 CNN / W4 LSTM /
GRU exported by ``lepton_nn.onnx.export`` (W8) and on a one-node ``MatMulInteger`` graph (W6);
the W5 and W6 graphs are built with ``onnx.helper``. onnx and onnxruntime are imported inside
each function only."""

from __future__ import annotations

import numpy as np

from ..cases import THREADS, Case, cycle
from ..workloads import (
    MATMUL_K,
    MATMUL_N,
    glorot_weights,
    inference_data,
    matmul_data,
    net_inference_data,
    net_weights,
)


def onnx_mlp_bytes(weights) -> bytes:
    """An ONNX graph of the MLP (MatMul, Add, Relu), built directly with ``onnx.helper``."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, h = [], [], "x"
    for k, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w, f"W{k}"), numpy_helper.from_array(b, f"b{k}")]
        nodes.append(helper.make_node("MatMul", [h, f"W{k}"], [f"m{k}"]))
        nodes.append(helper.make_node("Add", [f"m{k}", f"b{k}"], [f"z{k}"]))
        h = f"z{k}"
        if k < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [h], [f"h{k}"]))
            h = f"h{k}"
    n_in, n_out = weights[0][0].shape[0], weights[-1][0].shape[1]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["N", n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def ort_session(model: bytes | str, threads: int):
    """A CPU ``InferenceSession`` of ``model`` with intra/inter-op threads set."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = threads
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def onnx_matmulinteger_bytes(w_q: np.ndarray, zero_point: int = 128, unsigned_b=False) -> bytes:
    """``Y = MatMulInteger(A, B, a_zero_point[, b_zero_point])``: A uint8 (M, K) input, B =
    ``w_q.T`` an int8 (K, N) initializer, int32 out; built with ``onnx.helper``. With
    ``unsigned_b`` B is stored as uint8 ``w_q.T + 128`` with zero point 128: the same product
    through ONNX Runtime's u8u8 kernel."""
    from onnx import TensorProto, helper, numpy_helper

    k, n = w_q.shape[1], w_q.shape[0]
    b = np.ascontiguousarray(w_q.T)
    inputs = ["A", "B", "a_zp"]
    inits = [numpy_helper.from_array(np.array(zero_point, np.uint8), "a_zp")]
    if unsigned_b:
        b = (b.astype(np.int16) + 128).astype(np.uint8)
        inputs.append("b_zp")
        inits.append(numpy_helper.from_array(np.array(128, np.uint8), "b_zp"))
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", inputs, ["Y"])],
        "qmm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, ["M", k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, ["M", n])],
        initializer=[numpy_helper.from_array(b, "B"), *inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _matmul(workload, m) -> list[Case]:
    """ONNX Runtime's u8s8 kernel when it is exact on this CPU; otherwise (some releases
    saturate int16 sums of u8 x s8 pairs, as ``vpmaddubsw`` does) the u8u8 form of the same
    product, and the description says so."""
    d = matmul_data(m)
    feed = {"A": d["x_q"]}
    rows = min(m, 4)
    want = (d["x_q"][:rows].astype(np.int64) - 128) @ d["w_q"].T.astype(np.int64)
    how = "int8 B initializer"
    for unsigned_b in (False, True):
        sess = ort_session(onnx_matmulinteger_bytes(d["w_q"], unsigned_b=unsigned_b), THREADS["n"])
        if np.array_equal(sess.run(None, feed)[0][:rows], want):
            break
        how = "uint8 B initializer (w_q + 128, zero point 128): the int8 B kernel is inexact here"
    else:
        raise AssertionError("MatMulInteger disagrees with the int64 reference")
    return [
        Case(
            workload,
            "onnxruntime",
            "MatMulInteger",
            "`InferenceSession.run` of a one-node `MatMulInteger` graph (onnx.helper): uint8 A "
            f"(zero point 128) x {how} -> int32, CPU provider, threads set",
            2 * m * MATMUL_K * MATMUL_N,
            step=lambda i: sess.run(None, feed),
            unit="op",
        )
    ]


def _inference(workload, spec_batch) -> list[Case]:
    spec, batch = spec_batch
    xs = cycle(inference_data(spec, batch))
    nb = len(xs)
    sess = ort_session(onnx_mlp_bytes(glorot_weights(spec.sizes)), THREADS["n"])
    return [
        Case(
            workload,
            "onnxruntime",
            "InferenceSession",
            "`InferenceSession.run` on an ONNX graph (MatMul/Add/Relu built with onnx.helper), "
            "CPU provider, default graph optimizations, intra/inter-op threads set",
            batch,
            step=lambda i: sess.run(None, {"x": xs[i % nb]}),
            latency=batch == 1,
        )
    ]


def _net_inference(workload, spec_batch) -> list[Case]:
    """W8: the lepton_nn network on the workload's weights, exported with
    ``lepton_nn.onnx.export`` (dynamic batch), run by an ``InferenceSession``; its output is
    checked against the lepton_nn model's on the first batch before any timing."""
    import tempfile

    from lepton_nn.autograd import no_grad
    from lepton_nn.onnx import export

    from .lepton import lepton_net

    spec, batch = spec_batch
    xs = cycle(net_inference_data(spec, batch))
    nb = len(xs)
    model = lepton_net(spec, net_weights(spec))
    model.eval()
    with no_grad():
        want = model(xs[0]).data
    with tempfile.TemporaryDirectory(prefix="lepton-bench-") as tmp:
        proto = export(model, f"{tmp}/net.onnx", example_input=xs[0])
    sess = ort_session(proto.SerializeToString(), THREADS["n"])
    name = sess.get_inputs()[0].name
    err = float(np.max(np.abs(sess.run(None, {name: xs[0]})[0] - want)))
    if err > 1e-3:
        raise AssertionError(f"ONNX Runtime's output differs from lepton_nn's by {err:.2e}")
    return [
        Case(
            workload,
            "onnxruntime",
            "InferenceSession",
            "`InferenceSession.run` on the network exported by `lepton_nn.onnx.export` from the "
            "same weights (Conv/Relu/MaxPool/Flatten/Gemm, or Transpose + one LSTM/GRU node + "
            "Gemm), CPU provider, default graph optimizations, intra/inter-op threads set",
            batch,
            step=lambda i: sess.run(None, {name: xs[i % nb]}),
            latency=batch == 1,
        )
    ]


BUILDERS = {"inference": _inference, "net inference": _net_inference, "matmul": _matmul}
