"""Chapter 6: your im2col / col2im against the NumPy twins of the compiled kernels
(``im2col`` / ``col2im`` in ``backend/reference.py``) and the active backend's convolution;
your convolution against ``lepton_nn.ops.conv.conv2d`` forward and backward; your LSTM step
against ``lepton_nn.ops.recurrent.lstm`` (kernels ``lstm_step_forward`` / ``_backward``)."""

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn.backend.reference import ReferenceBackend
from lepton_nn.ops.conv import conv2d
from lepton_nn.ops.recurrent import lstm

GEOMETRIES = [(3, 3, 1, 0), (3, 3, 1, 1), (2, 3, 2, 1), (1, 1, 1, 0), (3, 2, 2, 0)]


def out_size(h, k, s, p):
    return (h + 2 * p - k) // s + 1


@pytest.mark.parametrize(("kh", "kw", "stride", "padding"), GEOMETRIES)
def test_im2col_and_col2im_match_the_reference_kernels(ex, kh, kw, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 6, 7))
    oh, ow = out_size(6, kh, stride, padding), out_size(7, kw, stride, padding)
    ref = ReferenceBackend()
    geom = (kh, kw, stride, stride, padding, padding, 1, 1)
    want = ref.im2col(x, *geom, np.empty((2, 3 * kh * kw, oh, ow)))
    cols = ex.im2col(x, kh, kw, stride, padding)
    assert cols.shape == (2, 3 * kh * kw, oh * ow)
    assert np.array_equal(cols, want.reshape(cols.shape))
    g = rng.normal(size=cols.shape)
    back = ex.col2im(g, x.shape, kh, kw, stride, padding)
    assert np.allclose(back, ref.col2im(g.reshape(want.shape), *geom, np.empty_like(x)))
    # adjoint: <im2col(x), g> = <x, col2im(g)> for every x and g
    assert np.isclose(np.sum(cols * g), np.sum(x * back))


@pytest.mark.parametrize(("kh", "kw", "stride", "padding"), GEOMETRIES)
def test_conv2d_matches_lepton_nn(ex, kh, kw, stride, padding):
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=(2, 3, 6, 7)), rng.normal(size=(4, 3, kh, kw)), rng.normal(size=4)
    y = ex.conv2d_forward(x, w, b, stride, padding)
    tx, tw, tb = (ln.Tensor(a, requires_grad=True) for a in (x, w, b))
    out = conv2d(tx, tw, tb, stride=stride, padding=padding)
    assert y.shape == out.shape and np.allclose(y, out.data)
    G = rng.normal(size=y.shape)
    out.backward(G)
    dx, dw, db = ex.conv2d_backward(G, x, w, stride, padding)
    assert np.allclose(dx, tx.grad) and np.allclose(dw, tw.grad) and np.allclose(db, tb.grad)


def test_conv2d_backward_matches_numeric(ex):
    rng = np.random.default_rng(2)
    x, w, b = rng.normal(size=(1, 2, 4, 4)), rng.normal(size=(2, 2, 2, 2)), rng.normal(size=2)
    G = rng.normal(size=(1, 2, 3, 3))
    dx, dw, _ = ex.conv2d_backward(G, x, w, 2, 1)
    for arr, analytic in ((x, dx), (w, dw)):
        for idx in np.ndindex(arr.shape):
            keep = arr[idx]
            arr[idx] = keep + 1e-6
            up = np.sum(ex.conv2d_forward(x, w, b, 2, 1) * G)
            arr[idx] = keep - 1e-6
            down = np.sum(ex.conv2d_forward(x, w, b, 2, 1) * G)
            arr[idx] = keep
            assert analytic[idx] == pytest.approx((up - down) / 2e-6, abs=1e-6), idx


def lstm_problem(seed=3, B=2, F=3, U=4):
    rng = np.random.default_rng(seed)
    return {
        "x_t": rng.normal(size=(B, F)),
        "h": rng.normal(size=(B, U)),
        "c": rng.normal(size=(B, U)),
        "W_ih": rng.normal(size=(F, 4 * U)) * 0.5,
        "W_hh": rng.normal(size=(U, 4 * U)) * 0.5,
        "b": rng.normal(size=4 * U),
    }, rng


def test_lstm_step_matches_lepton_nn(ex):
    """Three steps of yours against lepton_nn's lstm over the same sequence."""
    p, rng = lstm_problem()
    seq = rng.normal(size=(2, 3, 3))
    h, c = p["h"], p["c"]
    for t in range(3):
        h, c, _ = ex.lstm_step(seq[:, t], h, c, p["W_ih"], p["W_hh"], p["b"])
    args = [ln.Tensor(p[k]) for k in ("W_ih", "W_hh", "b")]
    _, h_lib, c_lib = lstm(ln.Tensor(seq), *args, h0=ln.Tensor(p["h"]), c0=ln.Tensor(p["c"]))
    assert np.allclose(h, h_lib.data) and np.allclose(c, c_lib.data)


def test_lstm_step_backward_matches_lepton_nn(ex):
    p, rng = lstm_problem(seed=4)
    dh, dc = rng.normal(size=p["h"].shape), rng.normal(size=p["c"].shape)
    h, c, cache = ex.lstm_step(**p)
    grads = ex.lstm_step_backward(dh, dc, cache)
    t = {k: ln.Tensor(v[:, None] if k == "x_t" else v, requires_grad=True) for k, v in p.items()}
    _, h_lib, c_lib = lstm(t["x_t"], t["W_ih"], t["W_hh"], t["b"], h0=t["h"], c0=t["c"])
    (h_lib * ln.Tensor(dh) + c_lib * ln.Tensor(dc)).sum().backward()
    assert np.allclose(h, h_lib.data) and np.allclose(c, c_lib.data)
    for k in p:
        want = t[k].grad[:, 0] if k == "x_t" else t[k].grad
        assert np.shape(grads[k]) == p[k].shape, k
        assert np.allclose(grads[k], want), k


def test_lstm_step_backward_matches_numeric(ex):
    p, rng = lstm_problem(seed=5, B=1, F=2, U=2)
    dh, dc = rng.normal(size=(1, 2)), rng.normal(size=(1, 2))

    def loss():
        h, c, _ = ex.lstm_step(**p)
        return np.sum(h * dh) + np.sum(c * dc)

    grads = ex.lstm_step_backward(dh, dc, ex.lstm_step(**p)[2])
    for k, arr in p.items():
        for idx in np.ndindex(arr.shape):
            keep = arr[idx]
            arr[idx] = keep + 1e-6
            up = loss()
            arr[idx] = keep - 1e-6
            down = loss()
            arr[idx] = keep
            assert grads[k][idx] == pytest.approx((up - down) / 2e-6, abs=1e-7), (k, idx)
