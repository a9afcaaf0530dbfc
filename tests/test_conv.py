"""Convolution and pooling kernels: im2col / col2im, the conv chunk kernels (plain and with a
fused pool), the conv plan's chunking, the max / avg pool kernels, parity with the NumPy
reference on every backend. The ops and their gradients: test_conv_ops.py; the layers:
test_conv_layers.py."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn.backend as backend
from lepton_nn.backend.reference import GELU, IDENTITY, RELU, SIGMOID, TANH, ReferenceBackend
from lepton_nn.ops.conv import output_size

REF = ReferenceBackend()
BACKENDS = backend.available()
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=BACKENDS)
def be(request):
    with backend.use_backend(request.param) as b:
        yield b


def tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


def data(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# -- kernel parity -----------------------------------------------------------------------------

# (N, C, H, W), (kh, kw), (sh, sw), (ph, pw), (dh, dw), extra rows/cols of bottom/right padding
GEOMS = [
    ((2, 3, 7, 9), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),
    ((1, 2, 8, 5), (3, 2), (2, 1), (0, 1), (1, 2), (1, 0)),
    ((3, 1, 11, 10), (2, 3), (3, 2), (1, 0), (2, 1), (0, 2)),
    ((2, 4, 5, 5), (1, 1), (1, 1), (0, 0), (1, 1), (0, 0)),
    ((0, 3, 6, 6), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),
    ((2, 2, 4, 4), (5, 5), (1, 1), (2, 2), (1, 1), (2, 2)),
    # stride 1 and as wide as the input ("same"): the compiled block-copy path (float64; float32
    # runs masked-vector rows for any stride-1 width on AVX-512, one vector a row up to 16)
    ((2, 3, 7, 9), (3, 3), (1, 1), (1, 1), (1, 1), (0, 0)),
    ((1, 2, 6, 5), (3, 3), (1, 1), (2, 2), (2, 2), (0, 0)),
    ((2, 2, 6, 6), (2, 2), (1, 1), (0, 0), (1, 1), (1, 1)),
    ((1, 1, 2, 3), (5, 5), (1, 1), (4, 4), (2, 2), (0, 0)),  # some taps fully in the padding
    ((2, 2, 5, 19), (3, 3), (1, 1), (1, 1), (1, 1), (0, 0)),  # rows longer than 16
    # stride 1, other widths: the compiled col2im gathers 16 pixels of a row at a time
    ((1, 2, 4, 37), (3, 5), (1, 1), (1, 2), (1, 2), (0, 1)),  # 3 chunks, dilated, wider out
    ((2, 1, 5, 33), (3, 3), (1, 1), (0, 0), (1, 1), (0, 0)),  # "valid": narrower output
    ((1, 1, 3, 18), (2, 2), (1, 1), (3, 3), (1, 1), (0, 0)),  # padding wider than the window
]


def _out(shape, k, s, p, d, extra):
    return output_size(shape[2:], (p[0], p[0] + extra[0], p[1], p[1] + extra[1]), k, s, d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", GEOMS)
def test_im2col_col2im_parity(be, dtype, geom):
    shape, k, s, p, d, extra = geom
    oh, ow = _out(shape, k, s, p, d, extra)
    x = data(shape, dtype)
    args = (*k, *s, *p, *d)
    cshape = (shape[0], shape[1] * k[0] * k[1], oh, ow)
    want = REF.im2col(x, *args, np.empty(cshape, dtype))
    got = be.im2col(x, *args, np.full(cshape, np.nan, dtype))
    np.testing.assert_array_equal(got, want)
    cols = data(cshape, dtype, seed=1)
    want = REF.col2im(cols, *args, np.empty(shape, dtype))
    got = be.col2im(cols, *args, np.full(shape, np.nan, dtype))
    np.testing.assert_allclose(got, want, **tol(dtype))


CHUNK_GEOMS = [g for g in GEOMS if g[0][0] > 0][:6] + [
    ((0, 2, 4, 4), (3, 3), (1,) * 2, (1,) * 2, (1,) * 2, (0,) * 2)
]


def _chunk_run(kb, dtype, geom, act, step, with_bias, wants, transpose=False, seed=0):
    """Forward and backward of the chunk kernels of backend ``kb`` on one geometry: returns
    every array they wrote."""
    shape, k, s, p, d, extra = geom
    oh, ow = _out(shape, k, s, p, d, extra)
    n, c = shape[:2]
    o, kk, pp = 3, c * k[0] * k[1], oh * ow
    g8 = (*k, *s, *p, *d)
    x, w2 = data(shape, dtype, seed), data((o, kk), dtype, seed + 1)
    b = data(o, dtype, seed + 2) if with_bias else None
    z = np.full((n, o, pp), np.nan, dtype)
    y = np.full_like(z, np.nan) if act == GELU else z
    cols = np.full((step, kk, oh, ow), np.nan, dtype)
    kb.conv2d_forward_chunks(x, w2, b, act, g8, oh, ow, step, np.zeros(1, np.int64), cols, z, y)
    chunks = -(-n // step)
    gy = data(z.shape, dtype, seed + 3)
    want_x, want_w, want_b = wants
    gx = np.full(shape, np.nan, dtype) if want_x else None
    gw = np.full((chunks, kk, o), np.nan, dtype) if want_w else None
    gb = np.full((chunks, o), np.nan, dtype) if want_b and with_bias else None
    gz_ws = np.full((step, o, pp), np.nan, dtype)
    gcols = np.full((step, kk, pp), np.nan, dtype)
    gzt = np.full((pp, o), np.nan, dtype) if transpose else None
    kb.conv2d_backward_chunks(x, w2, b, act, g8, oh, ow, step, np.zeros(1, np.int64), gy, y, z,
                              gx, gw, gb, cols, gz_ws, gcols, gzt)  # fmt: skip
    return [a for a in (y, z, gy, gx, gw, gb) if a is not None]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", CHUNK_GEOMS)
@pytest.mark.parametrize("act", [IDENTITY, RELU, GELU], ids=["identity", "relu", "gelu"])
@pytest.mark.parametrize("step", [1, 2, 64])
def test_conv_chunk_kernels_parity(be, dtype, geom, act, step):
    """A convolution's chunked passes (the compiled loop calls the BLAS GEMM itself) against
    the reference loop: outputs, G_Z, G_X and the per-chunk G_W and G_b parts, G_W also
    through the transposed-G_Z form of its GEMM."""
    for with_bias, wants in ((True, (True, True, True)), (False, (False, True, False))):
        want = _chunk_run(REF, dtype, geom, act, step, with_bias, wants)
        got = _chunk_run(be, dtype, geom, act, step, with_bias, wants, transpose=with_bias)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, **tol(dtype))


def test_conv_chunk_kernels_share_chunks_between_threads(be):
    """Threads calling the kernel at once with one counter each take whole chunks: every
    chunk done once, the result that of one call."""
    import threading

    geom = ((9, 2, 6, 7), (3, 3), (1, 1), (1, 1), (1, 1), (0, 0))
    want = _chunk_run(be, np.float32, geom, RELU, 2, True, (True, True, True))
    x, w2, b = data((9, 2, 6, 7), np.float32), data((3, 18), np.float32, 1), data(3, np.float32, 2)
    z = np.full((9, 3, 42), np.nan, np.float32)
    counter = np.zeros(1, np.int64)
    runs = [
        threading.Thread(
            target=be.conv2d_forward_chunks,
            args=(
                x,
                w2,
                b,
                RELU,
                (3, 3, 1, 1, 1, 1, 1, 1),
                6,
                7,
                2,
                counter,
                np.empty((2, 18, 6, 7), np.float32),
                z,
                z,
            ),  # fmt: skip
        )
        for _ in range(3)
    ]
    for r in runs:
        r.start()
    for r in runs:
        r.join()
    assert counter[0] == 5 + 3  # 5 chunks claimed, then one failed claim per thread
    np.testing.assert_array_equal(z, want[0])


def _plan(n, c, o, hw, itemsize=4):
    """Conv2d's (step, chunks) for n images of c channels, 3x3 'same', o outputs."""
    from lepton_nn.ops.conv import Conv2d

    op = Conv2d()
    op.x, op.w2, op.out_hw = np.empty((n, c, *hw), f"f{itemsize}"), np.empty((o, c * 9)), hw
    return op._plan()[:2]


