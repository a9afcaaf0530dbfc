"""Element-wise comparisons on Tensors give boolean Tensors without a gradient (as NumPy's
and PyTorch's); ``where`` sends the gradient to both branches; Tensors stay hashable by
identity (sets and dicts of parameters keep working)."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_nn import Tensor
from lepton_nn.autograd import gradcheck
from lepton_nn.nn import Dense
from lepton_nn.ops import where

torch = pytest.importorskip("torch")

OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


@pytest.mark.parametrize("op", OPS)
def test_comparisons_are_elementwise_tensors_without_grad(op):
    r = np.random.default_rng(0)
    a = r.integers(-2, 3, (4, 5)).astype(np.float32)
    b = r.integers(-2, 3, (5,)).astype(np.float32)  # broadcast
    ta, tb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    for ours, theirs in (
        (OPS[op](ta, tb), OPS[op](torch.tensor(a), torch.tensor(b))),
        (OPS[op](ta, 1.0), OPS[op](torch.tensor(a), 1.0)),  # a number
        (OPS[op](1.0, ta), OPS[op](1.0, torch.tensor(a))),  # reflected
        (OPS[op](ta, b), OPS[op](torch.tensor(a), torch.tensor(b))),  # an array
        (OPS[op](b, ta), OPS[op](torch.tensor(b), torch.tensor(a))),  # an array on the left
    ):
        assert isinstance(ours, Tensor) and ours.dtype == bool
        assert not ours.requires_grad and ours.is_leaf
        np.testing.assert_array_equal(ours.data, theirs.numpy())


def test_equality_is_no_longer_identity():
    a, b = Tensor([1.0, 2.0]), Tensor([1.0, 3.0])
    assert (a == b).data.tolist() == [True, False]
    assert (a != b).data.tolist() == [False, True]
    assert (Tensor(2.0) == Tensor(2.0)).item() is True
    assert (a == None) is False and (a != None) is True  # noqa: E711 - not a number: identity
    assert (a == "x") is False


def test_tensors_stay_hashable_by_identity():
    a, b = Tensor([1.0]), Tensor([1.0])
    assert len({a, b}) == 2 and {a: 1, b: 2}[b] == 2
    layer = Dense(3, in_features=2)
    params = layer.parameters()
    assert len(set(params)) == 2 and {p: i for i, p in enumerate(params)}[params[1]] == 1


def test_mask_indexing_and_counting():
    x = Tensor(np.array([-1.0, 2.0, -3.0, 4.0]), requires_grad=True)
    m = x > 0
    y = x[m]
    assert y.data.tolist() == [2.0, 4.0]
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 0, 1]
    assert (
        float((m == Tensor(np.array([True, True, False, True]))).astype("float32").mean()) == 0.75
    )


def test_where_gradients_match_torch_and_gradcheck():
    r = np.random.default_rng(1)
    a, b = r.standard_normal((3, 4)), r.standard_normal((4,))
    cond = Tensor(a) > Tensor(b)
    ta, tb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    (where(cond, ta, tb) * Tensor(a)).sum().backward()
    pa, pb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (torch.where(pa > pb, pa, pb) * torch.tensor(a)).sum().backward()
    np.testing.assert_allclose(ta.grad, pa.grad.numpy())
    np.testing.assert_allclose(tb.grad, pb.grad.numpy())
    assert gradcheck(lambda x, y: where(cond, x, y), ta, tb)
    assert gradcheck(lambda x: where(x.data > 0, x * x, -x), Tensor(a, requires_grad=True))


def test_where_reads_a_float_condition_as_nonzero():
    y = where(Tensor(np.array([0.0, 1.0, 2.0])), Tensor(np.ones(3)), Tensor(np.zeros(3)))
    assert y.data.tolist() == [0, 1, 1]
