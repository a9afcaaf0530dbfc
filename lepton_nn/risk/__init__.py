"""Credit-risk tools around a tabular model (floor 8): calibration, reason codes,
monitoring (PSI), fairness, scorecard scaling and the model card.

Public names are loaded lazily (PEP 562), so ``import lepton_nn.risk`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "calibrate": "calibration",
    "reliability_table": "calibration",
    "reason_codes": "reasons",
    "psi": "stability",
    "monitor": "stability",
    "MonitorReport": "stability",
    "fairness": "groups",
    "FairnessReport": "groups",
    "Scorecard": "scorecard",
    "card": None,
    "write_card": "model_card",
    "ks": "stability",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'lepton_nn.risk' has no attribute {name!r}")
    if _NAMES[name] is None:
        return importlib.import_module(f"{__name__}.{name}")
    return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
