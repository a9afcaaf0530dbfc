"""The ``.lnn`` form of :class:`~lepton_nn.tabular.TabularModel` (manifest kind ``"tabular"``):
the network (compressed or not), preprocessing, labels, decision threshold, target scale,
parameters and cards. ``TabularModel.to_lnn``/``from_lnn`` call these."""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import LabelEncoder, Preprocessor
from .errors import ModelFormatError
from .io import module_from_lnn, module_to_lnn
from .tabular_parts import TASKS, _check_monotone, _plain

MIN_CSR_SPARSITY = 0.5  # a pruned float weight with at least this many zeros is stored as CSR


def to_lnn(model: Any) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest section and arrays of a fitted model (``.lnn`` kind ``"tabular"``)."""
    model._check()
    if model.compression is not None:
        from .compress import compressed_to_lnn

        int8 = None if model.quantized is None else model.quantized.layers
        wrapped, arrays = compressed_to_lnn(model.network, int8, min_sparsity=MIN_CSR_SPARSITY)
        section = wrapped["model"]
    else:
        section, arrays = module_to_lnn(model.network)
    manifest = {
        "kind": "tabular",
        "task": model.task_,
        "model": section,
        "preprocessing": model.preprocessor.to_config(),
        "labels": None if model.labels is None else model.labels.to_config(),
        "threshold": model.threshold,
        "target_scale": list(model.target_scale),
        "params": {k: _plain(v) for k, v in model.get_params().items()},
        "metrics": model.metrics_card,
        "seed": model.seed,
    }
    if model.compression is not None:
        manifest["compression_card"] = model.compression
    for key in ("card", "calibration", "profile"):
        if getattr(model, key) is not None:
            manifest[key] = getattr(model, key)
    if model.privacy_card is not None:
        manifest["privacy"] = _plain(model.privacy_card)
    return manifest, arrays


def from_lnn(cls: type, manifest: dict, arrays: dict) -> Any:
    """A ``cls`` rebuilt from :func:`to_lnn`'s output; a damaged manifest: ModelFormatError."""
    task = manifest.get("task")
    if task not in TASKS[1:]:
        raise ModelFormatError(f"tabular model: unknown task {task!r}")
    threshold = manifest.get("threshold", 0.5)
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ModelFormatError(f"tabular model: bad threshold {threshold!r}")
    model = cls(threshold=float(threshold))
    model.task_ = task
    section = manifest.get("model")
    if isinstance(section, dict) and "compression" in section:
        from .compress import network_from_lnn

        model.network, model.quantized = network_from_lnn(section, arrays)
    else:
        model.network = module_from_lnn(section, arrays)
    card = manifest.get("compression_card")
    if card is not None or model.quantized is not None:
        model.compression = card if isinstance(card, dict) else {}
    model.preprocessor = Preprocessor.from_config(manifest.get("preprocessing"))
    labels = manifest.get("labels")
    model.labels = None if labels is None else LabelEncoder.from_config(labels)
    ts = manifest.get("target_scale", [0.0, 1.0])
    if not (isinstance(ts, list) and len(ts) == 2 and all(isinstance(v, (int, float)) for v in ts)):
        raise ModelFormatError("tabular model: bad target_scale")
    model.target_scale = (float(ts[0]), float(ts[1]))
    card = manifest.get("metrics")
    model.metrics_card = card if isinstance(card, dict) else {}
    # checked by the validator (calibration, profile) or when printed (card)
    model.card = manifest.get("card") if isinstance(manifest.get("card"), dict) else None
    params = manifest.get("params")
    try:
        model.monotone = _check_monotone((params or {}).get("monotone"))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelFormatError(f"tabular model: bad monotone constraints: {exc}") from None
    model.calibration = manifest.get("calibration")
    model.profile = manifest.get("profile")
    card = manifest.get("privacy")
    model.privacy_card = card if isinstance(card, dict) else None
    if model.task_ != "regression" and model.labels is None:
        raise ModelFormatError("tabular classifier without labels")
    return model
