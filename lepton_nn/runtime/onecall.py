"""The one-call predict: a plan that is one compiled chain call, bound once into a *runner*
that checks the input, runs the chain and returns a fresh output in a single call from Python.

A plan whose only call reads the input and nothing else (``Plan.single``: the fp32 packed
Dense chain, ``dense_packed_forward``, or the int8 chain, ``qdense_chain_forward``, as the
784-512-256-10 MLP is at batch 1) costs per ``predict`` a gate call (type, dtype, shape,
layout, inf/NaN), the chain's call (its tuples of arrays checked again on every call) and
a copy of the output. Its runner (``kernels/dense_run.pxi``, ``kernels/qgemv.pxi``) has
every argument that does not depend on ``x`` resolved once, here::

    run(runner, x) -> new (m, N) float32 array   x exactly what the chain reads, finite
                   -> -2                          such an x holding inf or NaN
                   -> -1                          anything else (another batch size or
                                                  dtype, a view, a list, a subclass), or the
                                                  runner busy in another thread

so that :class:`~.model.InferenceModel` calls it first and takes its general path (which
converts, checks, raises ``ShapeError``/``DataError`` and plans as before) on -1 or -2.
The runner keeps its own intermediate buffers and scratch, and writes the last layer
straight into the array it returns: no output aliases anything it keeps. That array is new,
or one of the runner's last two outputs that nobody holds any more (no variable, view,
buffer or weak reference: its only reference is the runner's, ``kernels/input_gate.pxi``'s
``_run_out``), which saves NumPy's allocation and deallocation of it; and a call from
another thread while it runs (the GIL is released in the chain) takes the general path
and the plan's own buffers. Same kernel, same arguments: the same bits as the plan.

Imports: NumPy-free itself; the runner functions are found next to the chain's compiled
kernel, in the same extension module (the reference twins have none: no runner).
"""

from __future__ import annotations

import sys
from typing import Any

from .graph import Plan

__all__ = ["runner_for"]

# the chain kernel's name -> (its runner, the runner's preparation) in the same module
_RUNNERS = {
    "dense_packed_forward": ("dense_packed_run", "dense_packed_run_prepare"),
    "qdense_chain_forward": ("qdense_chain_run", "qdense_chain_run_prepare"),
}


def runner_for(plan: Plan, in_shape: tuple[int, ...]) -> tuple[Any, Any] | None:
    """``(run, runner)`` for ``plan`` read with inputs of per-sample shape ``in_shape`` (the
    caller's, before a leading Flatten), called as ``run(runner, x)``; None when the plan is
    not one compiled chain call with a runner (the general path serves it)."""
    single = plan.single
    if single is None or type(plan.out) is list:
        return None
    fn, args = single
    names = _RUNNERS.get(getattr(fn, "__name__", ""))
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    if names is None or module is None:
        return None
    run, prepare = (getattr(module, n, None) for n in names)
    if run is None or prepare is None:  # an older build, or the NumPy twin
        return None
    if names[0] == "dense_packed_run":
        panels, bs, acts, outs, *threads = args
        if outs[-1] is not plan.out:
            return None
        return run, prepare(panels, bs, acts, outs, threads[0] if threads else 1, plan.n,
                            tuple(in_shape))  # fmt: skip
    chain, outs = args
    if outs[-1] is not plan.out:
        return None
    return run, prepare(chain, tuple(in_shape))
