"""The one way the risk tools score rows: through the NumPy runtime's plan (no autograd).

``served(model)`` accepts a ``TabularModel`` (compiled from its manifest, as a saved file
would be), an ``InferenceModel`` or a path to a ``.lnn`` file. ``logits(im, X)`` gives the
binary logit z of each row of network input X (N, F): the score monitoring bins and reason
codes move (it, ``adverse_sign``, ``profile_of`` and ``binary`` are the runtime's own, from
:mod:`lepton_nn.runtime.reasons`, which ``lepton-nn serve`` uses too).
"""

from __future__ import annotations

import os
from typing import Any

from lepton_nn.runtime import InferenceModel
from lepton_nn.runtime.model import from_manifest
from lepton_nn.runtime.model import load as runtime_load
from lepton_nn.runtime.reasons import adverse_sign, logits, profile_of, require_binary

__all__ = ["adverse_sign", "binary", "logits", "profile_of", "served"]


def served(model: Any) -> InferenceModel:
    if isinstance(model, (str, os.PathLike, bytes)):
        return runtime_load(model)
    if isinstance(model, InferenceModel):
        return model
    if hasattr(model, "to_lnn"):
        manifest, arrays = model.to_lnn()
        return from_manifest(manifest, arrays)
    raise TypeError(f"expected a TabularModel, InferenceModel or path, got {type(model)}")


binary = require_binary
