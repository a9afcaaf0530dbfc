"""The autograd floor: Tensor construction, the backward engine and its ownership rules."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import Tensor
from lepton_nn.errors import LeptonError


def rand(*shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# -- construction and dtype rules ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_arrays_keep_their_dtype(dtype):
    a = np.ones((2, 3), dtype)
    t = Tensor(a)
    assert t.dtype == dtype
    assert t.data is a  # no copy for an array that is already fine


@pytest.mark.parametrize(
    "data",
    [
        np.arange(6, dtype=np.int64),
        np.arange(6, dtype=np.int32),
        np.arange(6, dtype=np.uint8),
        np.array([True, False]),
        np.ones(3, np.float16),
        [1, 2, 3],
        [1.5, 2.5],
        3,
        2.5,
    ],
)
def test_other_inputs_become_float32(data):
    t = Tensor(data)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.data, np.asarray(data, np.float32))


@pytest.mark.parametrize("data", [np.array(["a", "b"]), "text", np.array([1 + 2j]), [object()]])
def test_non_numeric_data_is_refused(data):
    with pytest.raises(LeptonError, match="dtype"):
        Tensor(data)


def test_explicit_dtype():
    assert Tensor([1, 2], dtype=np.float64).dtype == np.float64


def test_properties_and_accessors():
    a = rand(2, 3, dtype=np.float32)
    t = Tensor(a, requires_grad=True)
    assert t.shape == (2, 3)
    assert t.ndim == 2
    assert t.size == 6
    assert len(t) == 2
    assert t.numpy() is a
    assert t.grad is None
    assert t.requires_grad and t.is_leaf
    assert "requires_grad=True" in repr(t)
    y = t * 2
    assert not y.is_leaf and y.requires_grad
    assert "op=Mul" in repr(y)
    assert Tensor(3.0).item() == 3.0
    assert float(Tensor(np.float64(2.0))) == 2.0


def test_detach_shares_data_and_cuts_graph():
    x = Tensor(rand(3), requires_grad=True)
    y = (x * 2).detach()
    assert not y.requires_grad and y.is_leaf
    d = x.detach()
    assert d.data is x.data
    z = (y * x).sum()
    z.backward()
    np.testing.assert_allclose(x.grad, y.data)  # y was a constant


def test_no_grad_records_nothing_and_restores():
    x = Tensor(rand(3), requires_grad=True)
    with ln.no_grad():
        y = x * 2 + 1
        with ln.enable_grad():
            w = x * 3
    assert not y.requires_grad and y.is_leaf
    assert w.requires_grad
    assert (x * 2).requires_grad  # recording is back on after the block
    with pytest.raises(LeptonError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_restores_after_exception():
    with pytest.raises(RuntimeError), ln.no_grad():
        raise RuntimeError
    assert (Tensor([1.0], requires_grad=True) * 2).requires_grad


def test_scalars_and_arrays_on_either_side():
    x = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    for y in (x + 1, 1 + x, x - 1, 1 - x, x * 2.5, 2.5 * x, x / 2, 2 / x, x**2, 2**x, -x):
        assert y.dtype == np.float32, y
        assert y.requires_grad
    z = np.array([1.0, 1.0], np.float32) * x  # ndarray on the left defers to Tensor
    assert isinstance(z, Tensor) and z.requires_grad
    z = np.float64(3.0) * x
    assert isinstance(z, Tensor)


# -- backward -----------------------------------------------------------------------------------


def test_simple_gradient():
    a = Tensor(rand(3, seed=1), requires_grad=True)
    b = Tensor(rand(3, seed=2), requires_grad=True)
    (a * b + a).sum().backward()
    np.testing.assert_allclose(a.grad, b.data + 1)
    np.testing.assert_allclose(b.grad, a.data)


def test_gradients_accumulate_until_zeroed():
    a = Tensor(rand(4), requires_grad=True)
    (a * 3).sum().backward()
    np.testing.assert_allclose(a.grad, np.full(4, 3.0))
    (a * 3).sum().backward()
    np.testing.assert_allclose(a.grad, np.full(4, 6.0))
    (a * a).sum().backward()
    np.testing.assert_allclose(a.grad, 6.0 + 2 * a.data)
    a.zero_grad()
    assert a.grad is None
    (a * 3).sum().backward()
    np.testing.assert_allclose(a.grad, np.full(4, 3.0))


def test_backward_non_scalar_needs_grad():
    a = Tensor(rand(2, 3), requires_grad=True)
    y = a * 2
    with pytest.raises(LeptonError, match=r"non-scalar.*\(2, 3\).*grad="):
        y.backward()
    y.backward(np.ones((2, 3)))
    np.testing.assert_allclose(a.grad, np.full((2, 3), 2.0))


def test_backward_scalar_shaped_one():
    a = Tensor(rand(1, 1), requires_grad=True)
    (a * 5).backward()  # size 1: ones is implied
    np.testing.assert_allclose(a.grad, [[5.0]])


def test_backward_grad_is_broadcast_and_cast():
    a = Tensor(rand(2, 3, dtype=np.float32), requires_grad=True)
    (a * 2).backward(1.5)  # a scalar grad broadcasts to the output
    assert a.grad.dtype == np.float32
    np.testing.assert_allclose(a.grad, np.full((2, 3), 3.0))


def test_backward_without_requires_grad():
    with pytest.raises(LeptonError, match="does not require grad"):
        Tensor([1.0]).backward()


def test_constants_get_no_grad():
    a = Tensor(rand(3), requires_grad=True)
    c = Tensor(rand(3, seed=5))
    (a * c).sum().backward()
    assert c.grad is None


def test_diamond_graph():
    # x feeds two branches that meet again: dL/dx sums both paths
    x = Tensor(rand(5), requires_grad=True)
    u = x * 2
    v = x.exp()
    w = u * v  # 2x e^x
    w.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * np.exp(x.data) + 2 * x.data * np.exp(x.data))


def test_tensor_used_twice_in_one_op():
    x = Tensor(rand(4), requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)
    x.zero_grad()
    (x + x).sum().backward()
    np.testing.assert_allclose(x.grad, np.full(4, 2.0))


def test_intermediate_reused_many_times():
    x = Tensor(rand(3), requires_grad=True)
    h = x.tanh()
    y = h + h * h + h * h * h
    y.sum().backward()
    t = np.tanh(x.data)
    np.testing.assert_allclose(x.grad, (1 + 2 * t + 3 * t * t) * (1 - t * t))


def test_float32_grads_follow_data_dtype():
    x = Tensor(rand(3, dtype=np.float32), requires_grad=True)
    y = Tensor(rand(3, dtype=np.float64))
    (x * y).sum().backward()  # the product is float64; x.grad must still be float32
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, y.data.astype(np.float32))


def test_broadcast_leaf_grad_has_leaf_shape():
    b = Tensor(rand(4), requires_grad=True)
    x = Tensor(rand(3, 4, seed=3))
    (x + b).sum().backward()
    assert b.grad.shape == (4,)
    np.testing.assert_allclose(b.grad, np.full(4, 3.0))


# -- ownership: a leaf's .grad is its own memory ------------------------------------------------


def _assert_independent(*arrays):
    for i, a in enumerate(arrays):
        for b in arrays[i + 1 :]:
            assert a is not b
            assert not np.shares_memory(a, b)


def test_sum_of_two_leaves_gives_separate_grads():
    a = Tensor(rand(3), requires_grad=True)
    b = Tensor(rand(3, seed=1), requires_grad=True)
    (a + b).sum().backward()
    _assert_independent(a.grad, b.grad)
    a.grad += 100.0
    np.testing.assert_allclose(b.grad, np.ones(3))


def test_user_grad_array_is_never_kept():
    user = np.ones((2, 3))
    keep = user.copy()
    a = Tensor(rand(2, 3), requires_grad=True)
    b = Tensor(rand(2, 3, seed=1), requires_grad=True)
    (a + b).backward(user)
    _assert_independent(a.grad, b.grad, user)
    a.grad *= 7
    b.grad *= 3
    np.testing.assert_array_equal(user, keep)


def test_backward_on_a_leaf_copies_the_user_grad():
    user = np.full(3, 2.0)
    a = Tensor(rand(3), requires_grad=True)
    a.backward(user)
    assert a.grad is not user and not np.shares_memory(a.grad, user)
    a.backward(user)  # accumulates into a's own array, never into user's
    np.testing.assert_array_equal(user, np.full(3, 2.0))
    np.testing.assert_array_equal(a.grad, np.full(3, 4.0))


def test_pass_through_ops_do_not_alias():
    # Add, reshape, transpose, slicing and stack pass the incoming gradient on (or views of it)
    a = Tensor(rand(2, 3), requires_grad=True)
    b = Tensor(rand(2, 3, seed=1), requires_grad=True)
    c = Tensor(rand(3, 2, seed=2), requires_grad=True)
    d = Tensor(rand(6, seed=3), requires_grad=True)
    y = (a + b + c.T + d.reshape(2, 3)).sum()
    y.backward()
    _assert_independent(a.grad, b.grad, c.grad, d.grad)
    for t in (a, b, c, d):
        assert t.grad.flags.writeable and t.grad.flags.owndata
        assert t.grad.shape == t.shape
    a2 = Tensor(rand(3), requires_grad=True)
    b2 = Tensor(rand(3, seed=1), requires_grad=True)
    ln.stack([a2, b2]).sum().backward()
    _assert_independent(a2.grad, b2.grad)


def test_accumulation_writes_only_into_own_grad():
    a = Tensor(rand(3), requires_grad=True)
    b = Tensor(rand(3, seed=1), requires_grad=True)
    (a + b).sum().backward()
    (a + b).sum().backward()
    (a * 1.0).sum().backward()
    np.testing.assert_allclose(a.grad, np.full(3, 3.0))
    np.testing.assert_allclose(b.grad, np.full(3, 2.0))


class _SameArrayTwice(ln.autograd.Function):
    """y = a + b whose backward gives one fresh array to both inputs (allowed by the rules)."""

    def forward(self, a, b):
        return a + b

    def backward(self, g):
        t = g.copy()
        return t, t


class _PassOn(ln.autograd.Function):
    """y = x whose backward passes the incoming gradient on unchanged."""

    def forward(self, x):
        return x.copy()

    def backward(self, g):
        return (g,)


def test_one_array_given_to_two_inputs_is_kept_by_one_leaf_at_most():
    a = Tensor(rand(3), requires_grad=True)
    b = Tensor(rand(3, seed=1), requires_grad=True)
    _SameArrayTwice.apply(a, b).sum().backward()
    _assert_independent(a.grad, b.grad)
    # the same through pass-through ops on both sides, in either order of the inputs
    for swap in (False, True):
        a = Tensor(rand(3), requires_grad=True)
        b = Tensor(rand(3, seed=1), requires_grad=True)
        x, y = _PassOn.apply(a), _PassOn.apply(_PassOn.apply(b))
        _SameArrayTwice.apply(*((y, x) if swap else (x, y))).sum().backward()
        _assert_independent(a.grad, b.grad)
        np.testing.assert_array_equal(a.grad, np.ones(3))
        np.testing.assert_array_equal(b.grad, np.ones(3))


def test_a_fresh_gradient_given_once_becomes_the_grad_without_a_copy():
    kept = []

    class Scale(ln.autograd.Function):
        def forward(self, x):
            return 2 * x

        def backward(self, g):
            kept.append(2 * g)
            return (kept[-1],)

    w = Tensor(rand(4), requires_grad=True)
    for _ in range(3):  # a fresh array each time (ids of freed arrays may repeat)
        w.grad = None
        loss = (Scale.apply(w) * Tensor(rand(4, seed=2))).sum()
        loss.backward()
        assert w.grad is kept[-1]


def test_order_of_creation_is_a_topological_order():
    # a leaf made after some ops, and a tensor reused far from where it was made
    x = Tensor(rand(3), requires_grad=True)
    h = x * 2.0
    late = Tensor(rand(3, seed=1), requires_grad=True)
    y = (h * late + h.exp() + x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * late.data + 2 * np.exp(2 * x.data) + 1)
    np.testing.assert_allclose(late.grad, 2 * x.data)


def test_grad_never_aliases_data():
    a = Tensor(rand(3), requires_grad=True)
    a.sum().backward()
    assert not np.shares_memory(a.grad, a.data)
    p = ln.nn.Parameter(rand(2, 2))
    (p * Tensor(np.ones((2, 2)))).sum().backward()
    assert not np.shares_memory(p.grad, p.data)


# -- deep graphs ----------------------------------------------------------------------------------


def test_deep_chain_has_no_recursion_limit():
    x = Tensor(np.array([0.5]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001**10_000], rtol=1e-9)
    del y  # freeing a deep graph must not overflow the C stack either


def test_deep_chain_of_mixed_ops():
    x = Tensor(np.array([0.3, -0.2]), requires_grad=True)
    y = x
    for i in range(10_000):
        y = (y + 0.001) if i % 2 else (y - 0.001)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0, 1.0])
