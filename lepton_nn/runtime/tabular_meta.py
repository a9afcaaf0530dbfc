"""The tabular part of a model file's manifest (task, preprocessing, threshold, output kind,
target scale, class labels), checked and set on an :class:`InferenceModel`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from lepton_nn.errors import ModelFormatError

from .validate import TASKS

if TYPE_CHECKING:
    from .preprocess import Preprocessing


def init_tabular(model, manifest: dict, parsed: Preprocessing | None) -> None:
    """Set a tabular file's task, preprocessing, threshold, output kind, target scale and
    classes on ``model`` (an InferenceModel) from its ``manifest``, each checked
    (``ModelFormatError``). ``parsed``: the validator's parse of ``manifest["preprocessing"]``."""
    task = manifest.get("task")
    if task not in TASKS:
        raise ModelFormatError(f"tabular file: task {task!r} is not one of {TASKS}")
    model.task = task
    if model._many_in or len(model.network.outputs) > 1:
        raise ModelFormatError("tabular file: the network must have one input and one output")
    if manifest.get("preprocessing") is not None:
        if parsed is None:
            from .preprocess import Preprocessing

            parsed = Preprocessing.from_config(manifest["preprocessing"])
        model.preprocessing = parsed
        width = model.preprocessing.n_features_out
        if model._in != (width,):
            raise ModelFormatError(
                f"tabular file: preprocessing gives {width} features, the network takes {model._in}"
            )
    threshold = manifest.get("threshold", 0.5)
    if threshold is None:
        threshold = 0.5
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ModelFormatError(f"tabular file: threshold {threshold!r} is not a number")
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ModelFormatError(f"tabular file: threshold {threshold!r} is not in [0, 1]")
    model.threshold = float(threshold)
    output = manifest.get("output")
    if output is not None:
        if output not in ("probabilities", "logits"):
            raise ModelFormatError(f"tabular file: output {output!r} is not understood")
        model._probabilities = output == "probabilities"
    width = int(np.prod(model.network.output_shape))
    labels = manifest.get("labels")
    if task == "regression":
        ts = manifest.get("target_scale", [0.0, 1.0])
        if not (
            isinstance(ts, list)
            and len(ts) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ts)
            and all(math.isfinite(v) for v in ts)
        ):
            raise ModelFormatError(f"tabular file: bad target_scale {ts!r}")
        model.target_scale = (float(ts[0]), float(ts[1]))
        return
    if labels is not None:
        classes = labels.get("classes") if isinstance(labels, dict) else None
        if (
            not isinstance(classes, list)
            or len(classes) < 2
            or not all(
                isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in classes
            )
            or len(set(classes)) != len(classes)
        ):
            raise ModelFormatError("tabular file: labels need two or more distinct classes")
        dtype = object if any(isinstance(c, str) for c in classes) else None
        model.classes = np.asarray(classes, dtype=dtype)
    n_classes = len(model.classes) if model.classes is not None else max(2, width)
    expected = (1, 2) if task == "binary" else (n_classes,)
    if task == "binary" and n_classes != 2:
        raise ModelFormatError(f"tabular file: binary task with {n_classes} classes")
    if width not in expected:
        raise ModelFormatError(
            f"tabular file: {task} task with {n_classes} classes but the network gives "
            f"{width} outputs"
        )
