"""The tabular part of a model file's manifest (task, preprocessing, threshold, output kind,
target scale, class labels), set on an :class:`InferenceModel`. The one validator
(:func:`.validate.validate`, ``_check_tabular``) has checked every field before a model is
built, so that a file one loader accepts the other does too: here they are only read."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lepton_nn.errors import ModelFormatError

if TYPE_CHECKING:
    from .preprocess import Preprocessing


def init_tabular(model, manifest: dict, parsed: Preprocessing | None) -> None:
    """Set a tabular file's task, preprocessing, threshold, output kind, target scale and
    classes on ``model`` (an InferenceModel) from its validated ``manifest``. ``parsed``: the
    validator's parse of ``manifest["preprocessing"]`` (None without one)."""
    if model._many_in or len(model.network.outputs) > 1:  # the network's parse tells this
        raise ModelFormatError("tabular file: the network must have one input and one output")
    model.task = task = manifest["task"]
    if parsed is not None:
        model.preprocessing = parsed
    threshold = manifest.get("threshold")
    model.threshold = 0.5 if threshold is None else float(threshold)
    output = manifest.get("output")
    if output is not None:
        model._probabilities = output == "probabilities"
    if task == "regression":
        ts = manifest.get("target_scale", [0.0, 1.0])
        model.target_scale = (float(ts[0]), float(ts[1]))
        return
    labels = manifest.get("labels")
    if labels is not None:
        classes = labels["classes"]
        dtype = object if any(isinstance(c, str) for c in classes) else None
        model.classes = np.asarray(classes, dtype=dtype)
