"""ONNX Runtime's cases: an ``InferenceSession`` on an MLP graph (W5) and on a one-node
``MatMulInteger`` graph (W6); graphs are built with ``onnx.helper``. onnx and onnxruntime are
imported inside each function only."""

from __future__ import annotations

import numpy as np

from ..cases import THREADS, Case, cycle
from ..workloads import MATMUL_K, MATMUL_N, glorot_weights, inference_data, matmul_data


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


def onnx_matmulinteger_bytes(w_q: np.ndarray, zero_point: int = 128) -> bytes:
    """``Y = MatMulInteger(A, B, a_zero_point)``: A uint8 (M, K) input, B int8 (K, N) =
    ``w_q.T`` an initializer, int32 out; built with ``onnx.helper``."""
    from onnx import TensorProto, helper, numpy_helper

    k, n = w_q.shape[1], w_q.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "a_zp"], ["Y"])],
        "qmm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, ["M", k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, ["M", n])],
        initializer=[
            numpy_helper.from_array(np.ascontiguousarray(w_q.T), "B"),
            numpy_helper.from_array(np.array(zero_point, np.uint8), "a_zp"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _matmul(workload, m) -> list[Case]:
    d = matmul_data(m)
    sess = ort_session(onnx_matmulinteger_bytes(d["w_q"]), THREADS["n"])
    feed = {"A": d["x_q"]}
    rows = min(m, 4)
    want = (d["x_q"][:rows].astype(np.int64) - 128) @ d["w_q"].T.astype(np.int64)
    if not np.array_equal(sess.run(None, feed)[0][:rows], want):
        raise AssertionError("MatMulInteger disagrees with the int64 reference")
    return [
        Case(
            workload,
            "onnxruntime",
            "MatMulInteger",
            "`InferenceSession.run` of a one-node `MatMulInteger` graph (onnx.helper): uint8 A "
            "(zero point 128) x int8 B initializer -> int32, CPU provider, threads set",
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


BUILDERS = {"inference": _inference, "matmul": _matmul}
