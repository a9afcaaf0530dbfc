"""Chapter 7: your walk of lepton_nn's graph against the engine's own ``Tensor.backward``
(``lepton_nn/autograd/tensor.py``) and against ``inspect.explain_backward``."""

import numpy as np

import lepton_nn as ln
from lepton_nn import inspect, losses, nn


def two_layer_net():
    ln.set_seed(0)
    return nn.Sequential([nn.Dense(4, "tanh", in_features=3), nn.Dense(2, in_features=4)])


def loss_of(net):
    """A new graph each call (the net's parameters are its leaves)."""
    x = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]], np.float32)
    return losses.cross_entropy(net(x), np.array([0, 1]))


def diamond():
    """w is used three times: directly, and through h twice."""
    w = ln.Tensor(np.array([0.3, -1.2, 2.0]), requires_grad=True, name="w")
    h = (w * w).tanh()
    return w, (h * w + h * 2.0).sum()


def is_reverse_topological(g, order):
    position = {n.id: i for i, n in enumerate(order)}
    return all(
        position[user.id] < position[p.id]
        for user in order
        for p in g.inputs_of(user)
        if p.kind != "const"
    )


def test_order_is_reverse_topological(ex):
    for loss in (loss_of(two_layer_net()), diamond()[1]):
        g = inspect.graph(loss)
        order = ex.backward_order(g)
        assert [n.id for n in order][:1] == [g.node_of(loss).id]  # the root first
        assert sorted(n.id for n in order) == sorted(n.id for n in g.nodes if n.kind != "const")
        assert is_reverse_topological(g, order)


def test_parameter_gradients_match_the_engine(ex):
    net = two_layer_net()
    g = inspect.graph(loss_of(net), params=net)
    ours = ex.gradients(g)
    loss_of(net).backward()  # a fresh graph for the engine's own backward
    for name, p in net.named_parameters():
        node = next(n for n in g.nodes if n.label == name)
        assert np.allclose(ours[node.id], p.grad, atol=1e-5), name


def test_every_step_matches_explain_backward(ex):
    net = two_layer_net()
    ours = ex.gradients(inspect.graph(loss_of(net), params=net))
    steps = inspect.explain_backward(loss_of(net), params=net)
    assert {s.node.id for s in steps} == set(ours)
    for s in steps:
        assert np.allclose(ours[s.node.id], s.grad, atol=1e-5), s.node.label


def test_a_tensor_used_several_times_sums_its_gradients(ex):
    w, loss = diamond()
    ours = ex.gradients(inspect.graph(loss))
    w2, loss2 = diamond()
    loss2.backward()
    g = inspect.graph(loss)
    assert np.allclose(ours[g.node_of(w).id], w2.grad)


def test_a_given_root_gradient(ex):
    w = ln.Tensor(np.array([[1.0, -2.0], [0.5, 3.0]]), requires_grad=True)
    y = (w * w).exp()  # not a scalar: the root's gradient is given
    seed = np.array([[1.0, 0.0], [2.0, -1.0]])
    ours = ex.gradients(inspect.graph(y), grad=seed)
    w.grad = None
    y2 = (w * w).exp()
    y2.backward(seed)
    assert np.allclose(ours[inspect.graph(y).node_of(w).id], w.grad)
