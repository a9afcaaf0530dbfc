"""Every dense kernel, on every available backend, against its NumPy reference twin.

Also: backend selection (``info``, ``use_backend``, ``LEPTON_BACKEND``) and the promise that
importing the backend package does not import Numba.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import PKG_PARENT

import lepton_nn.backend as backend
from lepton_nn.backend.reference import ACTIVATIONS, GELU, ReferenceBackend

ROOT = PKG_PARENT  # where the imported lepton_nn lives
REF = ReferenceBackend()
BACKENDS = backend.available()
DTYPES = [np.float32, np.float64]
SHAPES = [(7, 13), (1, 1), (65, 129), (0, 5), (3, 1037)]
ACT_SHAPES = [*SHAPES, (4, 0)]  # softmax needs C >= 1 (a label must exist)
# (images, channels, pixels): a convolution's output, one bias per channel plane
ACT_SHAPES += [(3, 4, 37), (2, 3, 1), (2, 5, 16), (1, 2, 0)]
ACTS = list(range(len(ACTIVATIONS)))
DENSE_KERNELS = [
    "bias_act_forward",
    "bias_act_backward",
    "softmax_xent_forward",
    "softmax_xent_backward",
    "adam_step",
]


@pytest.fixture(params=BACKENDS)
def be(request):
    with backend.use_backend(request.param) as b:
        yield b


def tol(dtype, scale=1.0):
    """assert_allclose tolerances for one dtype; scale widens atol for ill-conditioned math."""
    if dtype == np.float32:
        return {"rtol": 2e-5, "atol": 2e-6 * scale}
    return {"rtol": 1e-12, "atol": 1e-14 * scale}


def data(shape, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(dtype)


# -- the runtime's input check -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 784, 4099])
def test_all_finite(be, dtype, n):
    """np.isfinite(x).all() on every backend: inf, -inf, NaN (also with a sign bit and a
    payload) anywhere make it False; the largest finite value and subnormals do not; strided
    views too."""
    fi = np.finfo(dtype)
    x = data((n,), dtype)
    assert be.all_finite(x) is True
    specials = [np.inf, -np.inf, np.nan, -np.nan]
    nan_payload = np.array([0x7FC00001 if dtype == np.float32 else 0x7FF8000000000001])
    specials.append(
        nan_payload.astype(np.uint32 if dtype == np.float32 else np.uint64).view(dtype)[0]
    )
    for k, v in enumerate(specials if n else []):
        y = x.copy()
        y[(k * 7919) % n] = v
        assert be.all_finite(y) is False, (v, k)
        assert be.all_finite(y.reshape(1, n)) is False
        assert be.all_finite(np.repeat(y, 2)[::2]) is False  # a strided view
    for v in (fi.max, -fi.max, fi.tiny / 4, -0.0):
        y = x.copy()
        y[n // 2 if n else 0 : n // 2 + 1] = v
        assert be.all_finite(y) is True


@pytest.mark.parametrize("dtype", DTYPES)
def test_input_rows_gate(be, dtype):
    """The runtime's one-call input gate, on every backend and against the reference: n for a
    C-contiguous finite array of the dtype and per-sample shape, -2 for such an array with an
    inf or NaN anywhere, -1 for anything that is not exactly that array (the caller converts
    it: other dtype, shape, rank, a strided view, a list, a subclass)."""
    num = np.dtype(dtype).num
    other = np.dtype(np.float64 if dtype == np.float32 else np.float32).num
    x = data((5, 3, 4), dtype)
    cases = [
        (x, num, (3, 4), 5),
        (x[:0], num, (3, 4), 0),
        (x, other, (3, 4), -1),
        (x, num, (4, 3), -1),
        (x, num, (12,), -1),
        (x.reshape(5, 12), num, (12,), 5),
        (x[:, :, ::2], num, (3, 2), -1),
        (x.tolist(), num, (3, 4), -1),
        (x.astype(np.float16), np.dtype(np.float16).num, (3, 4), -1),
        (x.astype(np.int32), np.dtype(np.int32).num, (3, 4), -1),
        (x.view(np.recarray), num, (3, 4), -1),
        (x[0], num, (4,), 3),
    ]
    for v in (np.inf, -np.inf, np.nan):
        y = x.copy()
        y[3, 2, 1] = v
        cases += [(y, num, (3, 4), -2), (y[:3], num, (3, 4), 5 - 2), (y[3:], num, (3, 4), -2)]
    for arr, typenum, shape, want in cases:
        assert be.input_rows(arr, typenum, shape) == want, (typenum, shape, want)
        assert REF.input_rows(arr, typenum, shape) == want, (typenum, shape, want)


def test_fresh_copy_is_a_copy_the_plan_cannot_touch(be):
    """The runtime hands back a plan's reused output through ``fresh_copy``: on every backend,
    for contiguous arrays of the compiled path's dtypes and for what falls back to
    ``a.copy()`` (strided, 0-d, empty, float16, bool), a new C-contiguous, writeable array
    owning its memory, with the same dtype, shape and bits, that later writes to the source
    do not change (and the other way round)."""
    x = data((3, 4, 5), np.float64)
    cases = [x.astype(d) for d in (np.float32, np.float64, np.int64, np.int32, np.int8, np.uint8)]
    cases += [x.astype(np.float32)[:, ::2], np.array(2.5, np.float32), x[:0], x > 0]
    cases += [x.astype(np.float16), np.full((1, 10), np.nan, np.float32)]
    for a in cases:
        got = be.fresh_copy(a)
        assert type(got) is np.ndarray and got is not a and not np.shares_memory(got, a)
        assert got.dtype == a.dtype and got.shape == a.shape, (got.dtype, got.shape)
        assert got.flags.c_contiguous and got.flags.owndata and got.flags.writeable
        assert got.tobytes() == a.tobytes()  # the same bits (NaN included)
        before = got.copy()
        if a.size:
            a.reshape(-1)[:1] = 0 if a.dtype != bool else ~a.reshape(-1)[:1]
        np.testing.assert_array_equal(got, before)


# -- bias + activation ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ACT_SHAPES)
@pytest.mark.parametrize("act", ACTS, ids=ACTIVATIONS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_bias_act_forward(be, dtype, shape, act, with_bias, inplace):
    z = data(shape, dtype)
    bias = data(shape[1], dtype, seed=1) if with_bias else None
    want = REF.bias_act_forward(z, bias, act, np.empty_like(z))
    out = z.copy() if inplace else np.full_like(z, np.nan)
    got = be.bias_act_forward(out if inplace else z, bias, act, out)
    assert got is out and got.dtype == dtype
    np.testing.assert_allclose(got, want, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ACT_SHAPES)
@pytest.mark.parametrize("act", ACTS, ids=ACTIVATIONS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("with_gbias", [True, False], ids=["gbias", "nogbias"])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_bias_act_backward(be, dtype, shape, act, with_bias, with_gbias, inplace):
    m = shape[1]
    n = int(np.prod(shape)) // max(m, 1)  # terms in each entry of gbias
    z = data(shape, dtype)
    bias = data(m, dtype, seed=1) if with_bias else None
    y = REF.bias_act_forward(z, bias, act, np.empty_like(z))
    gy = data(shape, dtype, seed=2, scale=1.0)
    want_gz, want_gb = REF.bias_act_backward(
        gy, y, z, bias, act, np.empty_like(z), np.empty(m, dtype) if with_gbias else None
    )
    gz = gy.copy() if inplace else np.full_like(z, np.nan)
    gbias = np.full(m, np.nan, dtype) if with_gbias else None
    got_gz, got_gb = be.bias_act_backward(gz if inplace else gy, y, z, bias, act, gz, gbias)
    assert got_gz is gz and got_gb is gbias
    # gelu' = 0.5 (1 + t) + 0.5 s (1 - t^2) C (1 + 3 A s^2): 1 - t^2 cancels for large s, and
    # the s^3 factor magnifies that rounding in both implementations alike
    scale = 10.0 if act == GELU else 1.0
    np.testing.assert_allclose(got_gz, want_gz, **tol(dtype, scale))
    if with_gbias:  # a sum over n rows: rounding grows like sqrt(n)
        np.testing.assert_allclose(got_gb, want_gb, **tol(dtype, scale * max(n, 1) ** 0.5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS, ids=ACTIVATIONS)
def test_bias_act_extreme_inputs(be, dtype, act):
    """Large |z|: sigmoid/tanh/gelu saturate without overflow, NaN or warnings."""
    z = np.array([[-1000.0, -100.0, -30.0, -1e-6, 0.0, 1e-6, 30.0, 100.0, 1000.0]], dtype)
    want = REF.bias_act_forward(z, None, act, np.empty_like(z))
    got = be.bias_act_forward(z, None, act, np.empty_like(z))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, **tol(dtype))
    gy = np.ones_like(z)
    want_gz, _ = REF.bias_act_backward(gy, want, z, None, act, np.empty_like(z), None)
    got_gz, _ = be.bias_act_backward(gy, got, z, None, act, np.empty_like(z), None)
    np.testing.assert_allclose(got_gz, want_gz, **tol(dtype))


# -- softmax cross-entropy --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_xent_forward(be, dtype, shape):
    n, c = shape
    logits = data(shape, dtype)
    labels = np.random.default_rng(3).integers(0, c, n).astype(np.int64)
    want_p = np.empty_like(logits)
    want = REF.softmax_xent_forward(logits, labels, want_p, np.empty(n, dtype))
    probs, loss = np.full_like(logits, np.nan), np.full(n, np.nan, dtype)
    got = be.softmax_xent_forward(logits, labels, probs, loss)
    assert got is loss
    np.testing.assert_allclose(probs, want_p, **tol(dtype))
    # loss = log(s) + max - logit: absolute error ~ ulp(max |logit|)
    np.testing.assert_allclose(loss, want, **tol(dtype, scale=10.0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_forward_large_logits(be, dtype):
    """Shifting by the row max keeps exp finite for logits far beyond exp's range."""
    logits = np.array([[1000.0, -1000.0, 0.0], [-1e4, -1e4 + 1, -1e4 - 1]], dtype)
    labels = np.array([1, 2], np.int64)
    want_p = np.empty_like(logits)
    want = REF.softmax_xent_forward(logits, labels, want_p, np.empty(2, dtype))
    probs = np.empty_like(logits)
    got = be.softmax_xent_forward(logits, labels, probs, np.empty(2, dtype))
    assert np.isfinite(got).all() and np.isfinite(probs).all()
    np.testing.assert_allclose(probs, want_p, **tol(dtype))
    np.testing.assert_allclose(got, want, rtol=tol(dtype)["rtol"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_softmax_xent_backward(be, dtype, shape, inplace):
    n, c = shape
    probs = np.empty(shape, dtype)
    labels = np.random.default_rng(3).integers(0, c, n).astype(np.int64)
    REF.softmax_xent_forward(data(shape, dtype), labels, probs, np.empty(n, dtype))
    gloss = data(n, dtype, seed=4, scale=1.0)
    want = REF.softmax_xent_backward(probs, labels, gloss, np.empty_like(probs))
    glogits = probs.copy() if inplace else np.full_like(probs, np.nan)
    got = be.softmax_xent_backward(glogits if inplace else probs, labels, gloss, glogits)
    assert got is glogits
    np.testing.assert_allclose(got, want, **tol(dtype))


# -- Adam -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (13, 7), (1031,)])
@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_step(be, dtype, shape, decoupled, weight_decay):
    p0 = data(shape, dtype)
    state = {}
    for name, b in (("want", REF), ("got", be)):
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        for step in range(1, 4):  # bias corrections change with t
            g = data(shape, dtype, seed=10 + step, scale=1.0)
            assert (
                b.adam_step(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, weight_decay, step, decoupled)
                is None
            )
        state[name] = (p, m, v)
    for want, got in zip(state["want"], state["got"], strict=True):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [16384, 40001])  # one chunk of the split; several and a tail
def test_adam_step_same_bits_at_any_thread_count(be, dtype, n):
    """``threads`` splits the elements over the native pool (cython): 1, 2 and 3 threads give
    the same bits, and the twin's values."""
    p0 = data(n, dtype)
    got = []
    for threads in (1, 2, 3):
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        for step in range(1, 4):
            g = data(n, dtype, seed=10 + step, scale=1.0)
            be.adam_step(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, 0.05, step, False, threads)
        got.append((p, m, v))
    for other in got[1:]:
        for a, b in zip(got[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for step in range(1, 4):
        REF.adam_step(p, data(n, dtype, seed=10 + step, scale=1.0), m, v, 1e-2, 0.9, 0.999,
                      1e-8, 0.05, step, False)  # fmt: skip
    for want, have in zip((p, m, v), got[0], strict=True):
        np.testing.assert_allclose(have, want, **tol(dtype))


def test_adam_step_leaves_grad_alone(be):
    p, g = data(50, np.float32), data(50, np.float32, seed=1)
    g0 = g.copy()
    be.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), 1e-3, 0.9, 0.999, 1e-8, 0.1, 1, False)
    np.testing.assert_array_equal(g, g0)


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba not installed")
def test_numba_float32_math_stays_float32():
    """The numba backend hands float32 kernels float32 scalars, never Python floats."""
    from lepton_nn.kernels import numba_dense

    with backend.use_backend("numba") as b:
        p = data(10, np.float32)
        g = data(10, np.float32, seed=1)
        b.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), 1e-3, 0.9, 0.999, 1e-8, 0.1, 2, True)
    sigs = [sig for sig in numba_dense.adam_step.signatures if str(sig[0].dtype) == "float32"]
    assert sigs and all(str(t) == "float32" for sig in sigs for t in sig[4:])


