"""Convolution and pooling: kernel parity on every backend, gradient checks, PyTorch oracle,
layers (shapes, errors, config)."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
import lepton_nn.backend as backend
from lepton_nn import ShapeError, Tensor, gradcheck
from lepton_nn.backend.reference import GELU, IDENTITY, RELU, SIGMOID, TANH, ReferenceBackend
from lepton_nn.nn import AvgPool2D, Conv2D, Flatten, GlobalAvgPool2D, MaxPool2D, Sequential
from lepton_nn.nn.serialize import layer_from_config, layer_to_config
from lepton_nn.ops.conv import avg_pool2d, conv2d, global_avg_pool2d, max_pool2d, output_size

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


# -- gradient checks (float64, tiny sizes) -----------------------------------------------------


def t(shape, seed=0, grad=True):
    return Tensor(data(shape, np.float64, seed), requires_grad=grad)


CONV_CASES = [
    dict(stride=1, padding=0, dilation=1),
    dict(stride=2, padding=1, dilation=1),
    dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    dict(stride=1, padding="same", dilation=2),
    dict(stride=2, padding="same", dilation=1),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_gradcheck(be, case):
    x, w, b = t((2, 2, 5, 6)), t((3, 2, 3, 2), 1), t((3,), 2)
    assert gradcheck(lambda x, w, b: conv2d(x, w, b, **case), x, w, b)


@pytest.mark.parametrize("act", ["identity", "relu", "gelu"])
@pytest.mark.parametrize("chunk_bytes", [1, 8000, 1 << 30])  # 1 image, 2 (of 3360 B), all
def test_conv2d_chunks_of_images(be, monkeypatch, act, chunk_bytes):
    """Conv2d runs a few images at a time (sized for the cache): every chunking gives the
    same output and gradients, checked numerically and against an image-by-image loop."""
    import lepton_nn.ops.conv as conv_ops

    monkeypatch.setattr(conv_ops, "CONV_CHUNK_BYTES", chunk_bytes)
    x, w, b = t((5, 2, 4, 5)), t((3, 2, 3, 3), 1), t((3,), 2)  # 5 images: uneven chunks
    f = lambda x, w, b: conv2d(x, w, b, padding=1, activation=act)  # noqa: E731
    assert gradcheck(f, x, w, b)
    y = f(x, w, b)
    gy = data(y.shape, np.float64, seed=3)
    (y * Tensor(gy)).sum().backward()
    gw, gb = np.zeros_like(w.data), np.zeros_like(b.data)
    for i in range(5):  # image i alone: the same output, the same share of the gradients
        xi = Tensor(x.data[i : i + 1], requires_grad=True)
        wi, bi = Tensor(w.data, requires_grad=True), Tensor(b.data, requires_grad=True)
        yi = f(xi, wi, bi)
        np.testing.assert_allclose(yi.data[0], y.data[i], rtol=1e-12, atol=1e-12)
        (yi * Tensor(gy[i : i + 1])).sum().backward()
        np.testing.assert_allclose(xi.grad[0], x.grad[i], rtol=1e-12, atol=1e-12)
        gw, gb = gw + wi.grad, gb + bi.grad
    np.testing.assert_allclose(gw, w.grad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb, b.grad, rtol=1e-10, atol=1e-12)


def test_conv2d_weight_gradient_either_gemm_form(be, monkeypatch):
    """At shapes where the op transposes G_Z before G_W's GEMM (K >= 64, O >= 32), the
    gradients are those of the plain form."""
    import lepton_nn.ops.conv as conv_ops

    x, w, b = t((3, 8, 6, 5)), t((32, 8, 3, 3), 1), t((32,), 2)
    assert conv_ops._gw_from_transposed(8 * 9, 32, 30)
    grads = []
    for transposed in (True, False):
        monkeypatch.setattr(conv_ops, "_gw_from_transposed", lambda k, o, p, t=transposed: t)
        for a in (x, w, b):
            a.grad = None
        y = conv2d(x, w, b, padding=1, activation="relu")
        (y * Tensor(data(y.shape, np.float64, seed=4))).sum().backward()
        grads.append([x.grad.copy(), w.grad.copy(), b.grad.copy()])
    for g1, g2 in zip(*grads, strict=True):
        np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-12)


FUSED_POOLS = [(2, None, 0), (3, 2, 1), ((2, 3), (2, 3), "same")]


@pytest.mark.parametrize("act", ["identity", "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("pool", FUSED_POOLS)
def test_conv2d_with_fused_max_pool(be, act, pool):
    """conv2d(..., max_pool=...) is max_pool2d(conv2d(...)): output and every gradient, and a
    numerical check of its own."""
    x, w, b = t((3, 2, 7, 6)), t((4, 2, 3, 3), 1), t((4,), 2)
    plain = lambda x, w, b: max_pool2d(conv2d(x, w, b, padding=1, activation=act), *pool)  # noqa: E731
    fused = lambda x, w, b: conv2d(x, w, b, padding=1, activation=act, max_pool=(*pool, "p"))  # noqa: E731
    grads = []
    for f in (plain, fused):
        for a in (x, w, b):
            a.grad = None
        y = f(x, w, b)
        (y * Tensor(data(y.shape, np.float64, seed=5))).sum().backward()
        grads.append([y.data, x.grad, w.grad, b.grad])
    for g1, g2 in zip(*grads, strict=True):
        np.testing.assert_allclose(g2, g1, rtol=1e-12, atol=1e-12)
    assert gradcheck(fused, x, w, b)


def test_conv2d_fused_max_pool_ties_follow_the_unfused_ops():
    """Relu makes ties (every negative window is all zeros): the gradient goes where the
    unfused max pool sends it."""
    x = Tensor(np.ones((1, 1, 4, 4)), requires_grad=True)
    w = Tensor(np.array([[[[1.0, -2.0], [-2.0, 1.0]]]]), requires_grad=True)
    outs = []
    for y in (
        max_pool2d(conv2d(x, w, activation="relu"), 2, 1),
        conv2d(x, w, activation="relu", max_pool=(2, 1, 0, None)),
    ):
        x.grad = w.grad = None
        y.sum().backward()
        outs.append((y.data.copy(), x.grad.copy(), w.grad.copy()))
    for a, b in zip(*outs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_conv2d_fused_max_pool_errors():
    x, w = t((1, 1, 5, 5)), t((2, 1, 3, 3), 1)
    with pytest.raises(ValueError, match="identity, relu, sigmoid or tanh"):
        conv2d(x, w, activation="gelu", max_pool=(2, None, 0, None))
    with pytest.raises(ShapeError, match="layer 'pool9'"):  # 3x3 output, 4x4 window
        conv2d(x, w, max_pool=(4, None, 0, "pool9"))


def _cnn(seed=0):
    ln.set_seed(seed)
    return Sequential(
        [
            Conv2D(4, 3, padding="same", activation="relu", in_channels=2),
            MaxPool2D(2),
            Conv2D(3, 3, padding="same", activation="tanh", in_channels=4),
            MaxPool2D(2),
            Flatten(),
        ]
    )


def test_sequential_fuses_conv_and_max_pool(monkeypatch):
    """A Sequential runs each Conv2D + MaxPool2D pair as one op from its second call (the
    first builds and records shapes): the same outputs and gradients as fuse=False."""
    import lepton_nn.ops.conv as conv_ops

    pooled, apply = [], conv_ops.Conv2d.apply

    def spy(*a, **k):
        pooled.append(k.get("pool") is not None)
        return apply(*a, **k)

    monkeypatch.setattr(conv_ops.Conv2d, "apply", spy)
    x = Tensor(data((3, 2, 8, 8), np.float32))
    runs = []
    for fuse in (True, False):
        model = _cnn()
        model.fuse = fuse
        model(x)  # the first call: each layer on its own
        pooled.clear()
        y = model(x)
        assert pooled == [fuse, fuse]
        y.sum().backward()
        runs.append([y.data, *(p.grad for p in model.parameters())])
    for a, b in zip(*runs, strict=True):  # float32; G_b is summed in another order
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sequential_does_not_fuse_hooked_layers():
    """A forward hook on the Conv2D sees its own (unpooled) output: no fusion around it."""
    model = _cnn()
    x = Tensor(data((2, 2, 8, 8), np.float32))
    model(x)
    seen = []
    model.layers[0].register_forward_hook(lambda m, i, out: seen.append(out.shape))
    model(x)
    assert seen == [(2, 4, 8, 8)]


def test_conv2d_gradcheck_1x1_and_no_bias():
    x, w = t((2, 3, 3, 4)), t((2, 3, 1, 1), 1)
    assert gradcheck(lambda x, w: conv2d(x, w), x, w)
    assert gradcheck(lambda x, w: conv2d(x, w, stride=2), x, w)


@pytest.mark.parametrize(
    "kernel,stride,padding", [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0)), (2, 2, "same")]
)
def test_pool_gradcheck(be, kernel, stride, padding):
    x = t((2, 2, 5, 7))
    assert gradcheck(lambda x: max_pool2d(x, kernel, stride, padding), x)
    for cip in (True, False):
        assert gradcheck(lambda x, cip=cip: avg_pool2d(x, kernel, stride, padding, cip), x)


def test_global_avg_pool_gradcheck():
    assert gradcheck(global_avg_pool2d, t((2, 3, 3, 5)))


def test_small_cnn_gradcheck():
    ln.set_seed(0)
    model = Sequential(
        [
            Conv2D(3, 3, padding="same", activation="tanh"),
            MaxPool2D(2),
            Conv2D(2, 2, stride=1),
            GlobalAvgPool2D(),
        ]
    ).astype("float64")
    x = t((2, 1, 6, 6), grad=False)
    model(x)
    assert gradcheck(*as_function(model, x))


def as_function(model, *inputs):
    """(fn, *tensors): fn(*params) runs the model with those tensors as its parameters."""
    slots = [(m, k) for m in model.modules() for k, _ in m._own_parameters()]
    start = [Tensor(getattr(m, k).data.copy(), requires_grad=True) for m, k in slots]

    def fn(*params):
        for (m, k), p in zip(slots, params):
            setattr(m, k, p)
        return model(*inputs)

    return fn, *start


# -- PyTorch oracle ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CONV_CASES[:4])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_matches_torch(be, case, dtype):
    torch = pytest.importorskip("torch")
    x, w, b = data((3, 4, 9, 8), dtype), data((5, 4, 3, 3), dtype, 1), data((5,), dtype, 2)
    X, W, B = (Tensor(a, requires_grad=True) for a in (x, w, b))
    y = conv2d(X, W, B, **case)
    gy = data(y.shape, dtype, 3)
    y.backward(gy)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, case["stride"], case["padding"], case["dilation"])
    ty.backward(torch.tensor(gy))
    t_ = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}
    np.testing.assert_allclose(y.data, ty.detach().numpy(), **t_)
    for ours, theirs in ((X, tx), (W, tw), (B, tb)):
        assert ours.grad.dtype == dtype
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), **t_)


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0))])
def test_pools_match_torch(be, kernel, stride, padding):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = data((2, 3, 9, 8), np.float64)
    for ours_fn, theirs_fn in (
        (
            lambda v: max_pool2d(v, kernel, stride, padding),
            lambda v: F.max_pool2d(v, kernel, stride, padding),
        ),
        (
            lambda v: avg_pool2d(v, kernel, stride, padding),
            lambda v: F.avg_pool2d(v, kernel, stride, padding),
        ),
        (
            lambda v: avg_pool2d(v, kernel, stride, padding, count_include_pad=False),
            lambda v: F.avg_pool2d(v, kernel, stride, padding, count_include_pad=False),
        ),
    ):
        X, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, ty = ours_fn(X), theirs_fn(tx)
        (y * y).sum().backward()
        (ty * ty).sum().backward()
        np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(X.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_conv2d_layer_exchanges_weights_with_torch():
    torch = pytest.importorskip("torch")
    ln.set_seed(1)
    layer = Conv2D(4, (3, 2), stride=2, padding=1, dilation=(1, 2), activation="relu")
    x = data((2, 3, 10, 9), np.float32)
    y = layer(x)
    conv = torch.nn.Conv2d(3, 4, (3, 2), stride=2, padding=1, dilation=(1, 2))
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(layer.weight.data))
        conv.bias.copy_(torch.tensor(layer.bias.data))
    ty = torch.relu(conv(torch.tensor(x)))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_fused_cnn_trains_like_torch(be):
    """A Sequential CNN whose conv + max pool pairs run fused (from the second call on) takes
    the same SGD steps as the same network in PyTorch: float64, five steps, every parameter."""
    torch = pytest.importorskip("torch")
    from lepton_nn import losses, optim
    from lepton_nn.nn import Dense

    ln.set_seed(3)
    model = Sequential(
        [
            Conv2D(4, 3, padding="same", activation="relu", in_channels=2),
            MaxPool2D(2),
            Conv2D(5, 3, activation="tanh", in_channels=4),
            MaxPool2D(3, stride=2, padding=1),
            Flatten(),
            Dense(3, in_features=5 * 2 * 2),
        ]
    ).astype("float64")
    tnet = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding="same"),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 5, 3),
        torch.nn.Tanh(),
        torch.nn.MaxPool2d(3, stride=2, padding=1),
        torch.nn.Flatten(),
        torch.nn.Linear(20, 3),
    ).double()
    pairs = [(model.layers[0], tnet[0]), (model.layers[2], tnet[3]), (model.layers[5], tnet[7])]
    with torch.no_grad():
        for ours, theirs in pairs:
            w = ours.weight.data if ours.weight.ndim == 4 else ours.weight.data.T
            theirs.weight.copy_(torch.tensor(w))
            theirs.bias.copy_(torch.tensor(ours.bias.data))
    opt = optim.SGD(model.parameters(), lr=0.1)
    topt = torch.optim.SGD(tnet.parameters(), lr=0.1)
    x, labels = data((6, 2, 10, 10), np.float64), np.array([0, 1, 2, 2, 1, 0])
    for _ in range(5):
        opt.zero_grad()
        losses.cross_entropy(model(x), labels).backward()
        opt.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tnet(torch.tensor(x)), torch.tensor(labels)).backward()
        topt.step()
    for ours, theirs in pairs:
        w = ours.weight.data if ours.weight.ndim == 4 else ours.weight.data.T
        np.testing.assert_allclose(w, theirs.weight.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.bias.data, theirs.bias.detach().numpy(), atol=1e-12)


# -- layers ------------------------------------------------------------------------------------


def test_conv2d_layer_shapes_and_same_padding():
    for stride, hw in ((1, (7, 8)), (2, (4, 4)), (3, (3, 3))):
        layer = Conv2D(6, 3, stride=stride, padding="same")
        y = layer(np.zeros((2, 3, 7, 8), np.float32))
        assert y.shape == (2, 6, *hw) and y.dtype == np.float32
    assert layer.weight.shape == (6, 3, 3, 3) and layer.bias.shape == (6,)
    assert Conv2D(2, 2, in_channels=5).num_parameters() == 2 * 5 * 4 + 2


def test_pool_layers_shapes():
    x = np.zeros((2, 3, 9, 8), np.float32)
    assert MaxPool2D(2)(x).shape == (2, 3, 4, 4)
    assert MaxPool2D(3, stride=1, padding="same")(x).shape == (2, 3, 9, 8)
    assert AvgPool2D((3, 2), stride=(2, 1), padding=(1, 0))(x).shape == (2, 3, 5, 7)
    assert GlobalAvgPool2D()(x).shape == (2, 3)


def test_conv2d_errors_name_layer_and_shapes():
    layer = Conv2D(4, 3, name="c1")
    with pytest.raises(
        ShapeError, match=r"'c1'.*\(batch, channels, height, width\).*\(None, 3, 8\)"
    ):
        layer(np.zeros((2, 3, 8), np.float32))
    layer(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ShapeError, match=r"'c1'.*\(batch, 3, height, width\).*\(1, 2, 8, 8\)"):
        layer(np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(ShapeError, match="does not fit"):
        layer(np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(ShapeError, match="MaxPool2D"):
        MaxPool2D(2)(np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match="padding"):
        Conv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match="half the pool size"):
        max_pool2d(Tensor(np.zeros((1, 1, 4, 4))), 2, 2, 2)


def test_conv_geometry_is_checked_before_the_kernels():
    # huge dilation and padding used to reach the compiled im2col (and overflow there)
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ShapeError, match=r"layer 'big' \(conv2d\).*larger than 1048576"):
        Conv2D(2, 3, dilation=2**61, padding=2**62, name="big")(x)
    with pytest.raises(ShapeError, match=r"'wide'.*im2col would need"):
        Conv2D(2, 3, padding=5000, name="wide")(x)  # fits, but a 10k x 10k column buffer
    with pytest.raises(ShapeError, match=r"layer 'p' \(max_pool2d\).*larger than"):
        MaxPool2D(2**30, padding="same", name="p")(x)
    with pytest.raises(ShapeError, match=r"^conv2d: .*larger than"):
        conv2d(Tensor(x), Tensor(np.zeros((2, 3, 3, 3), np.float32)), stride=2**21)
    with pytest.raises(ShapeError, match=r"layer 'a' \(avg_pool2d\).*does not fit"):
        AvgPool2D(9, name="a")(x)


def test_conv_configs_round_trip():
    model = Sequential(
        [
            Conv2D(4, (3, 2), stride=(2, 1), padding=(1, 0), activation="relu", in_channels=2),
            MaxPool2D(2, padding="same"),
            AvgPool2D(2, count_include_pad=False),
            GlobalAvgPool2D(),
            Flatten(),
        ]
    )
    again = layer_from_config(layer_to_config(model))
    assert [layer_to_config(m) for m in again] == [layer_to_config(m) for m in model]


def test_float64_model_and_no_grad():
    layer = Conv2D(2, 3, padding=1, dtype="float64")
    with ln.no_grad():
        y = layer(np.ones((1, 1, 4, 4)))
    assert y.dtype == np.float64 and y._ctx is None
