"""``TabularModel``: raw table in, decisions out — the credit-scoring pipeline in one object.

It chains a fitted :class:`~lepton_nn.data.Preprocessor` (duplicates, missing values,
one-hot, scaling), a label encoder, an MLP ``Dense(h1, relu) -> Dropout -> ... -> Dense(k)``
trained with AdamW and early stopping on a validation split, and, for a binary target, a
decision threshold. ``save``/``load`` keep all of it in one ``.lnn`` file, so ``predict``
works on raw rows after loading (also in the NumPy-only runtime).

Tasks: ``binary`` (one logit, sigmoid), ``multiclass`` (k logits, softmax), ``regression``
(one output, MSE on a standardized target).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import losses, metrics, optim, tabular_file
from .autograd import no_grad
from .data import (
    LabelEncoder,
    Preprocessor,
    Table,
    compute_class_weight,
    compute_sample_weight,
    train_test_split,
)
from .data.stream import is_chunked
from .errors import DataError
from .io import register_loader
from .nn import Sequential
from .random import set_seed
from .tabular_file import MIN_CSR_SPARSITY  # noqa: F401 (importable here, as before)
from .tabular_parts import (  # noqa: F401 (importable here, as before)
    TASKS,
    _check_monotone,
    _check_stratifiable,
    _infer_task,
    _isnan,
    _label_locator,
    _plain,
    build_mlp,
    cross_validate_table,
    mlp_trainer,
)

if TYPE_CHECKING:
    from .compress.quantized_model import QuantizedModel

__all__ = ["TabularModel"]

REFIT_BELOW = 1000  # rows; below this, refit on all rows after early stopping (refit=None)
_LOSSES = {
    "binary": losses.binary_cross_entropy_with_logits,
    "multiclass": losses.cross_entropy,
    "regression": losses.mse,
}


class TabularModel:
    """An MLP for tabular data, with its preprocessing and decision rule.

    Defaults were chosen on credit-scoring and diagnosis data (see the README's quality
    figures): two small hidden layers, dropout, missing-value indicators, AdamW, and early
    stopping on a stratified 20 % validation split. With ``refit=None`` a data set of fewer
    than 1,000 rows is then trained again on all its rows for the epoch count early stopping
    chose (held-out rows are too precious there); ``refit=True``/``False`` forces it.

    ``column_types`` (``{"zip": "categorical"}``), ``drop`` (ID or leaking columns) and
    ``non_numeric`` (``"error"`` or ``"missing"`` for text in a column of numbers) go to the
    :class:`~lepton_nn.data.Preprocessor`.
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (32, 16),
        dropout: float = 0.2,
        lr: float = 3e-3,
        weight_decay: float = 1e-3,
        epochs: int = 100,
        batch_size: int = 64,
        patience: int = 10,
        validation_split: float = 0.2,
        task: str = "auto",
        positive: Any = None,
        class_weight: str | dict | None = None,
        missing_indicator: bool = True,
        scaling: str = "standard",
        threshold: float = 0.5,
        seed: int = 0,
        verbose: int = 0,
        refit: bool | None = None,
        column_types: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
        non_numeric: str = "error",
        monotone: dict[str, int] | None = None,
        privacy: Any = None,
    ):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout, self.lr, self.weight_decay = float(dropout), float(lr), float(weight_decay)
        self.epochs, self.batch_size, self.patience = int(epochs), int(batch_size), int(patience)
        self.validation_split, self.task, self.positive = float(validation_split), task, positive
        self.class_weight, self.missing_indicator = class_weight, bool(missing_indicator)
        self.scaling, self.threshold, self.seed, self.verbose = (
            scaling,
            float(threshold),
            seed,
            verbose,
        )
        self.refit = refit
        self.column_types = dict(column_types or {})
        self.drop = (drop,) if isinstance(drop, str) else tuple(drop)
        self.non_numeric = non_numeric
        self.monotone = _check_monotone(monotone)
        self.privacy = privacy  # a lepton_nn.privacy.Privacy: DP preprocessing and training
        self.privacy_card: dict | None = None
        self.preprocessor: Preprocessor | None = None
        self.labels: LabelEncoder | None = None
        self.network: Sequential | None = None
        self.target_scale: tuple[float, float] = (0.0, 1.0)
        self.history: dict | None = None
        self.metrics_card: dict = {}
        # set by compress(): the int8 form of the network (None: float), and what was done
        self.quantized: QuantizedModel | None = None
        self.compression: dict | None = None
        # lepton_nn.risk: the model card (risk/card.py format), a calibration map
        # (runtime/calibration.py), the training profile for monitoring and reason codes
        self.card: dict | None = None
        self.calibration: dict | None = None
        self.profile: dict | None = None

    def get_params(self) -> dict:
        keys = (
            "hidden",
            "dropout",
            "lr",
            "weight_decay",
            "epochs",
            "batch_size",
            "patience",
            "validation_split",
            "task",
            "positive",
            "class_weight",
            "missing_indicator",
            "scaling",
            "threshold",
            "seed",
            "refit",
            "column_types",
            "drop",
            "non_numeric",
            "monotone",
        )
        return {k: getattr(self, k) for k in keys}

    # -- fitting ---------------------------------------------------------------------------
    def _split_target(self, data: Any, y: Any) -> tuple[Any, np.ndarray]:
        if y is None:
            if not isinstance(data, Table) or data.target is None:
                raise DataError("fit: give y, or a Table read with target=...")
            y = data.target
        return data, np.asarray(y)

    def fit(self, data: Any, y: Any = None) -> TabularModel:
        """Fit preprocessing, labels and network on raw rows (a Table or columns) and ``y``,
        or on a :func:`lepton_nn.data.stream` (bounded memory: :mod:`lepton_nn.tabular_stream`)."""
        if is_chunked(data):
            from .tabular_stream import fit

            return fit(self, data)
        data, y = self._split_target(data, y)
        set_seed(self.seed)
        task = _infer_task(y) if self.task == "auto" else self.task
        self._check_positive(data, y, task)
        self.task_ = task
        self.preprocessor = Preprocessor(
            missing_indicator=self.missing_indicator,
            scaling=self.scaling,
            column_types=self.column_types,
            drop=self.drop,
            non_numeric=self.non_numeric,
        )
        X, keep = self._fit_preprocessor(data, y)
        y = y[keep]
        where = _label_locator(data, keep)
        if task == "regression" and self.privacy is not None:  # the mean and spread leak
            self.target_scale = self.privacy.target_scale()
            self.labels = None
        elif task == "regression":
            t = y.astype(np.float64)
            self.target_scale = (float(t.mean()), float(t.std() or 1.0))
            self.labels = None
        else:
            positive = self.positive if task == "binary" else None
            self.labels = LabelEncoder(positive=positive).fit(y, where)
            if self.validation_split > 0 and len(X) >= 20:
                _check_stratifiable(y, where)
        target, loss = self._encode_target(y, where)
        n_out = len(self.labels.classes_) if task == "multiclass" else 1
        self.network = self._build(X.shape[1], n_out)
        self.history = self._train(X, target, loss, task)
        self.calibration = None
        # the profile (every column's training deciles, the approved rows' medians) is exact
        # statistics of the training rows: not written under privacy (docs/privacy.md)
        self.profile = self._profile(data, keep) if self.privacy is None else None
        # partial_fit continues this network (with a new optimizer), as after fit(stream)
        self._partial = None
        self._class_weights = None
        if self.class_weight is not None and task != "regression":
            self._class_weights = compute_class_weight(y, self.class_weight, self.labels.classes_)
        return self

    def partial_fit(self, data: Any, y: Any = None, classes: Any = None) -> TabularModel:
        """One more epoch over these rows, continuing the network (after ``fit``, too) and
        the optimizer of earlier calls (see :func:`lepton_nn.tabular_stream.partial_fit`)."""
        from .tabular_stream import partial_fit

        return partial_fit(self, data, y, classes)

    def _profile(self, data: Any, keep: np.ndarray) -> dict:
        """Training bins of the score and every column, and the approved rows' baseline
        (:mod:`lepton_nn.runtime.profile`), for monitoring and reason codes."""
        from .runtime.profile import build_profile, task_scores

        table = self.preprocessor.as_table(data).take(keep)
        z = self.decision_function(table).astype(np.float64)
        pre = self.preprocessor._compiled()
        if self.task_ != "binary":  # multiclass: class probabilities; regression: predictions
            score, scores = task_scores(self.task_, z, self.target_scale)
            return build_profile(pre, table, score, None, task=self.task_, scores=scores)
        approved = 1.0 / (1.0 + np.exp(-z)) < self.threshold
        return build_profile(pre, table, z, approved)

    def _check_positive(self, data: Any, y: np.ndarray, task: str) -> None:
        """``positive=`` names a class of a two-class target; anything else is refused."""
        if self.positive is None:
            return
        where = "fit"
        if isinstance(data, Table):
            where = f"{data.source or 'table'}: column {data.target_name!r}"
        classes = np.unique(y.astype(str))
        shown = classes[:10].tolist() + (["..."] if len(classes) > 10 else [])
        if task == "binary":
            if str(self.positive) not in classes:
                raise DataError(
                    f"{where}: positive={self.positive!r} is not one of the labels {shown}"
                )
            return
        raise DataError(
            f"{where}: positive={self.positive!r} is for a target of two classes, but the "
            f"target is {task} ({len(classes)} distinct values: {shown}); drop positive= or "
            f"fix the target"
        )

    def _encode_target(self, y: np.ndarray, where: Any = None) -> tuple[np.ndarray, Any]:
        """Raw targets -> what the network is trained on (1-D), and the loss for it."""
        loss = _LOSSES[self.task_]
        if self.task_ == "regression":
            mu, sd = self.target_scale
            return ((y.astype(np.float64) - mu) / sd).astype(np.float32), loss
        codes = self.labels.transform(y, where)
        return (codes.astype(np.float32) if self.task_ == "binary" else codes), loss

    def _fit_preprocessor(self, data: Any, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        table = self.preprocessor.as_table(data)  # declared types, dropped columns
        self.preprocessor.fit_table(table, y)
        keep = self.preprocessor.kept_index_
        if self.privacy is not None:  # every statistic replaced by a public or DP one
            self.privacy.privatize_preprocessor(self.preprocessor, table, keep, self.seed)
        return self.preprocessor.transform(table.take(keep)), keep

    def _build(self, n_in: int, n_out: int) -> Sequential:
        return build_mlp(n_in, n_out, self.hidden, self.dropout, name="tabular_mlp")

    def _train(self, X: np.ndarray, target: np.ndarray, loss, task: str) -> dict:
        from .train import EarlyStopping, Trainer

        if self.privacy is not None:
            return self._train_private(X, target, loss, task)

        strat = target if task != "regression" else None
        if self.validation_split > 0 and len(X) >= 20:
            X_tr, X_va, t_tr, t_va = train_test_split(
                X, target, test_size=self.validation_split, stratify=strat, seed=self.seed
            )
            validation = (X_va, t_va[:, None] if task == "binary" else t_va)
        else:
            X_tr, t_tr, validation = X, target, None
        weights = None
        if self.class_weight is not None and task != "regression":
            weights = compute_sample_weight(t_tr.astype(np.int64), self.class_weight)
        if task in ("binary", "regression"):
            t_tr = t_tr.reshape(-1, 1)
        opt = optim.AdamW(self.network.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        trainer = Trainer(self.network, loss, opt)
        callbacks = self._monotone_callbacks()
        if validation is not None:
            stopper = EarlyStopping(
                monitor="val_loss", patience=self.patience, restore_best_weights=True
            )
            callbacks.append(stopper)
        hist = trainer.fit(
            X_tr,
            t_tr,
            epochs=self.epochs,
            batch_size=self.batch_size,
            validation_data=validation,
            callbacks=callbacks,
            sample_weight=weights,
            verbose=self.verbose,
            seed=self.seed,
        )
        refit = len(X) < REFIT_BELOW if self.refit is None else self.refit
        if refit and validation is not None:
            # train again on every row, for the number of epochs early stopping chose
            self.network = self._build(X.shape[1], self.network.layers[-1].units)
            t_all = target.reshape(-1, 1) if task in ("binary", "regression") else target
            w_all = None
            if self.class_weight is not None and task != "regression":
                w_all = compute_sample_weight(target.astype(np.int64), self.class_weight)
            opt = optim.AdamW(self.network.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            Trainer(self.network, loss, opt).fit(
                X,
                t_all,
                epochs=stopper.best_epoch + 1,
                callbacks=self._monotone_callbacks(),
                batch_size=self.batch_size,
                sample_weight=w_all,
                verbose=self.verbose,
                seed=self.seed,
            )
        self.network.eval()
        return hist.history

    def _monotone_inputs(self) -> dict[int, int]:
        """Network input index -> +1/-1 for each ``monotone`` column (numeric only)."""
        pre = self.preprocessor._compiled()
        out = {}
        for name, sign in self.monotone.items():
            if name not in pre.numeric_names:
                kind = "not a column" if name not in pre.names else "categorical"
                raise DataError(f"monotone: column {name!r} is {kind}; give numeric columns")
            out[int(pre.numeric_cols[pre.numeric_names.index(name)])] = sign
        return out

    def _monotone_callbacks(self, network: Any = None) -> list:
        """The projection keeping ``network`` (default: this model's) monotone, if asked."""
        if not self.monotone:
            return []
        if self.task_ == "multiclass":
            raise DataError("monotone: constraints are for binary and regression models")
        from .monotone import MonotoneProjection

        net = self.network if network is None else network
        return [MonotoneProjection(net, self._monotone_inputs())]

    def monotone_violations(self, data: Any, rows: int = 200, points: int = 21) -> dict:
        """Per constrained column, how many of (up to ``rows``) rows of ``data`` see the score
        move against the constraint as the column steps through ``points`` values spanning
        the training range (:func:`lepton_nn.monotone.grid_violations`); 0 is the promise."""
        from .monotone import grid_violations

        X = self.transform(data)[:rows]
        pre = self.preprocessor._compiled()

        def score(x):
            if self.quantized is not None:
                return self.quantized.predict(x)[:, 0]
            with no_grad():
                return self.network(x).data[:, 0]

        out = {}
        for j, sign in self._monotone_inputs().items():
            k = list(pre.numeric_cols).index(j)
            lo, hi = -3.0, 3.0  # scaled units: the bulk of the training range
            if self.profile is not None:
                edges = self.profile["columns"][pre.names.index(pre.numeric_names[k])]["edges"]
                if edges:
                    scaled = (np.asarray(edges) - pre.center[k]) / pre.scale[k]
                    lo, hi = min(lo, scaled.min() - 1), max(hi, scaled.max() + 1)
            grid = np.linspace(lo, hi, points)
            out[pre.numeric_names[k]] = grid_violations(score, X, j, sign, grid)
        return out

    def _train_private(self, X: np.ndarray, target: np.ndarray, loss, task: str) -> dict:
        """DP-SGD on every row for ``epochs`` passes: no validation split, early stopping or
        refit (choosing the epoch on held-out rows would spend budget the accountant does
        not see), no class weights (they change each record's sensitivity)."""
        from .train import Trainer

        if self.class_weight is not None:
            raise ValueError("TabularModel: class_weight does not go with privacy")
        t = target.reshape(-1, 1) if task in ("binary", "regression") else target
        opt = optim.AdamW(self.network.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        trainer = Trainer(self.network, loss, opt)
        hist = trainer.fit(
            X, t, epochs=self.epochs, batch_size=self.batch_size, verbose=self.verbose,
            seed=self.seed, privacy=self.privacy,
        )  # fmt: skip
        self.privacy_card = trainer.privacy_report
        if task == "regression":
            b = self.privacy.target_bounds
            how = "not scaled" if b is None else f"public bounds [{b[0]:g}, {b[1]:g}]"
            self.privacy_card["target_scaling"] = how
        self.network.eval()
        return hist.history

    # -- predicting --------------------------------------------------------------------------
    def _check(self) -> None:
        if self.network is None:
            raise DataError("this TabularModel is not fitted yet: call fit() first")

    def transform(self, data: Any) -> np.ndarray:
        """Raw rows -> the float32 feature matrix the network sees."""
        self._check()
        return self.preprocessor.transform(data)

    def decision_function(self, data: Any) -> np.ndarray:
        """Network outputs (logits; standardized predictions for regression)."""
        X = self.transform(data)
        self.network.eval()
        if self.quantized is not None:
            out = self.quantized.predict(X)
        else:
            with no_grad():
                out = self.network(X).data
        return out[:, 0] if out.shape[1] == 1 else out

    def predict_proba(self, data: Any) -> np.ndarray:
        """Class probabilities (N, n_classes), columns in ``classes_`` order."""
        z = self.decision_function(data)
        if self.task_ == "regression":
            raise DataError("predict_proba is for classification; use predict")
        if self.calibration is not None:  # lepton_nn.risk.calibrate; the runtime does the same
            p = self._calibration_map().apply(z)
            return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p
        if self.task_ == "binary":
            p = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
            return np.stack([1 - p, p], axis=1)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def _calibration_map(self):
        """The checked map of ``self.calibration`` (parsed once per calibration dict)."""
        from .runtime.calibration import parse_calibration

        cached = getattr(self, "_calibration_cache", None)
        if cached is None or cached[0] is not self.calibration:
            cached = (self.calibration, parse_calibration(self.calibration, self.task_))
            self._calibration_cache = cached
        return cached[1]

    def predict(self, data: Any) -> np.ndarray:
        """Labels (binary: positive when P(positive) >= threshold), or values for regression."""
        if self.task_ == "regression":
            mu, sd = self.target_scale
            return self.decision_function(data).astype(np.float64) * sd + mu
        proba = self.predict_proba(data)
        if self.task_ == "binary":
            codes = (proba[:, 1] >= self.threshold).astype(np.int64)
        else:
            codes = proba.argmax(axis=1)
        return self.labels.inverse_transform(codes)

    @property
    def input_kinds(self) -> dict[str, str]:
        """``{raw column: "numeric" | "categorical"}`` as fitted: read new rows with
        ``read_csv(path, column_types=model.input_kinds)`` so they are typed as in training."""
        self._check()
        return {s["name"]: s["kind"] for s in self.preprocessor.columns_}

    @property
    def classes_(self) -> np.ndarray | None:
        return None if self.labels is None else self.labels.classes_

    def evaluate(self, data: Any, y: Any = None) -> dict:
        """Metrics on labelled rows: the binary report (accuracy, precision, recall, F1,
        ROC-AUC, PR-AUC, KS, log loss, confusion matrix), accuracy/F1 for multiclass, or
        MSE/MAE/R^2 for regression."""
        data, y = self._split_target(data, y)
        if self.task_ == "regression":
            pred = self.predict(data)
            t = y.astype(np.float64)
            return {
                "n": len(t),
                "mse": metrics.mse(t, pred),
                "mae": metrics.mae(t, pred),
                "r2": metrics.r2(t, pred),
            }
        codes = self.labels.transform(y, _label_locator(data, None))
        proba = self.predict_proba(data)
        if self.task_ == "binary":
            report = metrics.binary_report(
                codes, proba[:, 1], threshold=self.threshold, pos_label=1
            )
            report["positive"] = _plain(self.labels.positive_)
            report.update(metrics.calibration_report(codes, proba[:, 1]))
            if self.monotone:
                report["monotone_violations"] = self.monotone_violations(data)
            return report
        pred = proba.argmax(axis=1)
        return {
            "n": len(codes),
            "accuracy": metrics.accuracy(codes, pred),
            "f1_macro": metrics.f1(codes, pred, average="macro"),
            "log_loss": metrics.log_loss(codes, proba, labels=list(range(proba.shape[1]))),
            "confusion_matrix": metrics.confusion_matrix(codes, pred).tolist(),
        }

    # -- compression ---------------------------------------------------------------------------
    def compress(
        self,
        data: Any = None,
        y: Any = None,
        *,
        prune: float = 0.0,
        structured: bool = False,
        fine_tune_epochs: int = 0,
        quantize: str | None = None,
        calibration_rows: int = 2048,
        max_accuracy_drop: float | None = None,
        scope: str = "layer",
    ) -> TabularModel:
        """A pruned and/or int8 copy of this model (this one is not changed).

        prune: fraction of the Dense weights to remove by magnitude (``structured=True``:
            whole hidden units by L1 norm, then removed for real by ``compact``, so the
            network itself gets narrower). With ``fine_tune_epochs > 0`` and labelled
            ``data``, pruning is gradual (Zhu & Gupta's polynomial schedule reaching
            ``prune`` after 2/3 of the epochs) while the network keeps training on ``data``
            (:class:`~lepton_nn.compress.PruningCallback` in the Trainer); else one shot.
        quantize: ``"dynamic"`` or ``"static"`` int8 (static activation ranges calibrated on
            up to ``calibration_rows`` rows of ``data``); None keeps float weights.
        max_accuracy_drop: with ``quantize`` and labelled ``data``, layers go back to float
            (worst first) until int8 costs at most this much accuracy on ``data``.

        ``data``/``y``: raw rows (as for :meth:`fit`) used for fine-tuning, calibration and
        the budget. The copy predicts with the int8 kernels the runtime uses; ``save`` writes
        one ``kind: "tabular"`` file whose network carries a ``compression`` section.
        """
        from .tabular_compress import compress_tabular

        return compress_tabular(
            self, data, y, prune=prune, structured=structured, fine_tune_epochs=fine_tune_epochs,
            quantize=quantize, calibration_rows=calibration_rows,
            max_accuracy_drop=max_accuracy_drop, scope=scope,
        )  # fmt: skip

    def _codes(self, target: np.ndarray) -> np.ndarray:
        return target if self.task_ == "regression" else target.astype(np.int64)

    def _output_accuracy(self, codes: np.ndarray, out: np.ndarray) -> float:
        """Accuracy of network outputs under this model's decision rule (the int8 budget)."""
        out = out.reshape(out.shape[0], -1)
        if self.task_ == "binary":
            p = 1.0 / (1.0 + np.exp(-out[:, 0].astype(np.float64)))
            pred = (p >= self.threshold).astype(np.int64)
        elif self.task_ == "multiclass":
            pred = out.argmax(axis=1)
        else:  # regression: higher is better, so the negative mean squared error
            return -float(np.mean((out[:, 0] - codes) ** 2))
        return float(np.mean(pred == codes))

    # -- the model file (tabular_file.py) --------------------------------------------------------
    def to_lnn(self) -> tuple[dict, dict[str, np.ndarray]]:
        return tabular_file.to_lnn(self)

    @classmethod
    def from_lnn(cls, manifest: dict, arrays: dict) -> TabularModel:
        return tabular_file.from_lnn(cls, manifest, arrays)


register_loader("tabular", TabularModel.from_lnn)
