"""Chapter 7 exercises: lepton_nn's backward pass, walked by your own code on its own graph.

``g = lepton_nn.inspect.graph(loss)`` lists the nodes behind ``loss`` (``g.nodes``, in
post-order: every op after its inputs), ``g.inputs_of(node)`` gives an op's inputs and
``node.kind`` is "op", "param" (a tensor that wants a gradient) or "const" (one that does
not). ``local_backward`` below is given: it runs one op's own backward rule. Write the walk
around it, then run ``pytest docs/exercises/ch07``.
"""

from __future__ import annotations

import numpy as np  # noqa: F401


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
    """The nodes of g that need a gradient (every kind but "const"), root first, each node
    after every node that uses it (a reverse topological order)."""
    raise NotImplementedError("exercise 7.1: backward_order")


def gradients(g, grad=None):
    """dL/d(node) for every node of backward_order(g), as {node.id: array of node.shape}.

    ``grad``: the root's gradient (ones of the root's shape when None). Walk the order; give
    each node's gradient to local_backward; a node used by several ops sums what each sends."""
    raise NotImplementedError("exercise 7.2: gradients")
