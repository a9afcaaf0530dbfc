"""gradcheck (central differences, float64) of every differentiable op and Tensor method.

One line per case: ``check(fn, *shapes)`` draws float64 inputs of those shapes (all requiring
grad) and asserts that ``lepton_nn.gradcheck`` agrees with the analytic gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import Function, Tensor, losses
from lepton_nn.errors import GradcheckError
from lepton_nn.ops import linear


def inputs(*shapes, kind="normal", seed=0):
    """float64 tensors requiring grad; kind: normal | positive | away (|x| in [0.3, 2])."""
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes:
        if kind == "positive":
            a = rng.uniform(0.5, 2.0, s)
        elif kind == "away":
            a = rng.uniform(0.3, 2.0, s) * rng.choice([-1.0, 1.0], s)
        else:
            a = rng.standard_normal(s)
        out.append(Tensor(np.asarray(a, np.float64), requires_grad=True))
    return out


def check(fn, *shapes, kind="normal", seed=0):
    xs = inputs(*shapes, kind=kind, seed=seed)
    out = fn(*xs)
    assert isinstance(out, Tensor) and out.dtype == np.float64
    assert ln.gradcheck(fn, *xs)


# -- elementwise arithmetic with broadcasting in both directions ----------------------------------

BINARY_SHAPES = [
    ((3, 4), (3, 4)),
    ((3, 4), (4,)),
    ((4,), (3, 4)),
    ((3, 1), (1, 4)),
    ((1, 4), (3, 1)),
    ((2, 3, 4), (3, 1)),
    ((3, 4), ()),
    ((), (3, 4)),
    ((), ()),
]


@pytest.mark.parametrize("sa,sb", BINARY_SHAPES)
def test_add(sa, sb):
    check(lambda a, b: a + b, sa, sb)


@pytest.mark.parametrize("sa,sb", BINARY_SHAPES)
def test_sub(sa, sb):
    check(lambda a, b: a - b, sa, sb)


@pytest.mark.parametrize("sa,sb", BINARY_SHAPES)
def test_mul(sa, sb):
    check(lambda a, b: a * b, sa, sb)


@pytest.mark.parametrize("sa,sb", BINARY_SHAPES)
def test_div(sa, sb):
    check(lambda a, b: a / b, sa, sb, kind="away")


@pytest.mark.parametrize("sa,sb", BINARY_SHAPES)
def test_pow_tensor_exponent(sa, sb):
    check(lambda a, b: a**b, sa, sb, kind="positive")


@pytest.mark.parametrize("sa,sb", [((3, 4), (4,)), ((3, 1), (1, 4))])
def test_maximum(sa, sb):
    check(ln.maximum, sa, sb)


def test_python_scalars_on_both_sides():
    check(lambda a: 2.0 + a, (3,))
    check(lambda a: a + 2.0, (3,))
    check(lambda a: 2.0 - a, (3,))
    check(lambda a: a - 2.0, (3,))
    check(lambda a: 3.0 * a * 0.5, (3,))
    check(lambda a: 1.5 / a, (3,), kind="away")
    check(lambda a: a / 1.5, (3,))
    check(lambda a: a**3, (3,))
    check(lambda a: a**2.5, (3,), kind="positive")
    check(lambda a: a**-1.5, (3,), kind="positive")
    check(lambda a: 2.0**a, (3,))
    check(lambda a: np.float64(2.0) * a, (3,))
    check(lambda a: np.ones(3) * a + np.arange(3.0), (3,))


def test_unary_minus():
    check(lambda a: -a, (2, 3))


# -- elementwise functions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kind",
    [
        ("exp", "normal"),
        ("log", "positive"),
        ("sqrt", "positive"),
        ("abs", "away"),
        ("relu", "away"),
        ("sigmoid", "normal"),
        ("tanh", "normal"),
        ("gelu", "normal"),
    ],
)
def test_unary_methods(name, kind):
    check(lambda a: getattr(a, name)(), (3, 4), kind=kind)


def test_sigmoid_saturated_inputs():
    x = Tensor(np.array([-40.0, -5.0, 0.0, 5.0, 40.0]), requires_grad=True)
    assert ln.gradcheck(lambda a: a.sigmoid(), x)


def test_clip():
    x = Tensor(np.array([-2.0, -0.7, -0.2, 0.3, 0.9, 1.8]), requires_grad=True)
    assert ln.gradcheck(lambda a: a.clip(-0.5, 1.0), x)
    assert ln.gradcheck(lambda a: a.clip(lo=0.0), x)
    assert ln.gradcheck(lambda a: a.clip(hi=0.0), x)


def test_astype():
    check(lambda a: a.astype(np.float64) * 2, (3,))
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x.astype(np.float32)
    assert y.dtype == np.float32
    (y * Tensor(np.array([3.0, 4.0], np.float32))).sum().backward()
    assert x.grad.dtype == np.float64  # the gradient is cast back to the input's dtype
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


# -- reductions ----------------------------------------------------------------------------------

AXES = [None, 0, 1, -1, (0, 2), (1, -1)]


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(name, axis, keepdims):
    check(lambda a: getattr(a, name)(axis=axis, keepdims=keepdims), (2, 3, 4))


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reductions_default_and_1d(name):
    check(lambda a: getattr(a, name)(), (5,))
    check(lambda a: getattr(a, name)(axis=0), (5,))
    check(lambda a: getattr(a, name)(), ())


def test_reduction_output_shapes():
    x = Tensor(np.zeros((2, 3, 4)))
    assert x.sum().shape == ()
    assert x.mean(axis=(0, 2)).shape == (3,)
    assert x.max(axis=1, keepdims=True).shape == (2, 1, 4)
    assert x.max(axis=None, keepdims=True).shape == (1, 1, 1)


def test_max_ties_split_the_gradient():
    x = Tensor(np.array([1.0, 3.0, 3.0, 0.0]), requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(x.grad, [0, 0.5, 0.5, 0])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_family(name, axis):
    check(lambda a: getattr(a, name)(axis=axis), (3, 4, 2))


def test_softmax_large_logits_are_stable():
    x = Tensor(np.array([[1000.0, 0.0, -1000.0], [5.0, 5.0, 5.0]]), requires_grad=True)
    assert np.all(np.isfinite(x.softmax().data)) and np.all(np.isfinite(x.log_softmax().data))
    assert ln.gradcheck(lambda a: a.log_softmax(), x)


# -- shape ops -------------------------------------------------------------------------------------


def test_reshape():
    check(lambda a: a.reshape(4, 6), (2, 3, 4))
    check(lambda a: a.reshape(-1, 3), (2, 3, 4))
    check(lambda a: a.reshape((2, -1)), (2, 3, 4))
    check(lambda a: a.flatten(), (2, 3, 4))


def test_transpose():
    check(lambda a: a.T, (3, 4))
    check(lambda a: a.T, (2, 3, 4))
    check(lambda a: a.transpose(), (2, 3, 4))
    check(lambda a: a.transpose(1, 2, 0), (2, 3, 4))
    check(lambda a: a.transpose((2, 0, 1)), (2, 3, 4))
    check(lambda a: a.transpose(-1, 0, 1), (2, 3, 4))
    check(lambda a: a.transpose(0, -1, -2), (2, 3, 4))


def test_transpose_matches_numpy():
    a = np.arange(24.0).reshape(2, 3, 4)
    for axes in [(1, 2, 0), (-1, 0, 1), (0, -1, -2)]:
        np.testing.assert_array_equal(Tensor(a).transpose(*axes).data, a.transpose(axes))
    np.testing.assert_array_equal(Tensor(a).T.data, a.T)


INDICES = [
    (1,),
    (-1,),
    (slice(1, 4),),
    (slice(None, None, 2),),
    (slice(None, None, -1),),
    (slice(-3, None),),
    (slice(None), 2),
    (slice(None), slice(1, None, 2)),
    (Ellipsis, -2),
    (np.array([0, 2, 2, 4, 0]),),
    (np.array([[1, 1], [3, 0]]),),
    (slice(None), [3, 3, 0]),
    (np.array([0, 1, 1]), np.array([2, 2, 3])),
    (np.array([True, False, True, True, False]),),
    (None, 1),
]


@pytest.mark.parametrize("index", INDICES, ids=[str(i) for i in range(len(INDICES))])
def test_getitem(index):
    check(lambda a: a[index if len(index) > 1 else index[0]], (5, 4))


def test_getitem_boolean_mask_full_shape():
    mask = np.random.default_rng(3).random((5, 4)) > 0.5
    check(lambda a: a[mask], (5, 4))


def test_getitem_with_tensor_index():
    idx = Tensor(np.array([2, 0, 2]))
    check(lambda a: a[idx], (4, 3))


@pytest.mark.parametrize("index", INDICES, ids=[str(i) for i in range(len(INDICES))])
def test_getitem_gradient_bits_equal_the_scatter_add(index):
    """Basic indexes take ``+=`` on a view, others ``np.add.at``: both give add.at's bits,
    negative zeros included (0.0 + -0.0 is 0.0; a plain assignment would keep -0.0)."""
    ix = index if len(index) > 1 else index[0]
    x = Tensor(np.ones((5, 4)), requires_grad=True)
    y = x[ix]
    k = np.arange(y.data.size, dtype=np.float64).reshape(y.shape)
    g = np.where(k % 3 == 0, -0.0, 1.5 - k)
    y.backward(g)
    want = np.zeros((5, 4))
    np.add.at(want, ix, g)
    assert x.grad.tobytes() == want.tobytes()


def test_getitem_repeated_indices_add_up():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([1, 1, 1, 3])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 0, 1])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    shapes = {0: [(2, 3), (1, 3), (4, 3)], 1: [(2, 3), (2, 1), (2, 2)], -1: [(2, 3), (2, 2)]}
    check(lambda *ts: ln.concat(ts, axis=axis), *shapes[axis])


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(axis):
    check(lambda *ts: ln.stack(ts, axis=axis), (2, 3), (2, 3), (2, 3))


def test_concat_and_stack_with_constants():
    c = Tensor(np.ones((2, 3)))
    check(lambda a: ln.concat([c, a, c], axis=0), (1, 3))
    check(lambda a: ln.stack([a, c], axis=1), (2, 3))


def test_where():
    cond = np.random.default_rng(1).random((3, 4)) > 0.5
    check(lambda a, b: ln.where(cond, a, b), (3, 4), (3, 4))
    check(lambda a, b: ln.where(cond, a, b), (4,), (3, 1))  # broadcasting both ways
    check(lambda a: ln.where(cond, a, 0.0), (3, 4))
    check(lambda b: ln.where(cond, 1.0, b), (3, 4))
    check(lambda a, b: ln.where(Tensor(cond.astype(np.float64)), a, b), (3, 4), (3, 4))


# -- matrix products ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((3, 4), (4, 5)),
        ((4,), (4,)),
        ((4,), (4, 5)),
        ((3, 4), (4,)),
        ((2, 3, 4), (4, 5)),
        ((3, 4), (2, 4, 5)),
        ((2, 3, 4), (2, 4, 5)),
        ((2, 1, 3, 4), (3, 4, 2)),
        ((4,), (2, 4, 5)),
        ((2, 3, 4), (4,)),
    ],
)
def test_matmul(sa, sb):
    check(lambda a, b: a @ b, sa, sb)


def test_matmul_with_arrays():
    w = np.random.default_rng(2).standard_normal((4, 2))
    check(lambda a: a @ w, (3, 4))
    check(lambda a: w.T @ a, (4, 3))


@pytest.mark.parametrize("act", ["identity", "relu", "sigmoid", "tanh", "gelu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("xshape", [(5, 3), (2, 4, 3), (3,)])
def test_linear(act, bias, xshape):
    kind = "away" if act == "relu" else "normal"
    if bias:
        check(lambda x, w, b: linear(x, w, b, act), xshape, (3, 4), (4,), kind=kind)
    else:
        check(lambda x, w: linear(x, w, None, act), xshape, (3, 4), kind=kind)


@pytest.mark.parametrize("act", ["identity", "relu", "sigmoid", "tanh", "gelu"])
def test_linear_matches_unfused_ops(act):
    x, w, b = inputs((6, 3), (3, 4), (4,), seed=4)
    fused = linear(x, w, b, act)
    z = x @ w + b
    ref = z if act == "identity" else getattr(z, act)()
    np.testing.assert_allclose(fused.data, ref.data, rtol=1e-12, atol=1e-12)


def test_linear_with_constant_inputs():
    x, w, b = inputs((5, 3), (3, 4), (4,), seed=5)
    xc, bc = Tensor(x.data), Tensor(b.data)
    assert ln.gradcheck(lambda w: linear(xc, w, bc, "tanh"), w)
    assert ln.gradcheck(lambda x: linear(x, Tensor(w.data), None, "gelu"), x)


# -- loss ops -----------------------------------------------------------------------------------


def _targets(seed=0):
    r = np.random.default_rng(seed)
    return {
        "reg": r.standard_normal((6, 2)),
        "bin": (r.random((6, 1)) > 0.5).astype(np.float64),
        "lab": r.integers(0, 3, 6),
        "w": r.uniform(0.2, 2.0, 6),
    }


T = _targets()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses(reduction):
    check(lambda p: losses.mse(p, T["reg"], reduction=reduction), (6, 2))
    check(lambda p: losses.mae(p, T["reg"] + 0.05, reduction=reduction), (6, 2))
    check(lambda p: losses.huber(p, T["reg"], delta=0.7, reduction=reduction), (6, 2), seed=1)
    check(lambda p: losses.mse(p, T["reg"], reduction=reduction, sample_weight=T["w"]), (6, 2))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_bce_with_logits(reduction, pos_weight):
    bce = losses.binary_cross_entropy_with_logits
    y = T["bin"]
    check(lambda z: bce(z, y, pos_weight=pos_weight, reduction=reduction), (6, 1))
    check(
        lambda z: bce(z, y, pos_weight=pos_weight, sample_weight=T["w"], reduction=reduction),
        (6, 1),
    )
    check(lambda z: bce(z, y[:, 0], pos_weight=pos_weight, reduction=reduction), (6,))
    soft = np.random.default_rng(9).random((6, 3))
    check(lambda z: bce(z, soft, pos_weight=pos_weight, reduction=reduction), (6, 3))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(reduction):
    ce = losses.cross_entropy
    lab = T["lab"]
    onehot = np.eye(3)[lab]
    check(lambda z: ce(z, lab, reduction=reduction), (6, 3))
    check(lambda z: ce(z, lab, sample_weight=T["w"], reduction=reduction), (6, 3))
    check(lambda z: ce(z, lab, label_smoothing=0.1, reduction=reduction), (6, 3))
    check(lambda z: ce(z, onehot, reduction=reduction), (6, 3))
    check(lambda z: ce(z, onehot, label_smoothing=0.2, sample_weight=T["w"]), (6, 3))
    soft = np.random.default_rng(8).dirichlet(np.ones(3), 6)
    check(lambda z: ce(z, soft, reduction=reduction), (6, 3))


def test_losses_inside_a_graph():
    # a loss fed by other ops, and its output used again
    lab = T["lab"]
    check(lambda x, w: losses.cross_entropy((x @ w).tanh() * 3, lab) * 2 + 1, (6, 4), (4, 3))


# -- gradcheck itself ---------------------------------------------------------------------------


class WrongSquare(Function):
    """y = x^2 with a deliberately wrong backward (3x instead of 2x)."""

    def forward(self, a):
        self.a = a
        return a * a

    def backward(self, g):
        return (g * 3 * self.a,)


def test_gradcheck_catches_a_wrong_backward():
    x, y = inputs((2, 3), (2, 3), seed=7)
    with pytest.raises(GradcheckError) as info:
        ln.gradcheck(lambda a, b: a * WrongSquare.apply(b), x, y)
    msg = str(info.value)
    assert "input 1" in msg  # the second input is the broken one
    assert "index (0, 0)" in msg
    b, a = y.data[0, 0], x.data[0, 0]
    assert f"{a * 3 * b:.6g}"[:6] in msg  # analytic
    assert f"{a * 2 * b:.6g}"[:6] in msg  # numeric


def test_gradcheck_reports_the_failing_index():
    class WrongAtOne(Function):
        def forward(self, a):
            return a * 1.0

        def backward(self, g):
            g = g.copy()
            g[1, 2] += 1.0
            return (g,)

    (x,) = inputs((3, 4))
    with pytest.raises(GradcheckError, match=r"input 0 at index \(1, 2\)"):
        ln.gradcheck(lambda a: WrongAtOne.apply(a), x)


def test_gradcheck_passes_constants_through():
    (x,) = inputs((3,))
    c = Tensor(np.arange(3.0))
    assert ln.gradcheck(lambda a, k, n: a * k + n, x, c, 2.0)


def test_gradcheck_works_from_float32_inputs():
    x = Tensor(np.random.default_rng(0).standard_normal(4).astype(np.float32), requires_grad=True)
    assert ln.gradcheck(lambda a: (a * a).tanh(), x)
    assert x.dtype == np.float32 and x.grad is None  # the caller's tensor is left alone


@pytest.mark.parametrize("backend", ln.backend.available())
def test_fused_ops_on_every_backend(backend):
    with ln.backend.use_backend(backend):
        for act in ["identity", "relu", "sigmoid", "tanh", "gelu"]:
            kind = "away" if act == "relu" else "normal"
            check(lambda x, w, b, act=act: linear(x, w, b, act), (5, 3), (3, 4), (4,), kind=kind)
            check(lambda x, w, act=act: linear(x, w, None, act), (2, 2, 3), (3, 4), kind=kind)
        check(lambda z: losses.cross_entropy(z, T["lab"], sample_weight=T["w"]), (6, 3))
        check(lambda z: losses.cross_entropy(z, T["lab"], reduction="none"), (6, 3))


# -- strided inputs reach the compiled kernels only as C arrays (regressions) --------------------


@pytest.mark.parametrize("backend", ln.backend.available())
@pytest.mark.parametrize("act", ["identity", "relu", "gelu", "tanh"])
def test_linear_with_strided_inputs(backend, act):
    r = np.random.default_rng(11)
    x = Tensor(r.standard_normal((4, 6))[:, ::2], requires_grad=True)
    w = Tensor(r.standard_normal((3, 8))[:, ::2], requires_grad=True)
    b = Tensor(r.standard_normal(8)[::2], requires_grad=True)
    g = np.repeat(r.standard_normal((4, 4)), 2, axis=1)[:, ::2]  # a strided upstream grad
    with ln.backend.use_backend(backend):
        out = linear(x, w, b, act)
        out.backward(g)
    xc, wc, bc = (Tensor(t.data.copy(), requires_grad=True) for t in (x, w, b))
    z = xc @ wc + bc
    ref = z if act == "identity" else getattr(z, act)()
    ref.backward(g.copy())
    np.testing.assert_allclose(out.data, ref.data, rtol=1e-12, atol=1e-12)
    for t, tc in [(x, xc), (w, wc), (b, bc)]:
        np.testing.assert_allclose(t.grad, tc.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ln.backend.available())
def test_cross_entropy_none_then_sum(backend):
    # Sum's backward hands the loss a broadcast (stride-0) gradient
    z1, z2 = inputs((5, 3), (5, 3), seed=12)
    z2.data[...] = z1.data
    lab = np.array([0, 1, 2, 1, 0])
    with ln.backend.use_backend(backend):
        losses.cross_entropy(z1, lab, reduction="none").sum().backward()
        losses.cross_entropy(z2, lab, reduction="sum").backward()
        assert ln.gradcheck(lambda z: losses.cross_entropy(z, lab, reduction="none").sum(), z1)
    np.testing.assert_allclose(z1.grad, z2.grad, rtol=1e-12)
