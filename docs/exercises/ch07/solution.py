"""Chapter 7, reference solution: lepton_nn's backward pass, walked on its own graph."""

from __future__ import annotations

import numpy as np


def local_backward(g, node, grad):
    """One op's backward rule (its ``Function.backward``): from dL/d(node) to
    [(input node, dL/d(input) through this op)] for each input that wants a gradient;
    [] for a param or const node."""
    ctx = node.tensor._ctx
    if ctx is None:
        return []
    pairs = zip(ctx.parents, ctx.backward(grad))
    return [(g.node_of(p), pg) for p, pg in pairs if pg is not None and p.requires_grad]


def backward_order(g):
    """The nodes of g that need a gradient, root first, each after every node that uses it."""
    order, seen = [], set()

    def visit(node):  # depth first from the root: a node is listed after all its inputs
        if node.id in seen or node.kind == "const":
            return
        seen.add(node.id)
        for parent in g.inputs_of(node):
            visit(parent)
        order.append(node)

    visit(g.node_of(g.root))
    return order[::-1]  # reversed post-order: every user before what it used


def gradients(g, grad=None):
    """dL/d(node) for every node of backward_order(g), as {node.id: array of node.shape}."""
    order = backward_order(g)
    root = order[0]
    grads = {root.id: np.ones(root.shape) if grad is None else np.asarray(grad, np.float64)}
    for node in order:  # when a node's turn comes, every user has sent its share
        for parent, pg in local_backward(g, node, grads[node.id]):
            grads[parent.id] = grads[parent.id] + pg if parent.id in grads else np.array(pg)
    return grads
