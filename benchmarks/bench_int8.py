"""W6 int8 matmul: (M, 1024) x (1024, 1024), M in 1, 64, 256, 1024.

float32 NumPy (BLAS sgemm) against our int8 kernels on every ISA path usable here (the fused
qlinear: int32 sum + dequantize + bias, activations already uint8; on 1 and 2 threads), the
raw qgemm_s32, the whole dynamic int8 Dense (quantize_rows + qlinear), and, when installed,
ONNX Runtime's MatMulInteger and PyTorch dynamic quantization (quantize_dynamic of an
nn.Linear). Operands (one weight, quantized once) and the engines' cases are defined in
``lepton_nn/bench/`` (``workloads.matmul_data``; the W6 cases in ``engines/``). GOP/s =
2 M K N / median is stored in each result's extra_info. For the side-by-side report run
``lepton-nn bench --workloads W6``.

    python -m pytest benchmarks/bench_int8.py --benchmark-columns=median,ops
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from workloads import MATMUL, MATMUL_K, MATMUL_N, case, lepton_backends, matmul_data, record_rate

q = pytest.importorskip("lepton_nn.kernels._qgemm")
pytest.importorskip("pytest_benchmark")

MS = tuple(MATMUL.values())
VARIANTS = [
    ("numpy", "float32 matmul"),
    (f"lepton:{lepton_backends()[0]}", "qgemm_s32"),
    (f"lepton:{lepton_backends()[0]}", "dynamic int8 Dense"),
    ("onnxruntime", "MatMulInteger"),
    ("torch", "dynamic quantization"),
]


def _gops(benchmark, M):
    record_rate(benchmark, 2 * M * MATMUL_K * MATMUL_N, "GOP/s", 1e-9)


@pytest.mark.parametrize("M", MS)
@pytest.mark.parametrize(("engine", "variant"), VARIANTS, ids=[f"{e}-{v}" for e, v in VARIANTS])
def test_matmul(benchmark, engine, variant, M):
    if engine == "lepton:reference":
        pytest.skip("the int8 kernels need a compiled backend")
    c = case(engine, f"W6m{M}", variant)
    counter = itertools.count()
    benchmark.group = f"int8 M={M}"
    benchmark(lambda: c.step(next(counter)))
    _gops(benchmark, M)


@pytest.fixture(scope="module")
def packed():
    out = {M: matmul_data(M) for M in MS}
    w_packed, col_sums = q.pack_weights(out[MS[0]]["w_q"])  # the same weight for every M
    return out, w_packed, col_sums


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("isa", q.supported_isas())
@pytest.mark.parametrize("M", MS)
def test_lepton_qlinear(benchmark, packed, M, isa, threads):
    """The fused qlinear on each ISA path the CPU has, 1 and 2 threads."""
    if threads == 2 and M < 64:
        pytest.skip("2 threads only for M >= 64")
    data, w_packed, col_sums = packed
    d = data[M]
    out = np.empty((M, MATMUL_N), np.float32)
    args = (d["x_q"], np.float32(0.02), 128, w_packed, d["w_scale"], col_sums, d["bias"], 1, out)
    before = q.isa()
    q.set_isa(isa)
    try:
        benchmark.group = f"int8 M={M}"
        benchmark(q.qlinear, *args, nthreads=threads)
    finally:
        q.set_isa(before)
    _gops(benchmark, M)
