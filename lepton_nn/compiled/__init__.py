"""A compiled training step: ``step = lepton_nn.compile(train_step)``.

For a small model the eager step is mostly Python (graph nodes, wrappers, dispatch), not
arithmetic. ``compile`` records one call's tape — every primitive op of the forward, the
backward and the optimizer update, over numbered buffers — and replays it:

- ``backend="numba"`` (what the default ``"auto"`` picks where Numba is installed): one
  Numba function generated from the tape (our own op table, never source read from a file),
  elementwise work in loops, GEMMs through the BLAS NumPy uses (the same call ``np.matmul``
  makes), optimizer updates in one pass;
- ``backend="numpy"`` (``"auto"`` without Numba): the readable twin, the list of NumPy
  calls with ``out=`` buffers.

The NumPy replay is bit-identical to the eager step (the same calls in the same order),
and so is the Numba replay: GEMMs, +, *, /, sqrt and max are exactly rounded, and for exp,
tanh and log it calls the eager step's own loops by address, with no Python in between:
NumPy's float32 ufunc loops (sigmoid and tanh ops, BCE) and the Cython dense kernels' C
loops (sigmoid/tanh/gelu Dense layers, softmax cross-entropy). Its Adam pass is the Cython
kernel itself, called by address (its tasks on the shared pool, split as the eager step
splits them). So it is bit-identical to the eager step on the ``cython`` backend (the
default where built); where a loop cannot be found (another NumPy's struct layout, no
Cython build) it falls back to libm, which can differ in the last bit (~1e-7 per op).
Inside the one call each op keeps its own loop (bias + activation and the Adam update are
fused, as in the eager kernels); for W1 the time is the GEMMs. The first replay compiles
for a few seconds (once per tape structure and process: not cached on disk, the BLAS
addresses belong to the process).

Calls 1 and 2 with a given input signature run eagerly while recording; the two tapes must
agree (else :class:`~lepton_nn.errors.ControlFlowError`); later calls replay. Parameters are
updated in place (the model sees them), ``.grad`` holds the step's gradient, the optimizer's
state and counters advance as in the eager step and ``opt.lr`` is read at every call (a
scheduler works). Capturing swaps ``Function.apply``, ``Tensor.backward`` and the
optimizers' ``step`` for recording twins during calls 1 and 2 (not thread-safe: capture one
step at a time). Limits: see ``compile``'s docstring.
"""

from __future__ import annotations

from .step import CompiledStep

__all__ = ["compile", "CompiledStep"]


def compile(  # noqa: A001 - the public name asked for: lepton_nn.compile(fn)
    fn, backend: str = "auto", check: bool = False, recapture: bool = False,
    validate: bool = True,
) -> CompiledStep:  # fmt: skip
    """Capture ``fn`` (a training step over lepton_nn ops) and replay it without a graph.

    ``fn(*args)``: args are arrays or Tensors (their shapes and dtypes are the signature),
    or plain numbers (part of the signature by value). It may return None, a Tensor or a
    tuple of Tensors (returned as new Tensors holding the values).

    - A call with another signature raises :class:`~lepton_nn.errors.SignatureError`, or,
      with ``recapture=True``, captures that signature too (one tape per signature, like a
      cache: a last, smaller batch costs two eager calls once).
    - Python control flow inside ``fn`` is captured as taken. The second call checks that
      the tape repeats (``validate``); ``check=True`` also re-runs the eager step from the
      same state at every call and raises when the ops or the results differ (slow: for
      tests and debugging).
    - Ops, optimizers and side effects without a twin raise
      :class:`~lepton_nn.errors.UnsupportedOpError` naming them: supported are Dense /
      ``Linear`` (all fused activations), MatMul, Add, Sub, Mul, Div by a scalar, Neg,
      ReLU, sigmoid, tanh, Reshape, Sum and Mean (all, or axis 1), the MSE, BCE-with-logits
      and softmax cross-entropy losses (no sample weights), and SGD (momentum, Nesterov,
      weight decay), Adam and AdamW. ``fn`` must call ``zero_grad()`` before
      ``backward()``; gradient hooks and edits of ``.grad`` between ``backward()`` and
      ``step()`` are refused.
    - ``.grad`` arrays are the replay's buffers, overwritten by the next call (copy them to
      keep them). Replacing a parameter's ``.data`` is seen at the next call; replacing an
      optimizer's state arrays is not (compile again).
    """
    return CompiledStep(fn, backend=backend, check=check, recapture=recapture, validate=validate)