def test_conv_plan_an_even_count_of_chunks():
    """An odd count of several chunks is made even where the batch allows, so two threads
    get as many: W3's conv1 (64 images, 13 a chunk: 5) runs 6 chunks of 11; each chunk stays
    within the bytes of the plain plan, and the chunks cover the batch."""
    from lepton_nn.backend.geometry import CONV_CHUNK_BYTES

    assert _plan(64, 1, 16, (28, 28)) == (11, 6)
    assert _plan(64, 16, 32, (14, 14)) == (7, 10)  # already even: unchanged
    assert _plan(4, 1, 16, (28, 28))[1] == 1  # one chunk stays one
    for n in (2, 7, 13, 39, 64, 100, 129):
        for c, o, hw in ((1, 16, (28, 28)), (16, 32, (14, 14)), (3, 8, (32, 32))):
            step, chunks = _plan(n, c, o, hw)
            most = max(1, CONV_CHUNK_BYTES // ((9 * c + o) * hw[0] * hw[1] * 4))
            assert step <= most and (chunks - 1) * step < n <= chunks * step
            plain = -(-n // most)
            assert chunks == plain if plain % 2 == 0 or plain == 1 else chunks in (plain, plain + 1)


# (conv input shape, conv kernel, conv padding, pool (kh, kw, sh, sw, ph, pw)); conv stride 1
POOL_CHUNK_CASES = [
    ((3, 2, 8, 8), (3, 3), (1, 1), (2, 2, 2, 2, 0, 0)),  # W3's pattern
    ((2, 3, 9, 7), (3, 2), (0, 1), (3, 3, 2, 2, 1, 1)),  # overlapping, padded windows
    ((3, 1, 6, 9), (1, 1), (0, 0), (2, 3, 2, 3, 0, 0)),  # 1x1 conv (no im2col), odd window
]


def _pool_chunk_run(kb, dtype, case, act, step, with_bias):
    """The fused conv + max pool chunk kernels of backend ``kb``: every array they wrote."""
    shape, k, p, pool = case
    n, c, h, w = shape
    oh, ow = h + 2 * p[0] - k[0] + 1, w + 2 * p[1] - k[1] + 1
    poh, pow_ = (
        (oh + 2 * pool[4] - pool[0]) // pool[2] + 1,
        (ow + 2 * pool[5] - pool[1]) // pool[3] + 1,
    )
    pool = (*pool, poh, pow_)
    o, kk = 4, c * k[0] * k[1]
    g8 = (*k, 1, 1, *p, 1, 1)
    x, w2 = data(shape, dtype), data((o, kk), dtype, 1)
    b = data(o, dtype, 2) if with_bias else None
    y = np.full((n, o, poh * pow_), np.nan, dtype)
    argmax = np.full(y.shape, -1, np.int64)
    cols = np.full((step, kk, oh, ow), np.nan, dtype)
    zc = np.full((step, o, oh * ow), np.nan, dtype)
    args = (x, w2, b, act, g8, oh, ow, pool, step)
    kb.conv2d_pool_forward_chunks(*args, np.zeros(1, np.int64), cols, zc, y, argmax)
    chunks = -(-n // step)
    gy = data(y.shape, dtype, 3)
    gx = np.full(shape, np.nan, dtype)
    gw = np.full((chunks, kk, o), np.nan, dtype)
    gb = np.full((chunks, o), np.nan, dtype) if with_bias else None
    gzp = np.full((step, o, poh * pow_), np.nan, dtype)
    gz = np.full((step, o, oh * ow), np.nan, dtype)
    gcols = np.full((step, kk, oh * ow), np.nan, dtype)
    kb.conv2d_pool_backward_chunks(*args, np.zeros(1, np.int64), gy, y, argmax, gx, gw, gb, cols,
                                   gzp, gz, gcols, None)  # fmt: skip
    return [a for a in (y, argmax, gx, gw, gb) if a is not None]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CHUNK_CASES)
@pytest.mark.parametrize("act", [IDENTITY, RELU, SIGMOID, TANH], ids=["id", "relu", "sig", "tanh"])
@pytest.mark.parametrize("step", [1, 2, 64])
def test_conv_pool_chunk_kernels_parity(be, dtype, case, act, step):
    """Convolution, activation and max pool fused per chunk, against the reference: pooled
    output, argmax, G_X and the per-chunk G_W and G_b parts."""
    for with_bias in (True, False):
        want = _pool_chunk_run(REF, dtype, case, act, step, with_bias)
        got = _pool_chunk_run(be, dtype, case, act, step, with_bias)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, **tol(dtype))


def test_cython_chunk_kernels_fall_back_without_a_blas_gemm(monkeypatch):
    """Where NumPy's BLAS GEMM was not found (or failed its check) the compiled backend runs
    the reference loop, and says so."""
    cb = pytest.importorskip("lepton_nn.backend.cython_backend")
    if cb._conv is None:
        pytest.skip("conv extension not built")
    geom = ((3, 2, 6, 5), (3, 3), (1, 1), (1, 1), (1, 1), (0, 0))
    with backend.use_backend("cython") as kb:
        assert cb._conv_gemm() == (backend.info()["conv2d_forward_chunks"] == "cython")
        monkeypatch.setattr(cb, "_gemm_checked", False)
        assert backend.info()["conv2d_forward_chunks"].startswith("reference")
        got = _chunk_run(kb, np.float32, geom, RELU, 2, True, (True, True, True))
    want = _chunk_run(REF, np.float32, geom, RELU, 2, True, (True, True, True))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, **tol(np.float32))


