"""``DivergenceGuard``: stop a diverging ``fit`` and put back the last good weights.

A batch is *bad* when its loss is NaN or infinite, when the model's outputs on it are not all
finite, or when its loss passes the divergence bound::

    bound = divergence * max(1, loss of the first batch of the fit)

(a loss ten thousand times the untrained model's is divergence, not noise: Adam at lr 1e6
keeps every value finite while its loss grows a millionfold). Before each optimizer step the
guard copies the weights (buffers made once) and the layers' buffers (BatchNorm running
statistics). At a bad batch b, the weights before step b - 1 are the last whose loss was
checked and good (on batch b - 1), so they are restored, unless the batch's own inputs are
not finite: then the data is to blame and the current weights are kept (only the buffers
that batch's forward pass touched are put back). No batch follows an epoch's last update, so
``fit`` checks it with the same rule on the validation loss, or, after the last epoch
without validation data, on the last batch scored again.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

__all__ = ["DivergenceGuard", "DivergenceWarning", "NonFiniteLossWarning"]


class DivergenceWarning(RuntimeWarning):
    """Training stopped because it diverged (a loss past the bound, or non-finite values)."""


class NonFiniteLossWarning(DivergenceWarning):
    """Training stopped because a batch loss or output was NaN or infinite."""


class DivergenceGuard:
    """Per-batch divergence check and weight snapshots for one ``fit`` (see module docstring).

    Args:
        model: the module being trained (built).
        divergence: the bound's factor; ``None`` or ``inf`` checks finiteness only.
    """

    def __init__(self, model: Any, divergence: float | None):
        if divergence is not None and not divergence > 1:
            raise ValueError(f"divergence must be > 1 or None, got {divergence}")
        self.factor = math.inf if divergence is None else float(divergence)
        self.weights = model.parameters()
        self.snapshot = [np.empty_like(p.data) for p in self.weights]
        self.holders = [m for m in model.modules() if m.buffers()]
        self.buffers: list[dict[str, np.ndarray]] = []
        self.saved = False
        self.first: float | None = None
        self.bound = math.inf

    def check(self, loss: float, out: np.ndarray) -> str | None:
        """``None`` for a good batch, else ``"nonfinite"`` or ``"bound"``."""
        if not math.isfinite(loss) or not np.isfinite(out).all():
            return "nonfinite"
        if self.first is None:
            self.first = loss
            self.bound = self.factor * max(1.0, loss)
        return "bound" if loss > self.bound else None

    def save(self) -> None:
        """Copy the weights (called after backward, before the optimizer step)."""
        for s, p in zip(self.snapshot, self.weights):
            s[...] = p.data  # (slice assignment: cheaper than np.copyto here)
        if self.holders:
            self.buffers = [{k: v.copy() for k, v in m.buffers().items()} for m in self.holders]
        self.saved = True

    def weights_finite(self) -> bool:
        return all(np.isfinite(p.data).all() for p in self.weights)

    def restore(self, weights: bool = True) -> bool:
        """Put back the saved buffers and (``weights``) the saved weights; False if none."""
        if not self.saved:
            return False
        for m, b in zip(self.holders, self.buffers):
            m.load_buffers(b)
        if weights:
            for s, p in zip(self.snapshot, self.weights):
                p.data[...] = s
        return True

    def stop(self, where: str, kind: str, loss: float, inputs: Any, stacklevel: int = 3) -> str:
        """Restore what the bad batch at ``where`` calls for; warn and return the message.

        kind: ``"nonfinite"``, ``"bound"`` (from :meth:`check`) or ``"weights"`` (the last
        step of an epoch made the weights non-finite). ``inputs``: the bad batch's inputs
        (an array, or a dict of arrays for a model of several inputs).
        ``stacklevel``: of the warning, seen from here (3: the caller of ``fit``).
        """
        given = list(inputs.values()) if isinstance(inputs, dict) else [inputs]
        data_fault = (
            kind == "nonfinite"
            and any(
                a is not None and a.dtype.kind in "fc" and not np.isfinite(a).all() for a in given
            )
            and self.weights_finite()
        )
        restored = self.restore(weights=not data_fault)
        if kind == "bound":
            head = (
                f"loss {loss:.4g} at {where} passed the divergence bound {self.bound:.4g} "
                f"({self.factor:g} x max(1, first batch loss {self.first:.4g}))"
            )
        elif kind == "weights":
            head = f"the update of {where} made the weights non-finite"
        else:
            head = f"non-finite loss or outputs (loss {loss}) at {where}"
        if data_fault:
            kept = "the batch holds non-finite inputs, so its update was not applied"
            hint = "check the data"
        elif restored:
            kept = (
                "that update was undone"
                if kind == "weights"
                else "the previous update was undone, restoring the last weights with a good loss"
            )
            hint = "lower the learning rate or check the data"
        else:
            kept = "no earlier weights to restore (it happened before the first update)"
            hint = "check the data and the model's initialization"
        msg = f"{head}: training stopped; {kept} ({hint})"
        cls = DivergenceWarning if kind == "bound" else NonFiniteLossWarning
        warnings.warn(msg, cls, stacklevel=stacklevel)
        return msg
