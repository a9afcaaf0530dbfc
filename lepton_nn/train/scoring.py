"""The half of :class:`~lepton_nn.train.Trainer` that does not train: inputs checked and
cast (X by input name for a model of several inputs, y by task), raw outputs in eval mode
without a graph, probabilities and classes, metrics, ``evaluate`` and ``predict``.

``_Scoring`` is Trainer's base class; it reads the trainer's ``model``, ``loss_fn``,
``task``, ``threshold`` and ``metrics`` (set by ``Trainer.__init__``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from ..autograd import Tensor, no_grad
from ..errors import DataError, LeptonError, ShapeError
from .inputs import Inputs, as_inputs, n_rows, rows

EVAL_BATCH = 4096  # rows per forward pass in predict/evaluate (fixed: BLAS rounding varies)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # 1 / (1 + exp(-z)) without overflow: (1 + tanh(z / 2)) / 2
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class _Metric:
    """A metric by name or callable, with the kind of input it needs (scores or labels)."""

    __slots__ = ("name", "fn", "needs_score")

    def __init__(self, metric: str | Callable, task: str):
        if isinstance(metric, str):
            from ..metrics import f1, get_metric, precision, recall

            fn = get_metric(metric)
            if task == "multiclass" and fn in (precision, recall, f1):
                fn = partial(fn, average="macro")
            self.name, self.fn = metric, fn
            self.needs_score = bool(getattr(fn, "needs_score", False))
        elif callable(metric):
            self.name = getattr(metric, "__name__", type(metric).__name__)
            self.fn, self.needs_score = metric, bool(getattr(metric, "needs_score", False))
        else:
            raise TypeError(f"a metric is a name or a callable, got {metric!r}")
        if self.needs_score and task == "regression":
            raise ValueError(f"metric {self.name!r} needs class scores, but the task is regression")


class _Scoring:
    """Inputs, outputs and scores of a trainer (see the module docstring)."""

    # -- input preparation -----------------------------------------------------------------
    @property
    def _dtype(self) -> np.dtype:
        return np.dtype(getattr(self.model, "dtype", np.float32))

    @staticmethod
    def _numeric(v: Any, what: str, encode: str) -> np.ndarray:
        """``v`` (an array, nested lists or a Tensor) as a numeric array, else DataError."""
        arr = np.asarray(v.data if isinstance(v, Tensor) else v)
        if arr.dtype.kind not in "biuf":
            raise DataError(f"{what} must be numeric, got dtype {arr.dtype}; {encode}")
        return arr

    def _x(self, X: Any) -> Inputs:
        """X as one array, or a dict by input name for a model of several inputs
        (:mod:`lepton_nn.train.inputs`)."""
        return as_inputs(self.model, X, self._x_one)

    def _x_one(self, v: Any, what: str) -> np.ndarray:
        arr = self._numeric(v, what, "encode it first (lepton_nn.data.Preprocessor)")
        if arr.ndim == 0:
            raise ShapeError(f"{what} must have a batch axis, got a scalar")
        return np.ascontiguousarray(arr, dtype=self._dtype)

    def _y(self, y: Any) -> np.ndarray:
        arr = self._numeric(y, "y", "encode the labels first (lepton_nn.data.LabelEncoder)")
        if self.task == "multiclass" and arr.ndim == 1:
            if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
                raise DataError("multiclass targets must be integer class labels 0..C-1")
            return np.ascontiguousarray(arr, dtype=np.int64)
        if self.task == "binary" and arr.size and (arr.min() < 0 or arr.max() > 1):
            raise DataError(
                f"binary targets must be 0/1 (or probabilities), got values in "
                f"[{arr.min()}, {arr.max()}]; encode the labels (lepton_nn.data.LabelEncoder)"
            )
        return np.ascontiguousarray(arr, dtype=self._dtype)

    @staticmethod
    def _check_rows(X: Inputs, *others: tuple[str, np.ndarray | None]) -> None:
        n = n_rows(X)
        for name, a in others:
            if a is not None and len(a) != n:
                raise ShapeError(f"X has {n} rows but {name} has {len(a)}")

    # -- outputs, scores -------------------------------------------------------------------
    def _forward(self, X: Inputs, batch_size: int) -> np.ndarray:
        """Raw model outputs for every row, in eval mode, without a graph."""
        model = self.model
        was = model.training
        model.eval()
        try:
            with no_grad():
                n = n_rows(X)
                if n <= batch_size:
                    return np.asarray(model(X).data)
                out = None
                for start in range(0, n, batch_size):
                    o = model(rows(X, slice(start, start + batch_size))).data
                    if out is None:
                        out = np.empty((n, *o.shape[1:]), o.dtype)
                    out[start : start + len(o)] = o
                return out
        finally:
            if was:
                model.train()

    def _proba(self, out: np.ndarray) -> np.ndarray:
        if self.task == "binary":
            p = _sigmoid(out)
            return p.reshape(-1) if p.ndim == 2 and p.shape[1] == 1 else p
        if self.task == "multiclass":
            if out.ndim != 2:
                raise ShapeError(f"multiclass outputs must be (N, C), got {out.shape}")
            return _softmax(out)
        raise LeptonError("predict_proba needs a classification task (bce or cross_entropy)")

    def _classes(self, proba: np.ndarray) -> np.ndarray:
        if self.task == "binary":
            return (proba >= self.threshold).astype(np.int64)
        return proba.argmax(axis=1)

    def _score(self, y: np.ndarray, out: np.ndarray, metrics: list[_Metric]) -> dict[str, float]:
        """Metric values for targets ``y`` and raw outputs ``out`` (NaN where undefined)."""
        if not metrics:
            return {}
        scores = labels = None
        if self.task == "regression":
            pred = out.reshape(-1) if out.ndim == 2 and out.shape[1] == 1 else out
            truth = y.reshape(pred.shape) if y.size == pred.size else y  # (N, 1) targets too
        else:
            scores = self._proba(out)
            if self.task == "binary":  # 0/1 (or soft) targets -> class codes
                truth = (y.reshape(scores.shape) >= 0.5).astype(np.int64)
            else:
                truth = y.argmax(axis=1) if y.ndim == 2 else y
        result: dict[str, float] = {}
        for m in metrics:
            if self.task == "regression":
                arg = pred
            elif m.needs_score:
                arg = scores
            else:
                labels = self._classes(scores) if labels is None else labels
                arg = labels
            t, a = truth, arg
            if self.task == "binary" and np.ndim(a) == 2:  # multi-label: score all cells
                t, a = np.asarray(t).reshape(-1), np.asarray(a).reshape(-1)
            try:
                result[m.name] = float(m.fn(t, a))
            except DataError:  # e.g. ROC AUC of a validation set holding one class
                result[m.name] = float("nan")
        return result

    def _evaluate_arrays(
        self,
        X: Inputs,
        y: np.ndarray,
        w: Any,
        metrics: list[_Metric],
        batch_size: int = EVAL_BATCH,
    ) -> dict[str, float]:
        out = self._forward(X, batch_size)
        with no_grad():
            t = Tensor(out)
            if w is None:
                loss = self.loss_fn(t, y)
            else:
                loss = self.loss_fn(t, y, sample_weight=np.asarray(w, out.dtype).reshape(-1))
        result = {"loss": float(loss.data)}
        result.update(self._score(y, out, metrics))
        return result

    def evaluate(
        self,
        X: Any,
        y: Any,
        batch_size: int = EVAL_BATCH,
        sample_weight: Any = None,
        metrics: Sequence[str | Callable] | None = None,
    ) -> dict[str, float]:
        """``{"loss": ..., <metric>: ...}`` on ``(X, y)``, in eval mode.

        ``metrics`` replaces the trainer's own metrics for this call. Metrics undefined on the
        data (ROC AUC with one class) are NaN.
        """
        X, y = self._x(X), self._y(y)
        self._check_rows(X, ("y", y), ("sample_weight", sample_weight))
        ms = self.metrics if metrics is None else [_Metric(m, self.task) for m in metrics]
        return self._evaluate_arrays(X, y, sample_weight, ms, int(batch_size))

    def predict(self, X: Any, batch_size: int = EVAL_BATCH) -> np.ndarray:
        """The model's raw outputs (logits for bce/cross_entropy), eval mode, no graph."""
        return self._forward(self._x(X), int(batch_size))

    def predict_proba(self, X: Any, batch_size: int = EVAL_BATCH) -> np.ndarray:
        """Class probabilities: binary -> P(positive) of shape ``(N,)`` (a one-unit output;
        ``(N, K)`` for K independent sigmoid outputs); multiclass -> softmax ``(N, C)``."""
        return self._proba(self.predict(X, batch_size))

    def predict_classes(self, X: Any, batch_size: int = EVAL_BATCH) -> np.ndarray:
        """Predicted class codes: ``P >= threshold`` (binary) or the argmax (multiclass)."""
        return self._classes(self.predict_proba(X, batch_size))
