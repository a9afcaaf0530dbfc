"""``TabularModel`` on data larger than memory: ``fit(stream)`` and ``partial_fit``.

``fit(stream)`` (``stream``: :func:`lepton_nn.data.stream`, or chunks of one):

1. one pass fits the :class:`~lepton_nn.data.Preprocessor` (:mod:`lepton_nn.data.stream_fit`)
   and counts the target's classes (or its mean and spread, for regression);
2. a seeded ``validation_split`` share of the chunks is held out for early stopping;
3. the network trains on the other chunks, re-read every epoch in a shuffled order through a
   bounded shuffle buffer (:mod:`lepton_nn.train.streaming`).

Differences from the in-memory ``fit``, all for bounded memory: duplicate rows are kept; the
validation rows are whole chunks, not a stratified sample; there is no refit on all rows;
``class_weight="balanced"`` counts the classes over all rows; the monitoring profile is
built on up to ``PROFILE_ROWS`` training rows.

``partial_fit(data, y)`` trains one epoch over the rows given, continuing the network of a
fitted (or loaded) model with a new optimizer, or the network and optimizer of the previous
call (dask-ml's ``Incremental`` drives it partition by partition:
:func:`lepton_nn.distributed.fit_incremental`).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from . import optim
from .data import LabelEncoder, Preprocessor, compute_class_weight
from .data.stream import concat_tables
from .data.stream_fit import _Moments, fit_stream
from .errors import DataError
from .random import set_seed

if TYPE_CHECKING:
    from .tabular import TabularModel

PROFILE_ROWS = 20000
MAX_CLASSES = 1000  # distinct labels counted (past it, a target can only be regression)


class TargetSummary:
    """A target seen batch by batch: its distinct values and counts (up to MAX_CLASSES) and,
    for numbers, the moments (mean and spread, for regression)."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.moments = _Moments()
        self.dtype: np.dtype | None = None
        self.n = 0

    def update(self, y: Any) -> None:
        y = np.asarray(y.target if hasattr(y, "target") else y)
        if y.dtype == object or y.dtype.kind in "US":
            y = y.astype(object)
        if self.dtype is None:
            self.dtype = y.dtype
        elif y.dtype != self.dtype:
            raise DataError(f"the target's type changed from {self.dtype} to {y.dtype}")
        self.n += len(y)
        if y.dtype.kind in "iuf":
            self.moments.add(y.astype(np.float64))
        if len(self.counts) <= MAX_CLASSES:
            self.counts.update(y.tolist())

    def values(self) -> np.ndarray:
        """The distinct values seen, with the target's dtype."""
        return np.asarray(sorted(self.counts, key=str), dtype=self.dtype)


def setup(model: TabularModel, pre: Preprocessor, summary: TargetSummary) -> None:
    """Task, labels, target scale and a new network from a fitted ``pre`` and ``summary``."""
    from .tabular import _infer_task

    set_seed(model.seed)
    if model.privacy is not None:
        raise ValueError("TabularModel: privacy (DP-SGD) needs the rows in memory, not a stream")
    values = summary.values()
    task = _infer_task(values) if model.task == "auto" else model.task
    if task != "regression" and len(summary.counts) > MAX_CLASSES:
        raise DataError(f"the target has more than {MAX_CLASSES} classes")
    model._check_positive(None, values, task)
    model.task_ = task
    model.preprocessor = pre
    if task == "regression":
        m = summary.moments
        model.target_scale = (float(m.mean), float(math.sqrt(m.m2 / m.n)) or 1.0)
        model.labels = None
    else:
        positive = model.positive if task == "binary" else None
        model.labels = LabelEncoder(positive=positive).fit(values)
    n_out = len(model.labels.classes_) if task == "multiclass" else 1
    model.network = model._build(pre.n_features_out, n_out)
    model.calibration = model.profile = None
    model._class_weights = _class_weights(model, summary)
    model._partial = None


def _class_weights(model: TabularModel, summary: TargetSummary) -> np.ndarray | None:
    """Weight per class code, or None (``"balanced"``: n / (k count), over all rows)."""
    if model.class_weight is None or model.task_ == "regression":
        return None
    classes = model.labels.classes_
    if isinstance(model.class_weight, str) and model.class_weight == "balanced":
        counts = np.asarray([summary.counts[c] for c in classes.tolist()], dtype=np.float64)
        return summary.n / (len(classes) * counts)
    return compute_class_weight(classes, model.class_weight, classes)


