"""Winograd's F(2x2, 3x3) tiling of a 3x3 convolution + 2x2 max pool in the direct chain
(``kernels/csrc/conv_winograd.h``, twin in ``backend/reference_conv.py``): the twin and every
backend against a float64 oracle within a stated float32 bound, the compiled kernel against
the twin, the same bits at 1, 2 and 3 threads and on the plain C loops, non-finite images
through the direct kernel, bad arguments refused, and the runtime plan that takes it."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
from conv_backends import BACKENDS, conv_backend  # noqa: F401 (the fixture "be")

import lepton_nn.backend as backend
from lepton_nn.backend.geometry import conv_direct_scratch, winograd_scratch
from lepton_nn.backend.reference import ReferenceBackend
from lepton_nn.backend.reference_conv import WINO_G, winograd_fits

REF = ReferenceBackend()
EPS32 = float(np.finfo(np.float32).eps)


# (C, H, W, O, (ph, pw), act, bias): the bench CNN's second layer, odd sizes (the last conv
# row / column outside every pool window), O not a multiple of 4, pooled rows wider than 8
# (two tile vectors a row) and narrower than 8 (stores past a row), 0 and 2 padding
CASES = [
    (16, 14, 14, 32, (1, 1), 1, True),
    (8, 28, 28, 16, (1, 1), 1, True),
    (3, 9, 11, 5, (1, 1), 0, False),
    (4, 7, 7, 6, (0, 0), 1, True),
    (5, 10, 19, 7, (2, 1), 0, True),
    (2, 4, 4, 3, (0, 0), 1, False),
    (9, 5, 37, 4, (1, 1), 1, True),
]


def _layer(kb, c, h, w, o, pad, act, bias, seed=0):
    rng = np.random.default_rng(seed)
    wt = (rng.standard_normal((o, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    geom = (3, 3, 1, 1, *pad, 1, 1)
    oh, ow = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
    pool = (2, 2, 2, 2, 0, 0, oh // 2, ow // 2)
    w2 = wt.reshape(o, -1)
    wp = kb.conv2d_direct_pack(w2, c, 3, 3)
    u = kb.conv2d_winograd_pack(w2, c)
    return wt, b, (wp, b, act, geom, oh, ow, pool, c, h, w, o, u)


def _oracle(x, wt, b, act, pad, pool, absolute=False):
    """float64: the convolution tap by tap, + b, the activation, the 2x2 max pool. With
    ``absolute``: sum |w| |x| (+ |b|) pooled the same way, the size of the terms."""
    n, c, h, w = x.shape
    ph, pw = pad
    x64, w64 = x.astype(np.float64), wt.astype(np.float64)
    if absolute:
        x64, w64 = np.abs(x64), np.abs(w64)
    oh, ow = 2 * pool[6], 2 * pool[7]
    xp = np.zeros((n, c, max(oh + 2, ph + h), max(ow + 2, pw + w)))
    xp[:, :, ph : ph + h, pw : pw + w] = x64
    z = np.zeros((n, wt.shape[0], oh, ow))
    for i in range(3):
        for j in range(3):
            z += np.einsum("oc,ncyx->noyx", w64[:, :, i, j], xp[:, :, i : i + oh, j : j + ow])
    if b is not None:
        z += (np.abs(b) if absolute else b).astype(np.float64)[None, :, None, None]
    if act == 1 and not absolute:
        z = np.maximum(z, 0)
    z = z.reshape(n, -1, pool[6], 2, pool[7], 2).max(axis=(3, 5))
    return z.reshape(n, wt.shape[0], -1)


def _run(kb, x, layer, threads=None, u=True):
    """y of one layer through conv2d_direct_chain (u=False: the direct kernel)."""
    lay = layer if u else layer[:11]
    wp, b, act, geom, oh, ow, pool, c, h, w, o = layer[:11]
    s, z = conv_direct_scratch(c, o, geom, oh, ow, pool)
    y = np.full((len(x), o, pool[6] * pool[7]), np.nan, np.float32)

    def sets():
        return (np.full(s, np.nan, np.float32), np.full(z, np.nan, np.float32),
                np.zeros(1, np.float32), np.zeros(1, np.float32))  # fmt: skip

    if threads is None:
        kb.conv2d_direct_chain(x, (lay,), np.zeros(1, np.int64), *sets(), y)
    else:
        kb.conv_direct_chain_threads(x, (lay,), tuple(sets() for _ in range(threads)), y, threads)
    return y


def test_pack_is_g_g_gt():
    """u[o // 4, 4 a + b, c, o % 4] = (G g G^T)[a, b], zero past O."""
    rng = np.random.default_rng(3)
    wt = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    u = REF.conv2d_winograd_pack(wt.reshape(6, -1), 5)
    assert u.shape == (2, 16, 5, 4) and u.dtype == np.float32
    for o in range(8):
        for c in range(5):
            want = WINO_G @ wt[o, c].astype(np.float64) @ WINO_G.T if o < 6 else np.zeros((4, 4))
            np.testing.assert_allclose(u[o // 4, :, c, o % 4].reshape(4, 4), want, rtol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[f"c{c[0]}-{c[1]}x{c[2]}-o{c[3]}" for c in CASES])
def test_winograd_layer_against_float64(be, case):
    """Every backend's Winograd layer (and the twin's) lies within 32 eps32 of the size of
    its terms (sum |w| |x| + |b|, pooled) from the float64 result; a wrong tap or tile would
    be off by the terms themselves."""
    c, h, w, o, pad, act, bias = case
    wt, b, layer = _layer(be, c, h, w, o, pad, act, bias)
    x = np.random.default_rng(1).standard_normal((3, c, h, w)).astype(np.float32)
    assert winograd_fits(layer[3], layer[6], act)
    want = _oracle(x, wt, b, act, pad, layer[6])
    size = _oracle(x, wt, b, act, pad, layer[6], absolute=True)
    twin = REF.conv2d_winograd_forward(x, layer[11], b, act, layer[3], layer[6],
                                       np.empty_like(want, np.float32))  # fmt: skip
    for y in (_run(be, x, layer), twin):
        assert np.all(np.abs(y - want) <= 32 * EPS32 * size)
    # and the direct kernel on the same layer is as close: the two differ by rounding only
    yd = _run(be, x, layer, u=False)
    assert np.all(np.abs(_run(be, x, layer) - yd) <= 64 * EPS32 * size)


@pytest.mark.parametrize("case", CASES[:3], ids=["bench-cnn", "two-vectors", "o5"])
def test_compiled_matches_twin_and_threads_same_bits(be, case):
    """The compiled kernel within 8 eps32 of the terms' size from the twin (the channel sums
    run in another order); 1, 2 and 3 threads give the same bits as one call."""
    c, h, w, o, pad, act, bias = case
    wt, b, layer = _layer(be, c, h, w, o, pad, act, bias, seed=2)
    x = np.random.default_rng(4).standard_normal((7, c, h, w)).astype(np.float32)
    one = _run(be, x, layer)
    twin = _run(REF, x, layer)
    size = _oracle(x, wt, b, act, pad, layer[6], absolute=True)
    assert np.all(np.abs(one - twin) <= 8 * EPS32 * size)
    for t in (1, 2, 3):
        np.testing.assert_array_equal(_run(be, x, layer, threads=t), one)


def test_portable_loops_give_the_avx2_bits():
    """The plain C loops do the AVX2 code's float operations in its order: same bits."""
    if "cython" not in BACKENDS:
        pytest.skip("no compiled kernels")
    from lepton_nn.kernels import _conv

    with backend.use_backend("cython") as kb:
        for case in CASES:
            _, _, layer = _layer(kb, *case)
            x = np.random.default_rng(5).standard_normal((2, *case[:3])).astype(np.float32)
            fast = _run(kb, x, layer)
            _conv.conv2d_direct_portable(True)
            try:
                plain = _run(kb, x, layer)
            finally:
                _conv.conv2d_direct_portable(False)
            np.testing.assert_array_equal(plain, fast)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_image_takes_the_direct_kernel(be, bad):
    """Winograd's transforms would turn one inf into NaNs over its tile: an image holding an
    inf or NaN gets the direct kernel's exact output; the other images keep Winograd's."""
    _, _, layer = _layer(be, 16, 14, 14, 32, (1, 1), 1, True)
    x = np.random.default_rng(6).standard_normal((3, 16, 14, 14)).astype(np.float32)
    x[1, 5, 13, 13] = bad
    y, yd = _run(be, x, layer), _run(be, x, layer, u=False)
    np.testing.assert_array_equal(y[1], yd[1])
    np.testing.assert_array_equal(y[[0, 2]], _run(be, x[[0, 2]], layer))
    if bad != bad:
        assert np.isnan(y[1]).any()
    else:
        assert np.isinf(y[1]).any()


def test_layers_that_do_not_fit_stay_direct(be):
    """A u given to a layer the tiling does not fit (no pool here) is ignored: the direct
    kernel's bits."""
    _, _, layer = _layer(be, 8, 9, 9, 4, (1, 1), 1, True)
    wp, b, act, geom, oh, ow, _, c, h, w, o, u = layer
    nopool = (wp, b, act, geom, oh, ow, None, c, h, w, o, u)
    assert not winograd_fits(geom, None, act) and not winograd_fits(geom, layer[6], 3)
    x = np.random.default_rng(7).standard_normal((2, c, h, w)).astype(np.float32)
    s, z = conv_direct_scratch(c, o, geom, oh, ow, None)
    ys = []
    for lay in (nopool, nopool[:11]):
        y = np.zeros((2, o, oh * ow), np.float32)
        be.conv2d_direct_chain(x, (lay,), np.zeros(1, np.int64), np.zeros(s, np.float32),
                               np.zeros(z, np.float32), np.zeros(1, np.float32),
                               np.zeros(1, np.float32), y)  # fmt: skip
        ys.append(y)
    np.testing.assert_array_equal(ys[0], ys[1])


def test_bad_filters_and_short_scratch_are_refused():
    if "cython" not in BACKENDS:
        pytest.skip("no compiled kernels")
    from lepton_nn.kernels import _conv

    _, _, layer = _layer(REF, 16, 14, 14, 32, (1, 1), 1, True)
    wp, b, act, geom, oh, ow, pool, c, h, w, o, u = layer
    x = np.zeros((1, c, h, w), np.float32)
    y = np.zeros((1, o, pool[6] * pool[7]), np.float32)
    s, z = conv_direct_scratch(c, o, geom, oh, ow, pool)
    assert s >= winograd_scratch(c, pool)
    rest = (np.zeros(z, np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32), y)
    for bad in (u[:1], u.astype(np.float64)):
        with pytest.raises(ValueError, match="Winograd filters"):
            _conv.conv2d_direct_chain(x, ((*layer[:11], bad),), np.zeros(1, np.int64),
                                      np.zeros(s, np.float32), *rest)  # fmt: skip
    short = np.zeros(winograd_scratch(c, pool) - 1, np.float32)
    with pytest.raises(ValueError, match="Winograd layers need"):
        _conv.conv2d_direct_chain(x, (layer,), np.zeros(1, np.int64), short, *rest)


def test_runtime_cnn_takes_winograd_for_its_second_conv():
    """The bench CNN's plan: the 1 -> 16 conv stays on the pooled direct tiling (too few
    channels), the 16 -> 32 one gets Winograd filters; the output, at 1 and 2 threads,
    within float32 rounding of the model's own (im2col) forward."""
    import lepton_nn as L
    import lepton_nn.runtime as rt
    from lepton_nn import nn

    L.set_seed(0)
    model = nn.Sequential([
        nn.Conv2D(16, 3, padding="same", in_channels=1), nn.BatchNorm(), nn.ReLU(),
        nn.MaxPool2D(2), nn.Conv2D(32, 3, padding="same", in_channels=16), nn.BatchNorm(),
        nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(10),
    ])  # fmt: skip
    x = np.random.default_rng(8).standard_normal((9, 1, 28, 28)).astype(np.float32)
    model(x)
    model.eval()
    out = model(x)
    want = np.asarray(getattr(out, "data", out))  # the training ops' im2col forward
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cnn.lnn")
        L.save(model, path)
        for threads in (1, 2):
            m = rt.load(path, threads=threads)
            got = m.forward(x)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        steps = [s for s in m.network.steps if getattr(s, "kind", "") == "conv"]
        from lepton_nn.runtime.conv_winograd import winograd_filters
        from lepton_nn.runtime.kernels import kernels

        chained = [p for s in steps for p in getattr(s, "parts", [s])]
        us = [winograd_filters(p, kernels()) for p in chained]
        assert us[0] is None and us[1] is not None and us[1].shape == (8, 16, 16, 4)
