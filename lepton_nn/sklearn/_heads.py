"""Targets and outputs: classification (labels <-> logits) and regression (standardized y)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets

from .. import losses
from ..data import LabelEncoder
from ..errors import ModelFormatError
from ._base import NeuralEstimator


class ClassifierNet(ClassifierMixin, NeuralEstimator):
    """Two classes: one logit z, P(classes_[1]) = sigmoid(z), BCE. C > 2 classes: C logits,
    softmax, cross-entropy. ``predict`` is ``classes_[1]`` where P >= 0.5 (z >= 0), as the
    runtime decides, else the argmax."""

    _task = "classification"

    def partial_fit(self, X: Any, y: Any, classes: Any = None, sample_weight: Any = None):
        """One epoch over ``(X, y)`` from the current weights; ``classes`` (every label that
        will ever be seen) is required on the first call."""
        if not self._fitted():
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={np.unique(classes)!r} is not the same as on the first call to "
                f"partial_fit ({self.classes_!r})"
            )
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _class_weights(self, y: np.ndarray) -> np.ndarray | None:
        check_classification_targets(y)
        if self.class_weight is None:
            return None
        return compute_sample_weight(self.class_weight, y)

    def _fit_target(self, y: np.ndarray, w, reset: bool, classes: Any = None) -> np.ndarray:
        check_classification_targets(y)
        if reset:
            labels = np.unique(y if classes is None else classes)
            if len(labels) < 2:
                raise ValueError(
                    f"{type(self).__name__} needs samples of at least 2 classes in the data, "
                    f"but the data contains only one class: {labels[0]!r}"
                )
            self.classes_ = labels
        unseen = np.setdiff1d(y, self.classes_)
        if unseen.size:
            raise ValueError(f"y holds labels {unseen.tolist()} not in classes_ {self.classes_}")
        codes = np.searchsorted(self.classes_, y)
        if len(self.classes_) == 2:
            return codes.astype(np.float32).reshape(-1, 1)
        return codes.astype(np.int64)

    def _n_outputs(self) -> int:
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _loss(self):
        if len(self.classes_) == 2:
            return losses.binary_cross_entropy_with_logits
        return losses.cross_entropy

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits: (N,) for two classes (> 0 favours ``classes_[1]``), else (N, C)."""
        out = self._outputs(X)
        return out[:, 0] if out.shape[1] == 1 else out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, C), columns in ``classes_`` order."""
        z = self.decision_function(X)
        if z.ndim == 1:
            p = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow
            return np.stack([1.0 - p, p], axis=1)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        z = self.decision_function(X)
        codes = (z >= 0).astype(np.intp) if z.ndim == 1 else z.argmax(axis=1)
        return self.classes_[codes]

    # -- the model file ---------------------------------------------------------------------
    def _fill_tabular(self, tm) -> None:
        tm.task_ = "binary" if len(self.classes_) == 2 else "multiclass"
        enc = LabelEncoder()
        enc.classes_ = self.classes_
        tm.labels = enc

    def _fitted_state(self) -> dict:
        return {**super()._fitted_state(), "classes_dtype": self.classes_.dtype.str}

    def _restore_tabular(self, tm, state: dict) -> None:
        if tm.labels is None:
            raise ModelFormatError("estimator section: a classifier file without labels")
        dtype = state.get("classes_dtype")
        if not isinstance(dtype, str) or np.dtype(dtype).kind not in "biufUO":
            raise ModelFormatError(f"estimator section: bad classes_dtype {dtype!r}")
        self.classes_ = np.asarray(tm.labels.classes_.tolist(), dtype=dtype)


class RegressorNet(RegressorMixin, NeuralEstimator):
    """One output trained on the standardized target ``(y - mu) / sd`` (mu, sd weighted by the
    sample weights); ``predict`` gives ``out * sd + mu``."""

    _task = "regression"

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None):
        """One epoch over ``(X, y)`` from the current weights (the target's mean and spread
        come from the first call)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _fit_target(self, y: np.ndarray, w, reset: bool, classes: Any = None) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if reset:
            mu = float(np.average(y, weights=w))
            sd = float(np.sqrt(np.average((y - mu) ** 2, weights=w)))
            self._target_scale = (mu, sd if sd > 0 and np.isfinite(sd) else 1.0)
        mu, sd = self._target_scale
        return ((y - mu) / sd).reshape(-1, 1)  # the Trainer casts to the network dtype

    def _n_outputs(self) -> int:
        return 1

    def _loss(self):
        return losses.mse

    def predict(self, X: Any) -> np.ndarray:
        out = self._outputs(X)[:, 0]
        mu, sd = self._target_scale
        return out * sd + mu

    def _fill_tabular(self, tm) -> None:
        tm.task_ = "regression"
        tm.labels = None
        tm.target_scale = tuple(self._target_scale)

    def _restore_tabular(self, tm, state: dict) -> None:
        if tm.task_ != "regression":
            raise ModelFormatError(f"estimator section: a regressor file with task {tm.task_!r}")
        self._target_scale = (float(tm.target_scale[0]), float(tm.target_scale[1]))