@pytest.mark.skipif("cython" not in BACKENDS, reason="compiled kernels not built")
def test_cython_rejects_other_dtypes():
    """A dtype the C loops do not know raises instead of being read as float32/float64."""
    from lepton_nn.kernels import _dense

    z = np.ones((2, 3), np.float16)
    with pytest.raises(TypeError):
        _dense.bias_act_forward(z, None, 1, z)


# -- backend selection ------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_info_names_the_implementation(name):
    info = backend.info(name)
    assert set(DENSE_KERNELS) <= set(info)
    for k in DENSE_KERNELS:
        assert info[k] == name, (k, info[k])


def test_use_backend_restores_previous():
    before = backend.get_backend()
    for name in BACKENDS:
        with backend.use_backend(name) as b:
            assert backend.get_backend() is b and b.name == name
        assert backend.get_backend() is before
    with pytest.raises(RuntimeError), backend.use_backend("reference"):
        raise RuntimeError("boom")
    assert backend.get_backend() is before


def _run(code, **env):
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_env_forces_reference():
    out = _run(
        "import lepton_nn.backend as b; g = b.get_backend(); print(g.name, b.info()['adam_step'])",
        LEPTON_BACKEND="reference",
    )
    assert out == "reference reference"


def test_import_does_not_import_numba():
    code = (
        "import sys, lepton_nn.backend as b; b.available(); "
        "print('numba' in sys.modules, 'lepton_nn.kernels.numba_dense' in sys.modules)"
    )
    assert _run(code) == "False False"


@pytest.mark.skipif("cython" not in BACKENDS, reason="compiled kernels not built")
def test_cython_backend_does_not_import_numba():
    code = "import sys, lepton_nn.backend as b; print(b.get_backend().name, 'numba' in sys.modules)"
    assert _run(code, LEPTON_BACKEND="") == "cython False"
