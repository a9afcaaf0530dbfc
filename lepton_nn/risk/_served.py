"""The one way the risk tools score rows: through the NumPy runtime's plan (no autograd).

``served(model)`` accepts a ``TabularModel`` (compiled from its manifest, as a saved file
would be), an ``InferenceModel`` or a path to a ``.lnn`` file. ``logits(im, X)`` gives the
binary logit z of each row of network input X (N, F): the score monitoring bins and reason
codes move.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lepton_nn.errors import DataError
from lepton_nn.runtime import InferenceModel
from lepton_nn.runtime.model import from_manifest
from lepton_nn.runtime.model import load as runtime_load
from lepton_nn.runtime.profile import parse_profile


def served(model: Any) -> InferenceModel:
    if isinstance(model, (str, os.PathLike, bytes)):
        return runtime_load(model)
    if isinstance(model, InferenceModel):
        return model
    if hasattr(model, "to_lnn"):
        manifest, arrays = model.to_lnn()
        return from_manifest(manifest, arrays)
    raise TypeError(f"expected a TabularModel, InferenceModel or path, got {type(model)}")


def binary(im: InferenceModel, what: str) -> None:
    if im.kind != "tabular" or im.task != "binary" or im.preprocessing is None:
        raise DataError(f"{what}: needs a binary tabular model (one saved by 'lepton-nn train')")


def profile_of(im: InferenceModel, what: str) -> dict:
    profile = im.manifest.get("profile")
    if profile is None:
        raise DataError(
            f"{what}: the model file has no training profile (bins and baseline); "
            "it is written by TabularModel.fit from this version on: retrain and save"
        )
    return parse_profile(profile, im.manifest.get("preprocessing"))


def logits(im: InferenceModel, X: np.ndarray) -> np.ndarray:
    """(N,) float64 binary logits from network input (N, F)."""
    out = im.forward(X).reshape(len(X), -1).astype(np.float64)
    if im._probabilities:
        with np.errstate(divide="ignore"):
            out = np.log(out) - np.log1p(-out) if out.shape[1] == 1 else np.log(out)
    return out[:, 0] if out.shape[1] == 1 else out[:, 1] - out[:, 0]


def adverse_sign(im: InferenceModel, adverse: Any) -> float:
    """+1 if a higher logit (the positive class) is the adverse outcome, -1 if the other."""
    classes = im.classes.tolist() if im.classes is not None else [0, 1]
    if adverse is None:
        return 1.0
    if adverse not in classes:
        raise DataError(f"adverse={adverse!r} is not one of the classes {classes}")
    return 1.0 if adverse == classes[1] else -1.0
