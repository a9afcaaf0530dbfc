"""NaN in the int8 recurrent kernel (``recurrent_q8_forward``, kernels/csrc/recurrent_q8.h)
stays NaN, as in its pure-NumPy twin (lepton_nn/backend/recurrent_q8.py on the reference
backend): a NaN in a row's state (the initial state, or one a NaN input scale made) gives
that row a NaN scale when the state is quantized (NumPy's x.min() is NaN), so its products
and every later state are NaN. The AVX2 quantizer's vminps / vmaxps dropped the NaN: the
row's scale stayed finite, the NaN state was quantized to 0, and an LSTM's or SimpleRNN's
state came back finite one step later. The runtime refuses NaN inputs; streams' states,
training-time states and direct kernel calls do not.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_recurrent_q8 import GATES, REF, _case  # the same weights and quantized x

import lepton_nn.backend as backend
from lepton_nn.backend.reference import ReferenceBackend


def _run(fn, cell, args, b, u, nan_state, reverse, mask):
    """All steps from a state with NaN at ``nan_state`` (row, unit) pairs; returns (h, c)."""
    t = args[0].shape[0]
    h = np.zeros((t + 1, b, u), np.float32)  # every step's state kept
    c = np.zeros((2, b, u), np.float32) if cell == "LSTM" else None
    first = t if reverse else 0
    h[first] = np.linspace(-0.9, 0.8, b * u).reshape(b, u)
    for row, unit, value in nan_state:
        h[first, row, unit] = value
    if c is not None:
        c[first % 2] = -0.5
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the twin's NaN zero point cast to int32
        fn(cell, *args, h, c, mask, 0, b, reverse)
    return h, c


@pytest.mark.parametrize("name", backend.available())
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize(("u", "b"), [(21, 10), (16, 7), (3, 1)])
@pytest.mark.parametrize("reverse", [False, True])
def test_nan_state_and_nan_scale_propagate_like_the_twin(name, cell, u, b, reverse):
    """NaN (both signs) in the initial state at a full-vector and at a tail unit, and a NaN
    input scale at one step of another row; a mask keeps one NaN row's state at a step:
    the kernel's NaN states are the twin's, step by step, and the rest agree to rounding."""
    t, f = 6, 5
    xq, xs, xzp, packed = _case(REF, cell, t, b, f, u)
    xs = xs.copy()
    nan_state = [(0, u - 1, np.nan)]  # the last unit: a tail lane when u % 8
    if b > 2:
        nan_state.append((2, 0, np.copysign(np.float32(np.nan), -1)))
        xs[3 * b + b - 1] = np.nan  # the last row's x at step 3
    mask = np.ones((t, b), np.float32)
    mask[2, 0] = 0  # row 0 keeps its (NaN) state at step 2
    args = (xq, xs, xzp, packed)
    want = _run(lambda *a: ReferenceBackend.recurrent_q8_forward(REF, *a), cell, args, b, u,
                nan_state, reverse, mask)  # fmt: skip
    with backend.use_backend(name) as be:
        got = _run(be.recurrent_q8_forward, cell, args, b, u, nan_state, reverse, mask)
    h_want = want[0]
    assert np.isnan(h_want[t if not reverse else 0, 0]).all()  # the twin: row 0 all NaN at the end
    for g, w in zip(got, want, strict=True):
        if w is None:
            continue
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{name} {cell}")
        ok = ~np.isnan(w)
        np.testing.assert_allclose(g[ok], w[ok], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", backend.available())
def test_dynamic_quantize_rows_gives_a_nan_row_a_nan_scale(name):
    """quantize_rows (the per-step int8 path's and qlinear's activation quantizer): a row
    holding a NaN (any position: SIMD body or tail, either sign) gets scale NaN, zero point
    0 and q 0, as the twin's; the other rows are untouched by it. Every ISA of the compiled
    one (its vminps / vmaxps dropped the NaN: a finite scale, the NaN read as 0)."""
    from lepton_nn.kernels import _qgemm as q

    rng = np.random.default_rng(4)
    for k in (1, 7, 8, 21, 40):
        for pos in sorted({0, k // 2, k - 1}):
            x = rng.standard_normal((4, k)).astype(np.float32)
            x[1, pos] = np.nan
            x[3, pos] = np.copysign(np.float32(np.nan), -1)
            want = [np.zeros((4, k), np.uint8), np.zeros(4, np.float32), np.zeros(4, np.int32)]
            REF.quantize_rows(x, *want)
            assert np.isnan(want[1][[1, 3]]).all() and (want[2][[1, 3]] == 0).all()
            assert (want[0][[1, 3]] == 0).all() and np.isfinite(want[1][[0, 2]]).all()
            isas = q.supported_isas() if name == "cython" else [None]
            for isa in isas:
                before = q.isa()
                if isa is not None:
                    q.set_isa(isa)
                try:
                    got = [np.zeros_like(a) for a in want]
                    backend._instance(name).quantize_rows(x, *got)
                finally:
                    q.set_isa(before)
                for g, w in zip(got, want, strict=True):
                    np.testing.assert_array_equal(g, w, err_msg=f"{name} {isa} k={k} pos={pos}")


def test_the_compiled_per_step_path_keeps_nan_too():
    """The cython kernel with its SIMD off runs the twin on the compiled quantize_rows,
    qlinear and step kernels (as on a CPU without AVX2): the same NaN states."""
    _recurrent = pytest.importorskip("lepton_nn.kernels._recurrent")
    if "cython" not in backend.available():
        pytest.skip("no compiled backend")
    _recurrent.use_simd(False)
    try:
        for cell in GATES:
            test_nan_state_and_nan_scale_propagate_like_the_twin("cython", cell, 21, 10, False)
    finally:
        _recurrent.use_simd(True)
