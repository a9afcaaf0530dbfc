"""Chapter 4: your loss against ``lepton_nn.losses.cross_entropy`` and its kernel pair
(``softmax_xent_forward`` / ``softmax_xent_backward``), and your Adam against
``lepton_nn.optim.Adam`` and its ``adam_step`` kernel (the NumPy twin in
``backend/reference.py`` and the active compiled backend)."""

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import losses, optim
from lepton_nn.backend import get_backend
from lepton_nn.backend.reference import ReferenceBackend


def backends():
    """The active backend (compiled when built) and the NumPy twin, each once."""
    active = get_backend()
    return [active] if active.name == "reference" else [active, ReferenceBackend()]


def logits(seed=0, n=6, c=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c)) * 3, rng.integers(0, c, size=n)


def test_log_softmax_rows(ex):
    z, _ = logits()
    lp = ex.log_softmax(z)
    assert lp.shape == z.shape and np.allclose(np.exp(lp).sum(axis=1), 1)
    assert np.allclose(lp, ln.Tensor(z).log_softmax(axis=-1).data)


def test_log_softmax_is_stable(ex):
    z, _ = logits(seed=1)
    with np.errstate(over="raise", invalid="raise"):  # an overflow fails the test
        far = ex.log_softmax(z + 1e4)
        neg = ex.log_softmax(z - 1e4)
    assert np.allclose(far, ex.log_softmax(z)) and np.allclose(neg, ex.log_softmax(z))


def test_softmax_xent_matches_lepton_nn(ex):
    z, t = logits(seed=2)
    loss, dz = ex.softmax_xent(z, t)
    tz = ln.Tensor(z, requires_grad=True)
    lib = losses.cross_entropy(tz, t)
    lib.backward()
    assert np.isclose(loss, float(lib.data)) and np.allclose(dz, tz.grad)


def test_softmax_xent_matches_the_kernels(ex):
    z, t = logits(seed=3)
    loss, dz = ex.softmax_xent(z, t)
    n = len(t)
    for be in backends():
        probs, per_row = np.empty_like(z), np.empty(n)
        be.softmax_xent_forward(z, t.astype(np.int64), probs, per_row)
        assert np.isclose(loss, per_row.mean()), be.name
        g = be.softmax_xent_backward(probs, t.astype(np.int64), np.full(n, 1 / n), np.empty_like(z))
        assert np.allclose(dz, g), be.name


def test_softmax_xent_matches_numeric(ex):
    z, t = logits(seed=4, n=3, c=3)
    _, dz = ex.softmax_xent(z, t)
    for idx in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[idx] += 1e-6
        down[idx] -= 1e-6
        numeric = (ex.softmax_xent(up, t)[0] - ex.softmax_xent(down, t)[0]) / 2e-6
        assert dz[idx] == pytest.approx(numeric, abs=1e-7), idx


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_matches_lepton_nn(ex, weight_decay):
    rng = np.random.default_rng(5)
    start = rng.normal(size=(3, 2))
    param = ln.nn.Parameter(start.copy())
    opt = optim.Adam([param], lr=0.05, betas=(0.8, 0.99), weight_decay=weight_decay)
    p, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for t in range(1, 8):
        g = rng.normal(size=start.shape) * 10.0**t  # Adam does not care about the scale
        kept = g.copy()
        param.grad = g.copy()
        opt.step()
        ex.adam_step(p, g, m, v, t, lr=0.05, b1=0.8, b2=0.99, weight_decay=weight_decay)
        assert np.array_equal(g, kept), "adam_step changed the caller's gradient"
        assert np.allclose(p, param.data), t


def test_adam_matches_the_kernel(ex):
    rng = np.random.default_rng(6)
    for be in backends():
        p, g = rng.normal(size=50).astype(np.float32), rng.normal(size=50).astype(np.float32)
        m, v = np.zeros_like(p), np.zeros_like(p)
        p2, m2, v2 = p.copy(), m.copy(), v.copy()
        for t in (1, 2, 3):
            be.adam_step(p2, g, m2, v2, 0.01, 0.9, 0.999, 1e-8, 0.0, t, False)
            ex.adam_step(p, g, m, v, t, lr=0.01)
        assert np.allclose(p, p2, atol=1e-6) and np.allclose(v, v2), be.name


def test_adams_first_step_is_lr_times_the_sign(ex):
    p = np.zeros(3)
    ex.adam_step(p, np.array([1e-6, 3.0, -500.0]), np.zeros(3), np.zeros(3), 1, lr=0.01)
    assert np.allclose(p, [-0.01, -0.01, 0.01], rtol=1e-2)