def test_the_gemm_check_refuses_a_wrong_gemm(monkeypatch):
    """The first-use check of the compiled conv GEMM (deterministic data, no numpy.random)
    passes for the real kernel and fails for one that mixes up operands or outputs."""
    cb = pytest.importorskip("lepton_nn.backend.cython_backend")
    if cb._conv is None or not cb._conv_gemm():
        pytest.skip("conv extension or BLAS GEMM not available")
    assert cb._gemm_agrees()
    real = cb._conv

    class Wrong:  # the real kernel fed W with its rows reversed, or writing y reversed
        def __init__(self, flip_w):
            self.flip_w = flip_w

        def conv2d_forward_chunks(self, x, w2, b, *rest):
            if self.flip_w:
                return real.conv2d_forward_chunks(x, np.ascontiguousarray(w2[::-1]), b, *rest)
            real.conv2d_forward_chunks(x, w2, b, *rest)
            y = rest[-1]
            y[...] = y[..., ::-1].copy()

    for flip_w in (True, False):
        monkeypatch.setattr(cb, "_conv", Wrong(flip_w))
        assert not cb._gemm_agrees()


def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), c> == <x, col2im(c)> for the reference (the definition of the adjoint)."""
    shape, k, s, p, d, extra = GEOMS[2]
    oh, ow = _out(shape, k, s, p, d, extra)
    x = data(shape, np.float64)
    c = data((shape[0], shape[1] * k[0] * k[1], oh, ow), np.float64, seed=3)
    a = REF.im2col(x, *k, *s, *p, *d, np.empty_like(c))
    b = REF.col2im(c, *k, *s, *p, *d, np.empty_like(x))
    assert np.isclose((a * c).sum(), (x * b).sum())


POOLS = [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0), (0, 0)),
    ((2, 2, 7, 9), (3, 3), (2, 2), (1, 1), (0, 0)),
    ((1, 3, 5, 6), (3, 2), (1, 2), (1, 0), (1, 1)),
    ((3, 1, 9, 4), (2, 3), (3, 1), (1, 1), (0, 0)),
    ((0, 2, 6, 6), (2, 2), (2, 2), (0, 0), (0, 0)),
    ((2, 2, 5, 7), (2, 2), (2, 2), (0, 0), (1, 1)),  # "same": padding only below/right
    # 2x2 / stride 2 rows of up to 16 outputs: the compiled one-vector-per-row path
    ((2, 3, 28, 28), (2, 2), (2, 2), (0, 0), (0, 0)),
    ((1, 2, 33, 32), (2, 2), (2, 2), (0, 0), (0, 0)),
    ((1, 2, 32, 32), (2, 2), (2, 2), (0, 0), (0, 0)),  # 16 outputs a row: full vectors
    ((1, 2, 7, 9), (2, 2), (2, 2), (0, 0), (0, 0)),
    ((1, 1, 4, 34), (2, 2), (2, 2), (0, 0), (0, 0)),  # 17 outputs a row: the plain loop
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", POOLS)
def test_maxpool_parity(be, dtype, geom):
    shape, k, s, p, extra = geom
    oh, ow = _out(shape, k, s, p, (1, 1), extra)
    x = data(shape, dtype)
    args = (*k, *s, *p)
    oshape = (*shape[:2], oh, ow)
    y0, a0 = np.empty(oshape, dtype), np.empty(oshape, np.int64)
    REF.maxpool2d_forward(x, *args, y0, a0)
    y1, a1 = np.full(oshape, np.nan, dtype), np.full(oshape, -7, np.int64)
    assert be.maxpool2d_forward(x, *args, y1, a1) is y1
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(a1, a0)
    gy = data(oshape, dtype, seed=2)
    want = REF.maxpool2d_backward(gy, a0, *args, np.empty(shape, dtype))
    got = be.maxpool2d_backward(gy, a0, *args, np.full(shape, np.nan, dtype))
    np.testing.assert_allclose(got, want, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", POOLS)
@pytest.mark.parametrize("count_pad", [True, False])
def test_avgpool_parity(be, dtype, geom, count_pad):
    shape, k, s, p, extra = geom
    oh, ow = _out(shape, k, s, p, (1, 1), extra)
    x = data(shape, dtype)
    args = (*k, *s, *p, count_pad)
    oshape = (*shape[:2], oh, ow)
    want = REF.avgpool2d_forward(x, *args, np.empty(oshape, dtype))
    got = be.avgpool2d_forward(x, *args, np.full(oshape, np.nan, dtype))
    np.testing.assert_allclose(got, want, **tol(dtype))
    gy = data(oshape, dtype, seed=2)
    want = REF.avgpool2d_backward(gy, *args, np.empty(shape, dtype))
    got = be.avgpool2d_backward(gy, *args, np.full(shape, np.nan, dtype))
    np.testing.assert_allclose(got, want, **tol(dtype))


def test_maxpool_ties_pick_the_first():
    x = np.zeros((1, 1, 2, 2), np.float32)
    for name in BACKENDS:
        with backend.use_backend(name) as b:
            y, a = np.empty((1, 1, 1, 1), np.float32), np.empty((1, 1, 1, 1), np.int64)
            b.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, y, a)
            assert a.item() == 0, name


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_ties_in_long_rows_match_the_reference(be, dtype):
    """Many ties (small integers) in 14-wide output rows: the first maximum wins everywhere."""
    x = np.random.default_rng(5).integers(0, 3, (2, 3, 28, 28)).astype(dtype)
    y0, a0 = np.empty((2, 3, 14, 14), dtype), np.empty((2, 3, 14, 14), np.int64)
    REF.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, y0, a0)
    y1, a1 = np.empty_like(y0), np.empty_like(a0)
    be.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, y1, a1)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(a1, a0)


def test_recycled_arrays_are_reused_only_when_unreferenced():
    from lepton_nn.ops._workspace import recycled, release

    release()
    a = recycled((256, 1024), np.float32)
    assert recycled((256, 1024), np.float32) is not a  # a is still held here
    view = a[1:]
    ident = id(a)
    del a
    assert id(recycled((256, 1024), np.float32)) != ident or view.base is None  # a view holds it
    del view
    ids = {id(recycled((256, 1024), np.float32)) for _ in range(3)}  # nothing holds them now
    assert len(ids) == 1
    assert recycled((4, 4), np.float32).shape == (4, 4)  # small: a plain new array
    release()
