"""Labels and class weights: :class:`LabelEncoder` (labels <-> codes ``0..C-1``, with a chosen
positive class for a binary target), :func:`compute_class_weight` and
:func:`compute_sample_weight` (``"balanced"``: n / (C count(class)))."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from lepton_nn.data.preprocess import _plain
from lepton_nn.errors import DataError, ModelFormatError
from lepton_nn.runtime.preprocess import is_missing

__all__ = ["LabelEncoder", "compute_class_weight", "compute_sample_weight"]


def _row_index(i: int) -> str:
    return f"row index {i}"


def _labels(y: Any, who: str, where: Any = None) -> np.ndarray:
    """``y`` as a 1-D label array; a missing label is a DataError at ``where(i)``."""
    where = where or _row_index
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{who}: labels must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise DataError(f"{where(int(np.flatnonzero(np.isnan(arr))[0]))}: missing label ({who})")
    if arr.dtype.kind == "O":
        for i, v in enumerate(arr):
            if is_missing(v, frozenset()):
                raise DataError(f"{where(i)}: missing label ({who})")
    return arr


def _sorted_unique(arr: np.ndarray, who: str) -> np.ndarray:
    try:
        return np.unique(arr)
    except TypeError:
        raise DataError(
            f"{who}: labels mix types that cannot be ordered (e.g. str and int)"
        ) from None


class LabelEncoder:
    """Labels <-> integer codes ``0..C-1`` (``classes_`` sorted, or ``[other, positive]``).

    For a binary target ``positive`` names the label encoded as 1 (``positive="bad"``);
    without it the larger label of the sorted two is positive, as in scikit-learn.
    """

    def __init__(self, positive: Any = None) -> None:
        self.positive = positive
        self.classes_: np.ndarray | None = None

    def fit(self, y: Any, where: Any = None) -> LabelEncoder:
        """Learn the classes of ``y``; ``where(i)`` names row i in errors (say, Table.where)."""
        arr = _labels(y, "LabelEncoder.fit", where)
        classes = _sorted_unique(arr, "LabelEncoder.fit")
        if len(classes) < 2:
            only = classes[0] if len(classes) else None
            raise DataError(f"LabelEncoder.fit: the target has a single class ({only!r})")
        if self.positive is not None:
            pos = _match_label(self.positive, classes)
            if pos is None:
                raise DataError(
                    f"LabelEncoder: positive={self.positive!r} is not one of the labels "
                    f"{classes.tolist()}"
                )
            if len(classes) != 2:
                raise DataError(
                    f"LabelEncoder: positive= is for binary targets, found {len(classes)} classes"
                )
            classes = classes[[1 - pos, pos]]
        self.classes_ = classes
        return self

    @property
    def positive_(self) -> Any:
        """The label encoded as 1 for a binary target (``None`` for multiclass)."""
        c = self._fitted()
        return _item(c[1]) if len(c) == 2 else None

    def _fitted(self) -> np.ndarray:
        if self.classes_ is None:
            raise DataError("LabelEncoder is not fitted yet: call fit() first")
        return self.classes_

    def transform(self, y: Any, where: Any = None) -> np.ndarray:
        """Labels -> int64 codes; an unseen label raises DataError naming it and its row
        (``where(i)``, say a Table's file row; else the 0-based ``row index``)."""
        classes = self._fitted()
        lut = {_item(c): k for k, c in enumerate(classes)}
        lut_str = {str(k): v for k, v in lut.items()}
        where = where or _row_index
        arr = _labels(y, "LabelEncoder.transform", where)
        out = np.empty(len(arr), dtype=np.int64)
        for i, v in enumerate(arr.tolist()):
            k = lut.get(v)
            if k is None:
                k = lut_str.get(str(v))
            if k is None:
                raise DataError(
                    f"{where(i)}: label {v!r} was not seen in training (classes {classes.tolist()})"
                )
            out[i] = k
        return out

    def fit_transform(self, y: Any, where: Any = None) -> np.ndarray:
        return self.fit(y, where).transform(y, where)

    def inverse_transform(self, codes: Any) -> np.ndarray:
        """Integer codes -> labels."""
        classes = self._fitted()
        c = np.asarray(codes)
        if c.size and (c.min() < 0 or c.max() >= len(classes)):
            raise DataError(f"LabelEncoder.inverse_transform: codes outside 0..{len(classes) - 1}")
        return classes[c.astype(np.intp)]

    def to_config(self) -> dict[str, Any]:
        return {"classes": _plain(self._fitted()), "positive": self.positive_}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LabelEncoder:
        try:
            classes = list(cfg["classes"])
            if len(classes) < 2 or len(set(classes)) != len(classes):
                raise ModelFormatError("LabelEncoder config: needs two or more distinct classes")
            if not all(
                isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in classes
            ):
                raise ModelFormatError("LabelEncoder config: classes must be str or numbers")
        except (KeyError, TypeError) as e:
            raise ModelFormatError(f"LabelEncoder config is malformed: {e!r}") from None
        enc = cls(cfg.get("positive"))
        dtype = object if any(isinstance(c, str) for c in classes) else None
        enc.classes_ = np.asarray(classes, dtype=dtype)
        return enc


def _item(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _match_label(label: Any, classes: np.ndarray) -> int | None:
    items = [_item(c) for c in classes]
    for k, c in enumerate(items):
        if c == label and type(c) is not bool:
            return k
    for k, c in enumerate(items):
        if str(c) == str(label):
            return k
    return None


def compute_class_weight(
    y: Any, class_weight: str | Mapping[Any, float] | None = "balanced", classes: Any = None
) -> np.ndarray:
    """Per-class weights aligned with ``classes`` (default: the sorted unique labels).

    ``"balanced"``: ``n_samples / (n_classes * count(class))``; a dict gives weights by label
    (1.0 for labels it does not name); ``None`` gives ones.
    """
    arr = _labels(y, "compute_class_weight")
    present = _sorted_unique(arr, "compute_class_weight")
    cls = present if classes is None else np.asarray(classes)
    if class_weight is None:
        return np.ones(len(cls))
    if isinstance(class_weight, Mapping):
        return np.array([float(class_weight.get(_item(c), 1.0)) for c in cls])
    if class_weight != "balanced":
        raise ValueError(f"class_weight={class_weight!r}; use 'balanced', a dict or None")
    counts = Counter(arr.tolist())
    missing = [_item(c) for c in cls if counts.get(_item(c), 0) == 0]
    if missing:
        raise DataError(f"compute_class_weight: classes {missing} do not occur in y")
    extra = set(counts) - {_item(c) for c in cls}
    if extra:
        raise DataError(f"compute_class_weight: y holds labels {sorted(extra)} not in classes")
    n = len(arr)
    return np.array([n / (len(cls) * counts[_item(c)]) for c in cls])


def compute_sample_weight(
    y: Any, class_weight: str | Mapping[Any, float] | None = "balanced"
) -> np.ndarray:
    """One weight per sample: the weight of its class (see :func:`compute_class_weight`)."""
    arr = _labels(y, "compute_sample_weight")
    classes = _sorted_unique(arr, "compute_sample_weight")
    w = compute_class_weight(arr, class_weight, classes)
    return w[np.searchsorted(classes, arr)]
