"""The pieces of :class:`~lepton_nn.tabular.TabularModel` that are not the model itself: the
task inferred from a target, checks of its arguments and labels, the MLP it builds, and the
k-fold cross-validation and tuning ``build_fn`` over it. Every name is importable from
:mod:`lepton_nn.tabular` too."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import losses, optim
from .data import Table
from .errors import DataError
from .nn import Dense, Dropout, Sequential

TASKS = ("auto", "binary", "multiclass", "regression")


def _infer_task(y: np.ndarray) -> str:
    values = np.unique(y[~_isnan(y)]) if y.dtype.kind == "f" else np.unique(y.astype(str))
    if y.dtype.kind == "f" and (len(values) > 20 or not np.all(values == np.round(values))):
        return "regression"
    if len(values) < 2:
        raise DataError(f"the target has a single class ({values[0] if len(values) else None!r})")
    return "binary" if len(values) == 2 else "multiclass"


def _isnan(y: np.ndarray) -> np.ndarray:
    return np.isnan(y) if y.dtype.kind == "f" else np.zeros(len(y), bool)


def _check_monotone(monotone: Any) -> dict[str, int]:
    """``{"column": +1 | -1}``: +1 the score only rises with the column, -1 only falls."""
    out = {}
    for name, sign in dict(monotone or {}).items():
        if isinstance(sign, bool) or sign not in (1, -1):
            raise ValueError(f"monotone[{name!r}] must be +1 (rises) or -1 (falls), got {sign!r}")
        out[str(name)] = int(sign)
    return out


def _label_locator(data: Any, keep: np.ndarray | None) -> Any:
    """``where(i)`` for the i-th (kept) label: the file row and target column of a Table."""
    if not isinstance(data, Table):
        return None
    name = data.target_name

    def where(i: int) -> str:
        return f"{data.where(int(i if keep is None else keep[i]))}, column {name!r}"

    return where


def _check_stratifiable(y: np.ndarray, where: Any) -> None:
    """Each class needs two rows to appear on both sides of the stratified validation split."""
    classes, first, counts = np.unique(y.astype(str), return_index=True, return_counts=True)
    if counts.min() < 2:
        k = int(np.argmin(counts))
        at = where(int(first[k])) if where else f"row index {int(first[k])}"
        raise DataError(
            f"{at}: class {str(classes[k])!r} has only 1 row; the validation split needs at "
            f"least 2 per class (fix the label, drop the row, or set validation_split=0)"
        )


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    return v


def build_mlp(
    n_in: int, n_out: int, hidden: tuple[int, ...], dropout: float, name: str | None = None
) -> Sequential:
    """The tabular network, built: x (N, n_in) -> [Dense(h, relu) -> Dropout]* -> Dense(n_out)."""
    layers: list = []
    for h in hidden:
        layers.append(Dense(int(h), "relu"))
        if dropout:
            layers.append(Dropout(dropout))
    layers.append(Dense(n_out))
    net = Sequential(layers, name=name)
    net.build((None, n_in))
    return net


def cross_validate_table(table, k: int, seed: int, **model_kwargs) -> dict[str, list[float]]:
    """k-fold CV of a TabularModel on a raw table (preprocessing fit per fold; folds
    stratified by class, plain for a regression target).

    Returns, per metric of :meth:`TabularModel.evaluate`, the list of fold scores.
    """
    from .data import KFold, StratifiedKFold
    from .tabular import TabularModel

    y = np.asarray(table.target)
    scores: dict[str, list[float]] = {}
    task = model_kwargs.get("task", "auto")
    regression = (_infer_task(y) if task == "auto" else task) == "regression"
    splitter = (KFold if regression else StratifiedKFold)(n_splits=k, shuffle=True, seed=seed)
    for fold, (tr, te) in enumerate(splitter.split(np.zeros(len(y)), y.astype(str))):
        model = TabularModel(**{**model_kwargs, "seed": seed + fold}).fit(table.take(tr))
        for key, v in model.evaluate(table.take(te)).items():
            if isinstance(v, float):
                scores.setdefault(key, []).append(v)
    return scores


def mlp_trainer(
    n_in: int,
    n_out: int = 1,
    hidden: tuple[int, ...] = (32, 16),
    dropout: float = 0.2,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
):
    """``build_fn`` for :mod:`lepton_nn.tuning` searches over the TabularModel's network.

    Module level so that process pools can pickle it. ``n_out`` 1 means a binary target
    (BCE on one logit); more means softmax cross-entropy.
    """
    from .train import Trainer

    net = build_mlp(n_in, n_out, hidden, dropout)
    opt = optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    loss = losses.binary_cross_entropy_with_logits if n_out == 1 else losses.cross_entropy
    return Trainer(net, loss, opt)