def arrays(model: TabularModel, table: Any, y: Any = None) -> tuple:
    """Raw rows -> ``(X, target[, weights])`` as the network trains on them."""
    from .tabular import _label_locator

    y = table.target if y is None else np.asarray(y)
    X = model.preprocessor.transform(table)
    target, _ = model._encode_target(y, _label_locator(table, None))
    if model.task_ in ("binary", "regression"):
        target = target.reshape(-1, 1)
    cw = getattr(model, "_class_weights", None)
    if cw is None:
        return X, target
    return X, target, cw[target.reshape(-1).astype(np.int64)].astype(np.float32)


def fit(model: TabularModel, data: Any) -> TabularModel:
    """``TabularModel.fit(stream)``: see the module docstring."""
    from .tabular import _LOSSES
    from .train import EarlyStopping, Trainer

    pre = Preprocessor(
        missing_indicator=model.missing_indicator,
        scaling=model.scaling,
        column_types=model.column_types,
        drop=model.drop,
        non_numeric=model.non_numeric,
    )
    summary = TargetSummary()

    def visit(table: Any) -> None:
        if table.target is None:
            raise DataError(f"{table.source}: fit: the stream has no target (target=...)")
        summary.update(table)

    fit_stream(pre, data, visit)
    setup(model, pre, summary)
    mapped = data.map(lambda t: arrays(model, t))
    train, val = mapped, None
    if model.validation_split > 0 and data.n_chunks >= 2:
        train, val = mapped.split(model.validation_split, model.seed)
    callbacks = model._monotone_callbacks()
    if val is not None:
        callbacks.append(
            EarlyStopping(monitor="val_loss", patience=model.patience, restore_best_weights=True)
        )
    loss = _LOSSES[model.task_]
    opt = optim.AdamW(model.network.parameters(), lr=model.lr, weight_decay=model.weight_decay)
    hist = Trainer(model.network, loss, opt).fit(
        train, epochs=model.epochs, batch_size=model.batch_size, validation_data=val,
        callbacks=callbacks, verbose=model.verbose, seed=model.seed,
    )  # fmt: skip
    model.network.eval()
    model.history = hist.history
    # the monitoring profile of every task (a stream has no privacy)
    ids = np.asarray(getattr(train, "ids", np.arange(train.n_chunks)))
    base = data if not hasattr(train, "ids") else data.take(ids)
    sample, rows = [], 0
    for i in np.random.default_rng(model.seed).permutation(base.n_chunks):
        sample.append(base.read_chunk(int(i)))
        rows += len(sample[-1])
        if rows >= PROFILE_ROWS:
            break
    table = concat_tables(sample)
    model.profile = model._profile(table, np.arange(len(table)))
    return model


def start(model: TabularModel) -> dict:
    """The trainer ``partial_fit`` continues (after :func:`setup`)."""
    from .tabular import _LOSSES
    from .train import Trainer

    opt = optim.AdamW(model.network.parameters(), lr=model.lr, weight_decay=model.weight_decay)
    model._partial = {"trainer": Trainer(model.network, _LOSSES[model.task_], opt), "calls": 0}
    return model._partial


def partial_fit(model: TabularModel, data: Any, y: Any = None, classes: Any = None) -> Any:
    """One epoch over ``data`` (raw rows and ``y``, or a Table with its target), continuing
    the network and optimizer of earlier calls. The first call sets the model up: the
    preprocessing is fitted on these rows unless ``model.preprocessor`` is already fitted;
    the labels come from ``classes`` (all of them, as for scikit-learn's ``partial_fit``) or
    these rows."""
    if model.privacy is not None:  # more epochs would spend privacy nobody accounted for
        raise ValueError("TabularModel: partial_fit does not train under privacy (DP-SGD); use fit")
    data, y = model._split_target(data, y)
    state = getattr(model, "_partial", None)
    if state is None and model.network is not None:  # fitted (or loaded): continue it
        if getattr(model, "quantized", None):
            raise ValueError("TabularModel: partial_fit cannot train a quantized network")
        state = start(model)
    if state is None:
        pre = model.preprocessor
        if pre is None or pre.columns_ is None:
            pre = Preprocessor(
                missing_indicator=model.missing_indicator, scaling=model.scaling,
                column_types=model.column_types, drop=model.drop, non_numeric=model.non_numeric,
            ).fit(data, y)  # fmt: skip
        summary = TargetSummary()
        summary.update(y if classes is None else np.asarray(classes))
        setup(model, pre, summary)
        state = start(model)
    parts = arrays(model, model.preprocessor.as_table(data), y)
    state["trainer"].fit(
        parts[0], parts[1], epochs=1, batch_size=model.batch_size, verbose=0,
        sample_weight=parts[2] if len(parts) == 3 else None,
        callbacks=model._monotone_callbacks(), seed=model.seed + 1 + state["calls"],
    )  # fmt: skip
    state["calls"] += 1
    model.network.eval()
    return model
