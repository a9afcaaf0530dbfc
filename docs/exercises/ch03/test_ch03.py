"""Chapter 3: your Dense layer against lepton_nn's fused ``linear`` op (``ops/linalg.py``),
against the epilogue kernels (``bias_act_forward`` / ``bias_act_backward``: the NumPy twin in
``backend/reference.py`` and the active compiled backend), and against central differences."""

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn.backend import ACT_CODE, get_backend
from lepton_nn.backend.reference import ReferenceBackend
from lepton_nn.ops import linear

ACTS = ["identity", "relu", "sigmoid", "tanh", "gelu"]


def problem(seed=0, n=5, i=4, o=3):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, i)),
        rng.normal(size=(i, o)),
        rng.normal(size=o),
        rng.normal(size=(n, o)),
    )


@pytest.mark.parametrize("act", ACTS)
def test_matches_linear_op(ex, act):
    x, W, b, G = problem()
    z, y = ex.dense_forward(x, W, b, act)
    dx, dW, db = ex.dense_backward(G, x, W, z, act)
    assert (dx.shape, dW.shape, db.shape) == (x.shape, W.shape, b.shape)
    tx, tW, tb = (ln.Tensor(a, requires_grad=True) for a in (x, W, b))
    out = linear(tx, tW, tb, act)
    out.backward(G)
    assert np.allclose(z, x @ W + b) and np.allclose(y, out.data)
    for ours, theirs, name in ((dx, tx.grad, "dx"), (dW, tW.grad, "dW"), (db, tb.grad, "db")):
        assert np.allclose(ours, theirs), (act, name)


@pytest.mark.parametrize("act", ["identity", "sigmoid", "tanh", "gelu"])
def test_matches_numeric(ex, act):
    """Central differences of L = sum(y * G) for every entry of x, W and b (ReLU's kink at 0
    is left out: a difference across it measures neither side)."""
    x, W, b, G = problem(seed=1, n=3, i=3, o=2)
    z, _ = ex.dense_forward(x, W, b, act)
    grads = ex.dense_backward(G, x, W, z, act)
    args = [x, W, b]
    for k, analytic in enumerate(grads):
        numeric = np.zeros_like(args[k])
        for idx in np.ndindex(args[k].shape):
            vals = []
            for step in (1e-6, -1e-6):
                moved = [a.copy() for a in args]
                moved[k][idx] += step
                vals.append(np.sum(ex.dense_forward(*moved, act)[1] * G))
            numeric[idx] = (vals[0] - vals[1]) / 2e-6
        assert np.allclose(analytic, numeric, atol=1e-6), (act, k)


@pytest.mark.parametrize("act", ACTS)
def test_matches_the_epilogue_kernels(ex, act):
    """The kernels take z = x W without the bias and add it themselves; float32 here, the
    dtype the layers train in."""
    x, W, b, G = (a.astype(np.float32) for a in problem(seed=2, n=6, i=5, o=4))
    z, y = ex.dense_forward(x, W, b, act)
    dx, _, db = ex.dense_backward(G, x, W, z, act)
    xw = x @ W
    active = get_backend()
    for backend in [active] if active.name == "reference" else [active, ReferenceBackend()]:
        ky = backend.bias_act_forward(xw, b, ACT_CODE[act], np.empty_like(xw))
        assert np.allclose(y, ky, atol=1e-5), (backend.name, act)
        gz, gb = backend.bias_act_backward(
            G, ky, xw, b, ACT_CODE[act], np.empty_like(G), np.empty_like(b)
        )
        assert np.allclose(dx, gz @ W.T, atol=1e-4), (backend.name, act)
        assert np.allclose(db, gb, atol=1e-4), (backend.name, act)


def test_duplicated_batch_doubles_dW_and_db(ex):
    x, W, b, G = problem(seed=3)
    z, _ = ex.dense_forward(x, W, b)
    _, dW, db = ex.dense_backward(G, x, W, z)
    x2, G2 = np.vstack([x, x]), np.vstack([G, G])
    z2, _ = ex.dense_forward(x2, W, b)
    dx2, dW2, db2 = ex.dense_backward(G2, x2, W, z2)
    assert np.allclose(dW2, 2 * dW) and np.allclose(db2, 2 * db) and dx2.shape == x2.shape
