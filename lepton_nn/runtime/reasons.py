"""Reason codes on the runtime plan: for each row, the raw columns that pushed its score
furthest toward the adverse outcome (used by :func:`lepton_nn.risk.reason_codes` and by
``lepton-nn serve``; NumPy only, floor 6).

Method: **occlusion by column against a baseline applicant** (forward passes only). The
baseline is the training profile's (:mod:`.profile`): per column, the median (numeric) or
mode (categorical) of the *approved* training rows. For network input x of a row and raw
column c (all the network inputs c feeds: its scaled value, one-hot block, missing
indicator)::

    contribution_c(x) = s * (z(x) - z(x with column c set to the baseline))

with z the binary logit and s = +1 when the positive class is the adverse one, else -1. It
says how much lower the adverse log-odds would be if this one column were typical of
approved applicants; a one-hot group counts as one column; C + 1 forward passes (one
batched call per chunk) for C columns; the same for float, pruned and int8 models. Only
contributions > 0 are reasons: a row has fewer than k when fewer columns push toward decline.

**Multiclass** models explain a target class t per row: ``adverse`` when given (one of
``classes``), else the row's predicted class. The score is t's one-vs-rest log-odds from the
model's probabilities p (those of ``predict_proba``)::

    z_t(x) = log p_t - log(sum_{j != t} p_j)        (= the binary logit when K = 2)

and the baseline is the training population's typical row as the file records it: the
preprocessing's fill values (numeric: the imputation statistic, categorical: the fill
category), since a multiclass target has no approved class. A training profile, when a file
has one, gives the baseline instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lepton_nn.errors import DataError

from .model import InferenceModel
from .preprocess import CATEGORICAL, Preprocessing
from .profile import baseline_row, column_values, parse_profile

__all__ = [
    "Reasons",
    "adverse_sign",
    "class_logodds",
    "feature_groups",
    "logits",
    "profile_of",
    "require_binary",
]

CHUNK = 2048  # rows per batched forward call (x (C + 1) copies)


def require_binary(im: InferenceModel, what: str) -> None:
    if im.kind != "tabular" or im.task != "binary" or im.preprocessing is None:
        raise DataError(f"{what}: needs a binary tabular model (one saved by 'lepton-nn train')")


def profile_of(im: InferenceModel, what: str) -> dict:
    """The file's checked training profile; ``DataError`` when it has none."""
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


def class_logodds(p: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N,) one-vs-rest log-odds ``log p_t - log sum_{j != t} p_j`` of class ``target[i]``
    from probabilities p (N, K) (the others summed, not 1 - p_t: exact near p_t = 1)."""
    rows = np.arange(len(p))
    others = np.ones(p.shape, dtype=bool)
    others[rows, target] = False
    rest = np.sum(p, axis=1, where=others)
    tiny = np.finfo(np.float64).tiny  # a probability that underflowed: finite log-odds
    return np.log(np.maximum(p[rows, target], tiny)) - np.log(np.maximum(rest, tiny))


def _class_index(im: InferenceModel, adverse: Any) -> int | None:
    """The index of class ``adverse`` (None: each row's prediction); DataError otherwise."""
    if adverse is None:
        return None
    classes = im.classes.tolist() if im.classes is not None else list(range(im.output_shape[-1]))
    if adverse not in classes:
        raise DataError(f"adverse={adverse!r} is not one of the classes {classes}")
    return classes.index(adverse)


def feature_groups(pre: Preprocessing) -> list[np.ndarray]:
    """Per raw column (in order), the indices of the network inputs it feeds."""
    groups, j = [], 0
    for s in pre.columns:
        width = 1 if s["kind"] != CATEGORICAL else len(s["categories"])
        width += int(s["indicator"])
        groups.append(np.arange(j, j + width))
        j += width
    return groups


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")


class Reasons:
    """The reason-code explainer of one tabular classifier: binary with a training profile,
    or multiclass (checked once here: ``DataError`` otherwise). ``rv(rows, k, adverse)``
    gives the codes; :meth:`matrix` and :meth:`top` are its two halves, for callers (the
    server) that already hold the rows' network input."""

    def __init__(self, im: InferenceModel, what: str = "reason_codes") -> None:
        task = im.task if im.kind == "tabular" and im.preprocessing is not None else None
        if task not in ("binary", "multiclass"):
            raise DataError(
                f"{what}: needs a tabular classifier, binary or multiclass (one saved by "
                "'lepton-nn train')"
            )
        self.multiclass = task == "multiclass"
        self.im, self.pre = im, im.preprocessing
        if self.multiclass and im.manifest.get("profile") is None:
            base = {s["name"]: [s["fill"]] for s in self.pre.columns}  # the typical row
        else:
            base = baseline_row(profile_of(im, what))
        self.names = list(self.pre.names)
        self.groups = feature_groups(self.pre)
        self.base = self.pre.transform(base)[0]  # (F,)

    def matrix(self, X: np.ndarray, adverse: Any = None) -> np.ndarray:
        """(N, C) contributions toward the adverse outcome (multiclass: the target class) of
        network input X (N, F)."""
        if self.multiclass:
            target = _class_index(self.im, adverse)
        else:
            sign = adverse_sign(self.im, adverse)
        C = len(self.groups)
        out = np.empty((len(X), C))
        for lo in range(0, len(X), CHUNK):
            x = X[lo : lo + CHUNK]
            batch = np.repeat(x[None], C + 1, axis=0)  # (C + 1, n, F)
            for c, g in enumerate(self.groups):
                batch[c + 1][:, g] = self.base[g]
            flat = batch.reshape(-1, X.shape[1])
            if self.multiclass:  # predict_proba's numbers; every copy of row i: i's target
                p = np.asarray(self.im._proba(self.im.forward(flat)), dtype=np.float64)
                t = p[: len(x)].argmax(axis=1) if target is None else np.full(len(x), target)
                z = class_logodds(p, np.tile(t, C + 1)).reshape(C + 1, len(x))
                out[lo : lo + CHUNK] = (z[0] - z[1:]).T
            else:
                z = logits(self.im, flat).reshape(C + 1, len(x))
                out[lo : lo + CHUNK] = sign * (z[0] - z[1:]).T
        return out

    def top(self, contrib: np.ndarray, rows: Any, k: int) -> list[list[tuple[str, Any, float]]]:
        """Per row of ``rows`` (raw, as given to ``transform``), up to ``k`` ``(column, value,
        contribution)`` triples with contribution > 0, largest first; value is the row's raw
        value (None when missing)."""
        _check_k(k)
        values, _ = column_values(self.pre, rows)
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
        result = []
        for i, cols in enumerate(order):
            row = []
            for c in cols:
                if contrib[i, c] <= 0:
                    break
                v = values[self.names[c]][i]
                if isinstance(v, (float, np.floating)):
                    v = None if np.isnan(v) else float(v)
                row.append((self.names[c], v, float(contrib[i, c])))
            result.append(row)
        return result

    def __call__(self, rows: Any, k: int = 4, adverse: Any = None) -> list[list[tuple]]:
        _check_k(k)
        return self.top(self.matrix(self.im.transform(rows), adverse), rows, k)
