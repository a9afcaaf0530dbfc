"""The inference convolution ``conv2d_direct_forward`` (stride 1, float32, no im2col buffer,
bias + activation + max pool fused): every backend against the reference twin, the twin
against a tap-by-tap NumPy loop, and the runtime plans that use it against the im2col path."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conv_backends import BACKENDS, conv_backend  # noqa: F401 (the fixture "be")
from hypothesis import given, settings
from hypothesis import strategies as st

import lepton_nn.backend as backend
from lepton_nn.backend.geometry import conv_direct_scratch
from lepton_nn.backend.reference import ACTIVATIONS, ReferenceBackend

REF = ReferenceBackend()
ACTS = list(range(len(ACTIVATIONS)))


def _oracle(x, w, b, act, geom, oh, ow, pool):
    """Tap by tap over a zero-padded image, then the activation, then window maxima: the
    definition, written without im2col."""
    kh, kw, _, _, ph, pw, dh, dw = geom
    n, c, h, wd = x.shape
    o = w.shape[0]
    rows, cols = oh + (kh - 1) * dh, ow + (kw - 1) * dw
    xp = np.zeros((n, c, max(rows, ph + h), max(cols, pw + wd)), np.float64)
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    z = np.zeros((n, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dh : i * dh + oh, j * dw : j * dw + ow]  # (N, C, OH, OW)
            z += np.einsum("oc,ncyx->noyx", w[:, :, i, j].astype(np.float64), patch)
    if b is not None:
        z += b[None, :, None, None]
    z = REF.bias_act_forward(z.reshape(n, o, -1), None, act, np.empty((n, o, oh * ow)))
    if pool is None:
        return z
    z = z.reshape(n, o, oh, ow)
    pk, pkw, ps, psw, pph, ppw, poh, pow_ = pool
    y = np.full((n, o, poh, pow_), -np.inf)
    for i in range(pk):
        for j in range(pkw):
            for oy in range(poh):
                iy = oy * ps - pph + i
                if not 0 <= iy < oh:
                    continue
                for ox in range(pow_):
                    ix = ox * psw - ppw + j
                    if 0 <= ix < ow:
                        y[:, :, oy, ox] = np.maximum(y[:, :, oy, ox], z[:, :, iy, ix])
    return y.reshape(n, o, -1)


def _case(n, c, h, w, o, k, p, d, extra, pool_win, act, bias, seed=0):
    """Arrays and arguments of one call; extra: rows/cols of padding bottom/right beyond p."""
    rng = np.random.default_rng(seed)
    kh, kw = k
    geom = (kh, kw, 1, 1, p[0], p[1], d[0], d[1])
    oh = h + p[0] + extra[0] - (kh - 1) * d[0]
    ow = w + p[1] + extra[1] - (kw - 1) * d[1]
    pool = None
    if pool_win is not None:
        pk, ps, pp = pool_win
        poh, pow_ = (oh + 2 * pp - pk) // ps + 1, (ow + 2 * pp - pk) // ps + 1
        pool = (pk, pk, ps, ps, pp, pp, poh, pow_)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((o, c, kh, kw)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    return x, wt, b, act, geom, oh, ow, pool


def _run(kb, x, wt, b, act, geom, oh, ow, pool, threads=1):
    o, c, kh, kw = wt.shape
    wp = kb.conv2d_direct_pack(wt.reshape(o, -1), c, kh, kw)
    size = oh * ow if pool is None else pool[6] * pool[7]
    guarded = np.full(x.shape[0] * o * size + 64, 7.0, np.float32)  # a guard past y too
    y = guarded[: x.shape[0] * o * size].reshape(x.shape[0], o, size)
    y[...] = np.nan
    shifted, zshape = conv_direct_scratch(c, o, geom, oh, ow, pool)
    counter = np.zeros(1, np.int64)

    def one():  # scratch of its own (NaN: any read of an unwritten cell would show), and
        # a guard past each buffer's asked-for size: the kernel never writes there
        s, z = np.full(shifted + 64, np.nan, np.float32), np.full(zshape + 64, np.nan, np.float32)
        s[shifted:], z[zshape:] = 7.0, 7.0
        kb.conv2d_direct_forward(x, wp, b, act, geom, oh, ow, pool, counter, s[:shifted],
                                 z[:zshape], y)  # fmt: skip
        assert (s[shifted:] == 7.0).all() and (z[zshape:] == 7.0).all()

    runs = [threading.Thread(target=one) for _ in range(threads)]
    for r in runs:
        r.start()
    for r in runs:
        r.join()
    assert (guarded[y.size :] == 7.0).all()
    return y


# (N, C, H, W, O), (kh, kw), top/left padding, dilation, extra bottom/right padding, pool
CASES = [
    ((3, 1, 28, 28, 16), (3, 3), (1, 1), (1, 1), (1, 1), (2, 2, 0)),  # the bench CNN, conv 1
    ((2, 16, 14, 14, 32), (3, 3), (1, 1), (1, 1), (1, 1), (2, 2, 0)),  # and conv 2
    ((2, 3, 9, 7, 5), (3, 2), (0, 1), (1, 1), (0, 0), (3, 2, 1)),  # overlapping padded pool
    ((2, 2, 8, 11, 6), (2, 3), (1, 0), (2, 1), (0, 2), None),  # dilated, asymmetric pads
    ((1, 4, 5, 5, 3), (1, 1), (0, 0), (1, 1), (0, 0), None),  # 1x1
    ((2, 2, 4, 4, 9), (5, 5), (2, 2), (1, 1), (2, 2), (2, 2, 0)),  # a kernel as big as the image
    ((1, 3, 3, 30, 7), (3, 3), (1, 1), (1, 1), (1, 1), (2, 2, 0)),  # rows wider than 16
    ((0, 3, 6, 6, 4), (3, 3), (1, 1), (1, 1), (1, 1), None),  # no images
    # the pooled tiling (2x2 pool, K = C kh kw <= 32; identity and ReLU): odd sizes whose
    # last row / column no window takes, POH POW = 20 (a last vector of 4 windows), O = 6
    ((2, 2, 9, 11, 6), (3, 3), (1, 1), (1, 1), (1, 1), (2, 2, 0)),
    ((2, 3, 5, 7, 5), (2, 2), (0, 0), (2, 1), (1, 0), (2, 2, 0)),  # dilated, 6 windows < 8
    ((1, 1, 30, 4, 3), (3, 1), (1, 0), (1, 1), (1, 0), (2, 2, 0)),  # 2 columns of windows
    # 4x24 tiles: P = 32 (the last 4 vectors as 2 + 2) and P = 56 (3 + 2 + 2)
    ((2, 5, 4, 8, 7), (3, 3), (1, 1), (1, 1), (1, 1), None),
    ((1, 6, 7, 8, 5), (3, 3), (1, 1), (1, 1), (1, 1), (2, 2, 0)),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("act", ACTS, ids=ACTIVATIONS)
def test_direct_matches_reference_on_every_backend(be, case, act):
    args = _case(*case[0], *case[1:], act=act, bias=act % 2 == 0)
    want = _run(REF, *args)
    np.testing.assert_allclose(_run(be, *args), want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("case", CASES[:4])
@pytest.mark.parametrize("act", [0, 1, 2], ids=ACTIVATIONS[:3])
def test_reference_twin_is_the_definition(case, act):
    """The twin (im2col + matmul) against the tap-by-tap oracle, float64 sums."""
    args = _case(*case[0], *case[1:], act=act, bias=True, seed=3)
    np.testing.assert_allclose(_run(REF, *args), _oracle(*args), rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3), c=st.integers(1, 5), o=st.integers(1, 10),
    h=st.integers(1, 12), w=st.integers(1, 40), kh=st.integers(1, 4), kw=st.integers(1, 4),
    ph=st.integers(0, 2), pw=st.integers(0, 2), dh=st.integers(1, 2), dw=st.integers(1, 2),
    eh=st.integers(0, 2), ew=st.integers(0, 2), act=st.sampled_from(ACTS),
    pool=st.sampled_from([None, (2, 2, 0), (3, 2, 1), (2, 1, 1), (3, 3, 0)]),
)  # fmt: skip
def test_direct_property(n, c, o, h, w, kh, kw, ph, pw, dh, dw, eh, ew, act, pool):
    """Random geometries: every compiled backend equals the reference."""
    oh, ow = h + ph + eh - (kh - 1) * dh, w + pw + ew - (kw - 1) * dw
    if oh < 1 or ow < 1 or (pool is not None and (oh + 2 * pool[2] < pool[0] or
                                                   ow + 2 * pool[2] < pool[0])):  # fmt: skip
        return
    args = _case(n, c, h, w, o, (kh, kw), (ph, pw), (dh, dw), (eh, ew), pool, act, act != 1)
    want = _run(REF, *args)
    for name in BACKENDS:
        with backend.use_backend(name) as kb:
            np.testing.assert_allclose(_run(kb, *args), want, rtol=2e-5, atol=3e-5)


@pytest.mark.parametrize("c", [3, 6], ids=["pooled-tiling", "4x24-tiles"])
def test_threads_claim_images(be, c):
    """Two threads, each with its own scratch, claim images from one counter: the result is
    the one-thread result, exactly (an image's sums do not depend on who ran it)."""
    args = _case(9, c, 10, 10, 8, (3, 3), (1, 1), (1, 1), (1, 1), (2, 2, 0), 1, True)
    np.testing.assert_array_equal(_run(be, *args, threads=2), _run(be, *args))


@pytest.mark.parametrize("act", [0, 1], ids=ACTIVATIONS[:2])
@pytest.mark.parametrize(
    "shape",
    [(3, 1, 28, 28, 16), (2, 3, 11, 9, 6), (2, 2, 5, 6, 5), (2, 16, 14, 14, 32), (2, 6, 9, 10, 7)],
)
def test_pooled_tiling_is_the_4x24_tiles_pooled(be, shape, act):
    """With a 2x2 pool and a short reduction the kernel takes the pooled tiling (window
    corners maxed in registers); its sums run in the 4x24 tiles' order, so it gives exactly
    f(maxpool(z) + b) of the unpooled kernel's z. A longer reduction (C kh kw > 32: the last
    two shapes) pools z plane by plane, f(. + b) applied as each pooled plane is stored:
    the same bits as a separate pass after."""
    x, wt, b, _, geom, oh, ow, pool = _case(*shape, (3, 3), (1, 1), (1, 1), (1, 1), (2, 2, 0),
                                            act, True)  # fmt: skip
    z = _run(be, x, wt, None, 0, geom, oh, ow, None).reshape(len(x), shape[4], oh, ow)
    poh, pow_ = pool[6:]
    z = z[:, :, : 2 * poh, : 2 * pow_].reshape(len(x), shape[4], poh, 2, pow_, 2)
    want = z.max(axis=(3, 5)).reshape(len(x), shape[4], -1) + b[None, :, None]
    want = np.maximum(want, np.float32(0)) if act == 1 else want
    np.testing.assert_array_equal(_run(be, x, wt, b, act, geom, oh, ow, pool), want)


@pytest.mark.parametrize(
    "c, act",
    [(1, 0), (40, 0), (1, 2)],
    ids=["pooled-tiling", "4x24-pool-first", "4x24-sigmoid-then-pool"],
)
def test_nan_in_a_window_is_its_max(be, c, act):
    """A NaN reaching the pool gives a NaN (as np.max), whatever its place in the window:
    through the pooled tiling's register maxima and through the 2x2 pool of z (whose fast
    pass uses vmaxps, which drops a NaN, and redoes a plane exactly when it read one)."""
    x, wt, b, act, geom, oh, ow, pool = _case(1, c, 6, 6, 4, (1, 1), (0, 0), (1, 1), (0, 0),
                                              (2, 2, 0), act, False)  # fmt: skip
    wt[...] = 1.0
    for k in range(4):
        xx = x.copy()
        xx[0, 0, 2 + k // 2, 2 + k % 2] = np.nan
        y = _run(be, xx, wt, b, act, geom, oh, ow, pool).reshape(4, 3, 3)
        assert np.isnan(y[:, 1, 1]).all() and not np.isnan(np.delete(y.reshape(4, 9), 4, 1)).any()


def test_pack_layout():
    w = np.arange(5 * 2 * 3 * 2, dtype=np.float32).reshape(5, 2, 3, 2)
    wp = REF.conv2d_direct_pack(w.reshape(5, -1), 2, 3, 2)
    assert wp.shape == (2, 3, 4, 4)
    for o in range(5):
        for c in range(2):
            for i in range(3):
                for j in range(2):
                    assert wp[o // 4, i, c * 2 + j, o % 4] == w[o, c, i, j]
    assert (wp[1, :, :, 1:] == 0).all()  # filters 5..7 are zero padding


# -- a chain of direct convolutions, image by image ---------------------------------------

# layers of a chain: (O, (kh, kw), (ph, pw), pool window (k, stride, pad) or None, act)
CHAINS = [
    ((1, 28, 28), [(16, (3, 3), (1, 1), (2, 2, 0), 1), (32, (3, 3), (1, 1), (2, 2, 0), 1)]),
    (
        (3, 9, 11),
        [
            (5, (3, 3), (1, 1), None, 2),
            (6, (2, 3), (0, 1), (3, 2, 1), 0),
            (4, (1, 1), (0, 0), None, 3),
        ],
    ),  # fmt: skip
    (
        (2, 7, 7),
        [
            (7, (3, 3), (1, 1), (2, 2, 0), 0),
            (3, (3, 3), (1, 1), None, 1),
            (9, (3, 1), (1, 0), (2, 2, 0), 1),
            (2, (1, 1), (0, 0), None, 0),
        ],
    ),  # fmt: skip
]


def _chain_layers(kb, shape, specs, seed=0):
    """The chain's layers (conv2d_direct_chain's tuples) and each one's (O, out size)."""
    rng = np.random.default_rng(seed)
    layers, c, h, w = [], *shape
    for o, (kh, kw), (ph, pw), pool_win, act in specs:
        oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        pool, out_hw = None, (oh, ow)
        if pool_win is not None:
            pk, ps, pp = pool_win
            out_hw = ((oh + 2 * pp - pk) // ps + 1, (ow + 2 * pp - pk) // ps + 1)
            pool = (pk, pk, ps, ps, pp, pp, *out_hw)
        wt = (rng.standard_normal((o, c, kh, kw)) / np.sqrt(c * kh * kw)).astype(np.float32)
        b = rng.standard_normal(o).astype(np.float32)
        wp = kb.conv2d_direct_pack(wt.reshape(o, -1), c, kh, kw)
        geom = (kh, kw, 1, 1, ph, pw, 1, 1)
        layers.append((wp, b, act, geom, oh, ow, pool, c, h, w, o))
        c, (h, w) = o, out_hw
    return tuple(layers)


def _chain_scratch(layers):
    """One thread's (s, z, m0, m1), NaN-filled (a read of an unwritten cell would show), each
    a view of a buffer with a guard of 7.0 past it (see _guarded)."""
    sizes = [conv_direct_scratch(c, o, g, oh, ow, p) for *_, g, oh, ow, p, c, _, _, o in layers]
    outs = [o * (oh * ow if p is None else p[6] * p[7]) for *_, oh, ow, p, _, _, _, o in layers]
    mids = outs[:-1]
    return tuple(
        _guarded((size,))
        for size in (max(s for s, _ in sizes), max(z for _, z in sizes),
                     max(mids[0::2], default=1), max(mids[1::2], default=1))
    )  # fmt: skip


def _guarded(shape):
    """A NaN array of this shape, a view of a buffer 64 floats longer whose rest is 7.0."""
    size = int(np.prod(shape))
    buf = np.full(size + 64, 7.0, np.float32)
    buf[:size] = np.nan
    return buf[:size].reshape(shape)


def _guard_intact(a) -> bool:
    """Nothing was written past the array (the 7.0 guard _guarded put after it)."""
    return bool((a.base.reshape(-1)[a.size :] == 7.0).all())


def _chain_out(x, layers):
    *_, oh, ow, pool, _, _, _, o = layers[-1]
    return _guarded((len(x), o, oh * ow if pool is None else pool[6] * pool[7]))


@pytest.mark.parametrize("chain", CHAINS, ids=["bench-cnn", "three-layers", "four-layers"])
def test_chain_is_the_layers_one_after_the_other(be, chain):
    """conv2d_direct_chain gives, on every backend, exactly what its layers' direct kernel
    gives one layer at a time over the whole batch (the same per-image loop, in cache)."""
    shape, specs = chain
    x = np.random.default_rng(5).standard_normal((5, *shape)).astype(np.float32)
    layers = _chain_layers(be, shape, specs)
    want = x
    for wp, b, act, geom, oh, ow, pool, c, _, _, o in layers:
        y = np.full((len(x), o, oh * ow if pool is None else pool[6] * pool[7]), np.nan,
                    np.float32)  # fmt: skip
        s, z = conv_direct_scratch(c, o, geom, oh, ow, pool)
        be.conv2d_direct_forward(want, wp, b, act, geom, oh, ow, pool, np.zeros(1, np.int64),
                                 np.zeros(s, np.float32), np.zeros(z, np.float32), y)  # fmt: skip
        want = y.reshape(len(x), o, *(pool[6:] if pool is not None else (oh, ow)))
    y, sets = _chain_out(x, layers), _chain_scratch(layers)
    be.conv2d_direct_chain(x, layers, np.zeros(1, np.int64), *sets, y)
    np.testing.assert_array_equal(y, want.reshape(y.shape))
    assert all(_guard_intact(a) for a in (y, *sets))  # m0, m1: one image's output exactly
    # and the twin, within float32 rounding (its sums are im2col @)
    ref = _chain_out(x, layers)
    REF.conv2d_direct_chain(x, layers, np.zeros(1, np.int64), *_chain_scratch(layers), ref)
    np.testing.assert_allclose(y, ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("chain", CHAINS[:2], ids=["bench-cnn", "three-layers"])
def test_chain_same_bits_at_1_2_3_threads(be, chain):
    """On the shared pool, 1, 2 and 3 tasks (each with its own scratch) claiming the images
    of one counter give the same bits."""
    shape, specs = chain
    x = np.random.default_rng(6).standard_normal((11, *shape)).astype(np.float32)
    layers = _chain_layers(be, shape, specs, seed=1)
    ys = []
    for t in (1, 2, 3):
        y = _chain_out(x, layers)
        sets = tuple(_chain_scratch(layers) for _ in range(t))
        be.conv_direct_chain_threads(x, layers, sets, y, t)
        assert not np.isnan(y).any() and all(_guard_intact(a) for a in (y, *sum(sets, ())))
        ys.append(y)
    np.testing.assert_array_equal(ys[1], ys[0])
    np.testing.assert_array_equal(ys[2], ys[0])


def test_chain_rejects_what_it_cannot_run():
    from lepton_nn.kernels import _conv

    layers = _chain_layers(REF, (1, 6, 6), [(4, (3, 3), (1, 1), None, 0)])
    x, y = np.zeros((2, 1, 6, 6), np.float64), np.zeros((2, 4, 36), np.float32)
    sets = _chain_scratch(layers)
    with pytest.raises(TypeError, match="float32"):
        _conv.conv2d_direct_chain(x, layers, np.zeros(1, np.int64), *sets, y)
    bad = ((layers[0][0].astype(np.float64), *layers[0][1:]),)
    with pytest.raises(TypeError, match="float32"):
        _conv.conv2d_direct_chain(x.astype(np.float32), bad, np.zeros(1, np.int64), *sets, y)
    with pytest.raises(ValueError, match="1 to 8 layers"):
        _conv.conv2d_direct_chain(x.astype(np.float32), layers * 9, np.zeros(1, np.int64),
                                  *sets, y)  # fmt: skip


# -- the runtime ------------------------------------------------------------------------------


def _cnn(tmp_path, pool=True):
    import lepton_nn as ln
    from lepton_nn import nn

    ln.set_seed(0)
    # conv -> BatchNorm -> ReLU -> max pool: one step once the plan folds them
    layers = [nn.Conv2D(8, 3, padding="same", in_channels=2), nn.BatchNorm(), nn.ReLU()]
    layers += [nn.MaxPool2D(2)] if pool else []
    layers += [nn.Conv2D(6, (2, 3), padding="valid", activation="tanh"), nn.Flatten(),
               nn.Dense(3)]  # fmt: skip
    model = nn.Sequential(layers)
    x = np.random.default_rng(1).standard_normal((5, 2, 10, 9)).astype(np.float32)
    model(x)
    rng = np.random.default_rng(2)
    bn = layers[1]
    bn.running_mean[...] = rng.standard_normal(8)
    bn.running_var[...] = rng.uniform(0.5, 2.0, 8)
    bn.weight.data[...] = rng.uniform(0.5, 1.5, 8)
    model.eval()
    path = tmp_path / "cnn.lnn"
    ln.save(model, str(path))
    return model, x, str(path)


@pytest.mark.parametrize("pool", [True, False])
def test_runtime_direct_equals_im2col_path_and_model(tmp_path, monkeypatch, pool):
    import lepton_nn.runtime as rt
    from lepton_nn.runtime import steps_conv as steps

    model, x, path = _cnn(tmp_path, pool)
    want = model(x).data
    fast = rt.load(path).predict(x)
    monkeypatch.setattr(steps.ConvStep, "_direct", lambda self, ctx: False)
    slow = rt.load(path).predict(x)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast, want, rtol=1e-4, atol=1e-5)


def test_runtime_uses_direct_where_compiled(tmp_path):
    """On the compiled backend a float32 stride-1 convolution plans the direct kernel."""
    import lepton_nn.runtime as rt
    from lepton_nn.runtime.kernels import kernels

    _, x, path = _cnn(tmp_path)
    m = rt.load(path)
    compiled = type(kernels()).conv2d_direct_forward is not ReferenceBackend.conv2d_direct_forward
    plan = m.plan_for(4)
    calls = [(f, args if k < 0 else (None, *args)) for f, args, k in plan.head]
    calls += list(plan.tail)  # (fn, args), the input in args[0]
    # one thread: the kernel called straight; else through the pool (kernel's name second)
    pooled = kernels().conv_chunks_threads
    names = [args[1] if f == pooled else getattr(f, "__name__", "") for f, args in calls]
    names = [n for n in names if "conv2d" in n]
    # compiled: both convolutions in one call, image by image through the two
    want = (
        ["conv2d_direct_chain"]
        if compiled
        else ["conv2d_pool_forward_chunks", "conv2d_forward_chunks"]
    )
    assert names == want


@pytest.mark.parametrize("threads", [1, 2])
def test_runtime_direct_scratch_starts_on_cache_lines(tmp_path, monkeypatch, threads):
    """The chain's scratch (s, z and the outputs between its layers, per thread) starts on a
    64-byte boundary, so that the kernels' 8-float vectors never straddle a cache line
    (np.zeros gives 16-byte alignment: which did was each process's malloc's doing)."""
    import lepton_nn.runtime as rt
    from lepton_nn.runtime import steps_conv
    from lepton_nn.runtime.kernels import kernels

    if type(kernels()).conv2d_direct_forward is ReferenceBackend.conv2d_direct_forward:
        pytest.skip("the direct kernel is compiled only")
    monkeypatch.setattr(steps_conv, "threads_for", lambda work, parts: threads)
    _, _, path = _cnn(tmp_path)
    plan = rt.load(path, threads=threads).plan_for(4)
    calls = {getattr(f, "__name__", "").lstrip("_"): a for f, a, *_ in [*plan.head, *plan.tail]}
    if threads == 1:  # (x, layers, counter, s, z, m0, m1, y), x left out by the plan's head
        sets = [calls["conv2d_direct_chain"][-5:-1]]
    else:  # (x, layers, sets, y, threads)
        sets = calls["conv_direct_chain_threads"][-3]
    flat = [a for scratch in sets for a in scratch]
    assert len(flat) == 4 * threads  # s, z, m0, m1 per thread
    assert [a.ctypes.data % 64 for a in flat] == [0] * len(flat)


def test_runtime_chain_reads_the_input_uncopied(tmp_path, monkeypatch):
    """At 2 threads the chained plan hands the caller's input to the kernel as it is (a plan
    copies an input that a call reads other than as its first argument: 4 N C H W bytes)."""
    import lepton_nn.runtime as rt
    from lepton_nn.runtime import steps_conv as steps
    from lepton_nn.runtime.kernels import kernels

    monkeypatch.setattr(steps, "threads_for", lambda flops, tasks: min(2, tasks))

    _, x, path = _cnn(tmp_path)
    plan = rt.load(path, threads=2).plan_for(16)
    compiled = type(kernels()).conv2d_direct_chain is not ReferenceBackend.conv2d_direct_chain
    if compiled:
        assert [getattr(f, "__name__", "") for f, _, k in plan.head if k >= 0] == [
            "_conv_direct_chain_threads"
        ]
    assert not any(getattr(f, "__name__", "") == "_copy_into" for f, _, _ in plan.head)
    if compiled:  # the plan's first op is the pool job: posting it wakes the workers, so no
        # separate wake op runs before it
        assert "wake" not in [getattr(f, "__name__", "") for f, _, _ in plan.head]


def test_runtime_one_direct_conv_on_two_threads(tmp_path, monkeypatch):
    """A lone direct convolution on 2 threads runs as a chain of one on the pool: the input
    uncopied, the one-thread plan's bits."""
    import lepton_nn as ln
    import lepton_nn.runtime as rt
    from lepton_nn import nn
    from lepton_nn.runtime import steps_conv as steps

    ln.set_seed(0)
    model = nn.Sequential([nn.Conv2D(8, 3, padding="same", in_channels=3), nn.ReLU(),
                           nn.MaxPool2D(2), nn.Flatten(), nn.Dense(4)])  # fmt: skip
    x = np.random.default_rng(3).standard_normal((13, 3, 12, 10)).astype(np.float32)
    model(x)
    model.eval()
    ln.save(model, str(tmp_path / "one.lnn"))
    one = rt.load(tmp_path / "one.lnn", threads=1).predict(x)
    monkeypatch.setattr(steps, "threads_for", lambda flops, tasks: min(2, tasks))
    two = rt.load(tmp_path / "one.lnn", threads=2)
    np.testing.assert_array_equal(two.predict(x), one)
    np.testing.assert_allclose(one, model(x).data, rtol=1e-4, atol=1e-5)
    from lepton_nn.runtime.kernels import kernels

    if type(kernels()).conv2d_direct_chain is not ReferenceBackend.conv2d_direct_chain:
        head = two.plan_for(13).head
        assert not any(getattr(f, "__name__", "") == "_copy_into" for f, _, _ in head)


def test_runtime_chain_equals_layer_by_layer(tmp_path, monkeypatch):
    """The chained plan gives the bits of the same direct kernels bound one by one, at 1, 2
    and 3 threads."""
    import lepton_nn.runtime as rt
    from lepton_nn.runtime import plan

    _, x, path = _cnn(tmp_path)
    xs = np.concatenate([x, x[::-1], x])
    chained = [rt.load(path, threads=t).predict(xs) for t in (1, 2, 3)]
    m = rt.load(path)
    assert "chained" in "\n".join(m.network.describe())
    # the chain's layers' weights are counted as the unchained steps' were
    w2 = [p.w2.nbytes for s in m.network.steps for p in getattr(s, "parts", [])]
    assert len(w2) == 2 and m.plan_info(1)["weight_bytes"] >= sum(w2)
    monkeypatch.setattr(plan, "_chain_convs", lambda steps: steps)
    one_by_one = rt.load(path, threads=1)
    assert "chained" not in "\n".join(one_by_one.network.describe())
    want = one_by_one.predict(xs)
    for y in chained:
        np.testing.assert_array_equal(y, want)


def test_runtime_two_threads_equal_one(tmp_path):
    """Images spread over two threads give the one-thread plan's result exactly."""
    import lepton_nn.runtime as rt

    _, x, path = _cnn(tmp_path)
    xs = np.concatenate([x, x[::-1]])
    one = rt.load(path, threads=1).predict(xs)
    np.testing.assert_array_equal(rt.load(path, threads=2).predict(xs), one)
