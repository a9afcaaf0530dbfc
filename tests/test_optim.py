"""Optimizers against hand-computed update rules, LR schedules, clipping, backend parity."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import optim
from lepton_nn.backend import use_backend
from lepton_nn.nn import Dense, Parameter

P0 = np.array([0.5, -1.0, 2.0])
G1 = np.array([0.1, -0.3, 0.8])
G2 = np.array([-0.2, 0.4, 0.05])


def two_steps(make, p0=P0, dtype=np.float64):
    """Run two steps of the optimizer ``make(params)`` with fixed gradients G1 then G2."""
    p = Parameter(p0.astype(dtype))
    opt = make([p])
    out = []
    for g in (G1, G2):
        opt.zero_grad()
        assert p.grad is None
        p.grad = g.astype(dtype)
        opt.step()
        out.append(p.data.copy())
    return out


def assert_steps(got, expected):
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


# -- SGD ------------------------------------------------------------------------------------------


def test_sgd_plain():
    lr = 0.1
    p1 = P0 - lr * G1
    p2 = p1 - lr * G2
    assert_steps(two_steps(lambda ps: optim.SGD(ps, lr=lr)), [p1, p2])


def test_sgd_momentum_weight_decay():
    lr, mu, wd = 0.1, 0.9, 0.01
    d1 = G1 + wd * P0
    b1 = d1  # the buffer starts at the first gradient
    p1 = P0 - lr * b1
    d2 = G2 + wd * p1
    b2 = mu * b1 + d2
    p2 = p1 - lr * b2
    got = two_steps(lambda ps: optim.SGD(ps, lr=lr, momentum=mu, weight_decay=wd))
    assert_steps(got, [p1, p2])


def test_sgd_nesterov():
    lr, mu, wd = 0.05, 0.8, 0.1
    d1 = G1 + wd * P0
    b1 = d1
    p1 = P0 - lr * (d1 + mu * b1)
    d2 = G2 + wd * p1
    b2 = mu * b1 + d2
    p2 = p1 - lr * (d2 + mu * b2)
    got = two_steps(lambda ps: optim.SGD(ps, lr=lr, momentum=mu, nesterov=True, weight_decay=wd))
    assert_steps(got, [p1, p2])


def test_sgd_settings():
    p = [Parameter(np.zeros(2))]
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(p, lr=-1)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)


# -- RMSprop ---------------------------------------------------------------------------------------


def test_rmsprop_plain():
    lr, a, eps = 0.01, 0.9, 1e-8
    v1 = (1 - a) * G1**2
    p1 = P0 - lr * G1 / (np.sqrt(v1) + eps)
    v2 = a * v1 + (1 - a) * G2**2
    p2 = p1 - lr * G2 / (np.sqrt(v2) + eps)
    assert_steps(two_steps(lambda ps: optim.RMSprop(ps, lr=lr, alpha=a, eps=eps)), [p1, p2])


def test_rmsprop_centered_momentum_weight_decay():
    lr, a, eps, mu, wd = 0.01, 0.9, 1e-6, 0.5, 0.1
    d1 = G1 + wd * P0
    v1 = (1 - a) * d1**2
    m1 = (1 - a) * d1
    b1 = d1 / (np.sqrt(v1 - m1**2) + eps)
    p1 = P0 - lr * b1
    d2 = G2 + wd * p1
    v2 = a * v1 + (1 - a) * d2**2
    m2 = a * m1 + (1 - a) * d2
    b2 = mu * b1 + d2 / (np.sqrt(v2 - m2**2) + eps)
    p2 = p1 - lr * b2
    got = two_steps(
        lambda ps: optim.RMSprop(
            ps, lr=lr, alpha=a, eps=eps, momentum=mu, centered=True, weight_decay=wd
        )
    )
    assert_steps(got, [p1, p2])


# -- Adam, AdamW -----------------------------------------------------------------------------------


def _adam_by_hand(lr, b1, b2, eps, wd, decoupled):
    p, m, v, out = P0.copy(), 0.0, 0.0, []
    for t, g in enumerate((G1, G2), start=1):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(p)
    return out


def test_adam():
    got = two_steps(lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-7))
    assert_steps(got, _adam_by_hand(0.01, 0.8, 0.95, 1e-7, 0.0, False))


def test_adam_l2_weight_decay():
    got = two_steps(lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1))
    assert_steps(got, _adam_by_hand(0.01, 0.9, 0.999, 1e-8, 0.1, False))


def test_adamw():
    got = two_steps(lambda ps: optim.AdamW(ps, lr=0.02, weight_decay=0.3))
    assert_steps(got, _adam_by_hand(0.02, 0.9, 0.999, 1e-8, 0.3, True))
    assert optim.AdamW([Parameter(np.zeros(1))]).weight_decay == 0.01


def test_adam_first_step_is_lr_times_sign():
    # with bias correction, |m_hat / sqrt(v_hat)| = 1 at t = 1
    (p1, _) = two_steps(lambda ps: optim.Adam(ps, lr=0.1, eps=0.0))
    np.testing.assert_allclose(p1, P0 - 0.1 * np.sign(G1))


def test_adam_settings():
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([Parameter(np.zeros(1))], betas=(1.0, 0.9))


# -- common behaviour ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: optim.RMSprop(ps, lr=0.01, centered=True, momentum=0.5),
        lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1),
        lambda ps: optim.AdamW(ps, lr=0.01),
    ],
    ids=["sgd", "rmsprop", "adam", "adamw"],
)
def test_common_behaviour(make):
    a = Parameter(np.ones(3, np.float32))
    b = Parameter(np.ones((2, 2), np.float32))
    opt = make([a, b])
    a.grad = np.full(3, 0.5, np.float32)
    g_before = a.grad.copy()
    opt.step()
    assert a.dtype == np.float32 and a.grad.dtype == np.float32
    assert not np.allclose(a.data, 1)  # a moved
    np.testing.assert_array_equal(b.data, 1)  # b had no gradient: untouched
    np.testing.assert_array_equal(a.grad, g_before)  # the step leaves the gradient alone
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_optimizer_from_a_module_and_a_real_gradient():
    ln.set_seed(0)
    layer = Dense(2, in_features=3)
    opt = optim.SGD(layer, lr=0.5)
    assert len(opt.params) == 2
    w0 = layer.weight.data.copy()
    x = np.ones((4, 3), np.float32)
    layer(x).sum().backward()
    opt.step()
    np.testing.assert_allclose(layer.weight.data, w0 - 0.5 * 4.0, rtol=1e-6)


def test_state_follows_a_replaced_parameter():
    p = Parameter(np.ones(3, np.float32))
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.ones(3, np.float32)
    opt.step()
    p.data = np.ones(3, np.float64)  # the parameter's array (and dtype) is replaced
    p.grad = np.ones(3, np.float64)
    opt.step()
    assert p.dtype == np.float64


# -- learning-rate schedules -----------------------------------------------------------------------


def _lrs(sched, n):
    return [sched.step() for _ in range(n)]


def _opt(lr=1.0):
    return optim.SGD([Parameter(np.zeros(1))], lr=lr)


def test_step_lr():
    opt = _opt(1.0)
    got = _lrs(optim.StepLR(opt, step_size=2, gamma=0.5), 6)
    np.testing.assert_allclose(got, [1.0, 0.5, 0.5, 0.25, 0.25, 0.125])
    assert opt.lr == 0.125


def test_exponential_lr():
    got = _lrs(optim.ExponentialLR(_opt(0.1), gamma=0.9), 4)
    np.testing.assert_allclose(got, [0.1 * 0.9**t for t in range(1, 5)])


def test_cosine_annealing_lr():
    got = _lrs(optim.CosineAnnealingLR(_opt(1.0), t_max=4, eta_min=0.2), 6)
    expected = [0.2 + 0.8 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(1, 5)]
    np.testing.assert_allclose(got, [*expected, 0.2, 0.2])  # held at eta_min after t_max
    assert got[1] == pytest.approx(0.6)


def test_linear_warmup():
    opt = _opt(0.3)
    sched = optim.LinearWarmup(opt, warmup_steps=3)
    assert opt.lr == pytest.approx(0.1)
    np.testing.assert_allclose(_lrs(sched, 4), [0.2, 0.3, 0.3, 0.3])


def test_linear_warmup_then_decay():
    opt = _opt(1.0)
    after = optim.ExponentialLR(opt, gamma=0.5)
    sched = optim.LinearWarmup(opt, warmup_steps=2, after=after)
    assert opt.lr == pytest.approx(0.5)
    np.testing.assert_allclose(_lrs(sched, 4), [1.0, 0.5, 0.25, 0.125])


def test_schedule_drives_the_update():
    p = Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=1.0)
    sched = optim.StepLR(opt, step_size=1, gamma=0.1)
    for _ in range(3):
        p.grad = np.ones(1)
        opt.step()
        sched.step()
    np.testing.assert_allclose(p.data, [-(1.0 + 0.1 + 0.01)])


# -- clipping --------------------------------------------------------------------------------------


def _params_with_grads(*grads):
    ps = []
    for g in grads:
        p = Parameter(np.zeros_like(np.asarray(g, np.float64)))
        p.grad = None if g is None else np.array(g, np.float64)
        ps.append(p)
    return ps


def test_clip_grad_norm_scales_jointly():
    ps = _params_with_grads([3.0, 4.0], [[12.0]], None)
    total = optim.clip_grad_norm_(ps, max_norm=6.5)
    assert total == pytest.approx(13.0)
    coef = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(ps[0].grad, [3 * coef, 4 * coef])
    np.testing.assert_allclose(ps[1].grad, [[12 * coef]])
    assert ps[2].grad is None
    new = math.sqrt(sum(float((p.grad**2).sum()) for p in ps[:2]))
    assert new == pytest.approx(6.5, rel=1e-6)


def test_clip_grad_norm_leaves_small_grads():
    ps = _params_with_grads([0.3, 0.4])
    assert optim.clip_grad_norm_(ps, max_norm=1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(ps[0].grad, [0.3, 0.4])
    assert optim.clip_grad_norm_(_params_with_grads(None), 1.0) == 0.0


def test_clip_grad_norm_other_norms():
    ps = _params_with_grads([3.0, -4.0], [1.0])
    assert optim.clip_grad_norm_(ps, max_norm=2.0, norm_type=math.inf) == pytest.approx(4.0)
    np.testing.assert_allclose(ps[0].grad, [1.5, -2.0], rtol=1e-6)
    ps = _params_with_grads([3.0, -4.0], [1.0])
    assert optim.clip_grad_norm_(ps, max_norm=100.0, norm_type=1) == pytest.approx(8.0)


def test_clip_grad_value():
    ps = _params_with_grads([-3.0, 0.2, 5.0], None)
    optim.clip_grad_value_(ps, 1.0)
    np.testing.assert_array_equal(ps[0].grad, [-1.0, 0.2, 1.0])
    assert ps[1].grad is None


# -- every backend gives the reference's result ----------------------------------------------------


@pytest.mark.parametrize("backend", ln.backend.available())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "cls,wd", [(optim.Adam, 0.0), (optim.Adam, 0.05), (optim.AdamW, 0.1)], ids=str
)
def test_adam_on_every_backend_matches_reference(backend, dtype, cls, wd):
    def run(name):
        r = np.random.default_rng(42)
        ps = [Parameter(r.standard_normal(s).astype(dtype)) for s in [(37, 5), (3,), (1,)]]
        grads = [[r.standard_normal(p.shape).astype(dtype) for p in ps] for _ in range(4)]
        pristine = [[g.copy() for g in gs] for gs in grads]
        opt = cls(ps, lr=0.01, weight_decay=wd)
        with use_backend(name):
            for step_grads in grads:
                for p, g in zip(ps, step_grads):
                    p.grad = g
                opt.step()
        for gs, kept in zip(grads, pristine):
            for g, k in zip(gs, kept):
                np.testing.assert_array_equal(g, k)  # a kernel never writes into the gradient
        return ps

    tol = 1e-6 if dtype == np.float32 else 1e-13
    for a, b in zip(run(backend), run("reference")):
        assert a.dtype == dtype
        np.testing.assert_allclose(a.data, b.data, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", ln.backend.available())
@pytest.mark.parametrize("layout", ["fortran", "strided"])
@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW, optim.SGD, optim.RMSprop], ids=str)
def test_non_contiguous_parameters(backend, layout, cls):
    r = np.random.default_rng(3)
    base = r.standard_normal((5, 4))
    grads = [r.standard_normal((5, 4)) for _ in range(3)]
    if layout == "fortran":
        data = np.asfortranarray(base)
    else:
        data = np.zeros((5, 8))[:, ::2]
        data[...] = base
    p, ref = Parameter(data), Parameter(base.copy())
    opt, ref_opt = cls([p], lr=0.1), cls([ref], lr=0.1)
    with use_backend(backend):
        for g in grads:
            p.grad, ref.grad = g.copy(), g.copy()
            opt.step()
            ref_opt.step()
    assert p.data is data  # updated in place, where the caller's array lives
    np.testing.assert_allclose(p.data, ref.data, rtol=1e-12, atol=1e-14)


def test_load_state_dict_gives_c_ordered_parameters():
    layer = Dense(3, in_features=4)
    layer.load_state_dict({"weight": np.ones((3, 4)).T, "bias": np.zeros(3)})
    assert layer.weight.data.flags.c_contiguous


@pytest.mark.parametrize("backend", ln.backend.available())
def test_adam_refuses_a_read_only_parameter(backend):
    data = np.ones(4)
    data.flags.writeable = False
    p = Parameter(data)
    p.grad = np.ones(4)
    with use_backend(backend), pytest.raises(ValueError, match="read-only"):
        optim.Adam([p], lr=0.1).step()
    np.testing.assert_array_equal(data, 1.0)
