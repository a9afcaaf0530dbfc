"""The few scikit-learn helpers whose home moved between releases (1.3 ... 1.9).

scikit-learn >= 1.6 validates through module functions (``validate_data``,
``_check_n_features``, ``_check_feature_names``) and describes estimators with
``__sklearn_tags__``; 1.3-1.5 use methods of ``BaseEstimator`` and ``_more_tags``. The
estimators call these wrappers only, so the version question is asked here once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
from sklearn.utils import validation as _v

__all__ = ["validate_data", "check_n_features", "check_feature_names", "NEW_TAGS", "FINITE"]

_VERSION = tuple(int(p) for p in sklearn.__version__.split(".")[:2] if p.isdigit())
NEW_TAGS = _VERSION >= (1, 6)
#: the keyword of check_array that lets NaN/inf through (renamed in 1.6)
FINITE = "ensure_all_finite" if NEW_TAGS else "force_all_finite"


def validate_data(est: Any, X: Any, y: Any = "no_validation", reset: bool = True, **kw) -> Any:
    """``sklearn.utils.validation.validate_data`` (1.6+) or ``est._validate_data`` (older)."""
    if "ensure_all_finite" in kw and FINITE != "ensure_all_finite":
        kw[FINITE] = kw.pop("ensure_all_finite")
    if hasattr(_v, "validate_data"):
        return _v.validate_data(est, X, y, reset=reset, **kw)
    return est._validate_data(X, y, reset=reset, **kw)


def check_n_features(est: Any, X: Any, reset: bool) -> None:
    if hasattr(_v, "_check_n_features"):
        _v._check_n_features(est, X, reset=reset)
    else:
        est._check_n_features(X, reset=reset)


def check_feature_names(est: Any, X: Any, reset: bool) -> None:
    if hasattr(_v, "_check_feature_names") and NEW_TAGS:
        _v._check_feature_names(est, X, reset=reset)
    else:
        est._check_feature_names(X, reset=reset)


def check_sample_weight(sample_weight: Any, n: int) -> np.ndarray:
    """Sample weights as float64 (n,): finite, non-negative, not all zero; else ValueError."""
    w = _v._check_sample_weight(sample_weight, np.empty((n, 0)), dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight holds NaN or infinite values")
    if np.any(w < 0):
        raise ValueError("sample_weight holds negative values")
    if not np.any(w > 0):
        raise ValueError("Sample weights must contain at least one non-zero number")
    return w
