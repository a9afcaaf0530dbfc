"""``reason_codes(model, rows, k)``: for each row, the k raw columns that pushed its score
furthest toward the adverse outcome, with the row's value and the size of the push.

The computation is the runtime's (:mod:`lepton_nn.runtime.reasons`, occlusion by column
against the training profile's baseline applicant, forward passes only), so that
``lepton-nn serve`` gives the same codes without this floor. (Integrated gradients would
need the backward pass of the plan, which the runtime does not have; for a non-linear
network the two differ where columns interact.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_nn.runtime.reasons import Reasons, feature_groups

from . import _served

__all__ = ["feature_groups", "reason_codes", "reason_matrix"]


def reason_matrix(model: Any, rows: Any, adverse: Any = None) -> tuple[np.ndarray, list, Any]:
    """(N, C) contributions toward the adverse outcome, the column names, the served model."""
    im = _served.served(model)
    rv = Reasons(im)
    return rv.matrix(im.transform(rows), adverse), rv.names, im


def reason_codes(
    model: Any, rows: Any, k: int = 4, adverse: Any = None
) -> list[list[tuple[str, Any, float]]]:
    """Per row, up to ``k`` ``(column, value, contribution)`` triples, largest push first.

    ``model``: a binary ``TabularModel``, ``InferenceModel`` or ``.lnn`` path with a training
    profile, or a multiclass one. ``adverse``: the class that means decline (default: the
    positive class, the last of ``classes``; multiclass: the class to explain, default each
    row's predicted class). ``value`` is the row's raw value (None when missing).
    """
    return Reasons(_served.served(model))(rows, k, adverse)
