"""int8 matmul: (M, 1024) x (1024, 1024), M in 1, 64, 256, 1024.

float32 NumPy (OpenBLAS sgemm) against our int8 kernels on every ISA path usable here
(the fused qlinear: int32 sum + dequantize + bias + relu, activations already uint8; on
1 and 2 threads), the raw qgemm_s32, and, when installed, ONNX Runtime's MatMulInteger and
PyTorch dynamic quantization (quantize_dynamic of an nn.Linear). GOP/s = 2 M K N / median
is stored in each result's extra_info.

    python -m pytest benchmarks/bench_int8.py --benchmark-columns=median,ops
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

q = pytest.importorskip("lepton_nn.kernels._qgemm")

K = N = 1024
MS = (1, 64, 256, 1024)


def _gops(benchmark, M):
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["GOP/s"] = round(2 * M * K * N / stats.stats.median / 1e9, 1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((N, K)) / 32).astype(np.float32)
    w_q, w_scale = q.quantize_weights(W)
    w_packed, col_sums = q.pack_weights(w_q)
    bias = rng.standard_normal(N).astype(np.float32)
    xs = {M: rng.standard_normal((M, K)).astype(np.float32) for M in MS}
    x_q = {M: rng.integers(0, 256, (M, K)).astype(np.uint8) for M in MS}
    return W, w_q, w_scale, w_packed, col_sums, bias, xs, x_q


@pytest.mark.parametrize("M", MS)
def test_float32_numpy(benchmark, data, M):
    W, *_, xs, _ = data
    Wt = np.ascontiguousarray(W.T)
    benchmark.group = f"int8 M={M}"
    benchmark(np.matmul, xs[M], Wt)
    _gops(benchmark, M)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("isa", q.supported_isas())
@pytest.mark.parametrize("M", MS)
def test_lepton_qlinear(benchmark, data, M, isa, threads):
    if threads == 2 and M < 64:
        pytest.skip("2 threads only for M >= 64")
    _, _, w_scale, w_packed, col_sums, bias, _, x_q = data
    out = np.empty((M, N), np.float32)
    before = q.isa()
    q.set_isa(isa)
    try:
        benchmark.group = f"int8 M={M}"
        benchmark(
            q.qlinear,
            x_q[M],
            np.float32(0.02),
            128,
            w_packed,
            w_scale,
            col_sums,
            bias,
            1,
            out,
            nthreads=threads,
        )
    finally:
        q.set_isa(before)
    _gops(benchmark, M)


@pytest.mark.parametrize("M", MS)
def test_lepton_dynamic_quantize_plus_qlinear(benchmark, data, M):
    """The whole dynamic int8 Dense: quantize_rows + qlinear (best ISA, 1 thread)."""
    _, _, w_scale, w_packed, col_sums, bias, xs, _ = data
    x_q, sc, zp = np.empty((M, K), np.uint8), np.empty(M, np.float32), np.empty(M, np.int32)
    out = np.empty((M, N), np.float32)

    def run():
        q.quantize_rows(xs[M], x_q, sc, zp)
        return q.qlinear(x_q, sc, zp, w_packed, w_scale, col_sums, bias, 1, out)

    benchmark.group = f"int8 M={M}"
    benchmark(run)
    _gops(benchmark, M)


@pytest.mark.parametrize("M", MS)
def test_lepton_qgemm_s32(benchmark, data, M):
    _, _, _, w_packed, _, _, _, x_q = data
    out = np.empty((M, N), np.int32)
    benchmark.group = f"int8 M={M}"
    benchmark(q.qgemm_s32, x_q[M], w_packed, out)
    _gops(benchmark, M)


@pytest.mark.parametrize("M", MS)
def test_onnxruntime_matmulinteger(benchmark, data, M):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    _, w_q, *_, x_q = data
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "a_zp"], ["Y"])],
        "qmm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [M, K])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [M, N])],
        initializer=[
            helper.make_tensor(
                "B", TensorProto.INT8, [K, N], np.ascontiguousarray(w_q.T).tobytes(), raw=True
            ),
            helper.make_tensor("a_zp", TensorProto.UINT8, [], [128]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"A": x_q[M]}
    want = (x_q[M].astype(np.int64) - 128) @ w_q.T.astype(np.int64)
    np.testing.assert_array_equal(sess.run(None, feed)[0], want)
    benchmark.group = f"int8 M={M}"
    benchmark(sess.run, None, feed)
    _gops(benchmark, M)


@pytest.mark.parametrize("M", MS)
def test_torch_dynamic_quantization(benchmark, data, M):
    torch = pytest.importorskip("torch")
    W, *_, xs, _ = data
    lin = torch.nn.Linear(K, N)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
    try:  # deprecated in torch 2.9+, gone in later releases
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qlin = torch.ao.quantization.quantize_dynamic(
                torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8
            )
    except (AttributeError, ImportError, RuntimeError) as exc:
        pytest.skip(f"torch dynamic quantization unavailable: {exc}")
    x = torch.from_numpy(xs[M])

    def run():
        with torch.no_grad():
            return qlin(x)

    benchmark.group = f"int8 M={M}"
    benchmark(run)
    _gops(benchmark, M)
