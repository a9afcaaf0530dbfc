"""What the four estimators share: the network, the training loop, the model file, pickling.

Training (``fit``, ``partial_fit``, ``warm_start``) runs lepton_nn's own
:class:`~lepton_nn.train.Trainer` on an MLP ``x (N, F) -> [Dense(h, act) -> Dropout]* ->
Dense(k)`` (k = 1 logit for two classes, C logits for C classes, 1 output for regression):

- loss: BCE on the logit / softmax cross-entropy / MSE on the standardized target, each a
  sample-weighted mean (weights ``w_i = sample_weight_i * class_weight_{y_i}`` rescaled to
  mean 1, so a weight of 2 counts as a repeated row);
- optimizer ``optimizer`` (adam, adamw, sgd, rmsprop) with ``lr = learning_rate_init`` and
  ``weight_decay = alpha`` (the gradient of an L2 penalty ``alpha/2 ||theta||^2`` on every
  parameter, biases included, added to each batch's; the decoupled decay for adamw);
- stopping as scikit-learn's MLP: after ``n_iter_no_change`` epochs whose training loss (or,
  with ``early_stopping``, the loss on a held-out ``validation_fraction`` of the rows, whose best
  weights are then kept) did not improve by ``tol``; ``ConvergenceWarning`` at ``max_iter``.

A fitted estimator *is* a tabular model file: :meth:`to_lnn` writes the manifest of kind
``"tabular"`` that :class:`~lepton_nn.tabular.TabularModel` writes (network, preprocessing,
labels, target scale), so ``lepton_nn.save(est, path)`` gives a file that the NumPy runtime,
the CLI and the server run as they are, plus an ``"estimator"`` section (class, parameters,
fitted attributes) from which :func:`load` rebuilds the estimator. Pickling (and joblib, and
the process pools of ``GridSearchCV(n_jobs=...)``) carries that file's bytes: the network is
never pickled.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..autograd import no_grad
from ..errors import ModelFormatError
from ..nn import Dense, Dropout, Sequential
from ..random import set_seed
from ..train import EarlyStopping, Trainer
from ..train.trainer import OPTIMIZERS
from ._compat import check_sample_weight

__all__ = ["NeuralEstimator", "load", "ESTIMATORS"]

#: scikit-learn's activation names -> lepton_nn's (any lepton_nn Dense activation also works)
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_EVAL_BATCH = 4096
#: every estimator class by name: the only classes :func:`load` will build
ESTIMATORS: dict[str, type] = {}


def _seed_from(random_state: Any) -> int:
    """An int seed for lepton_nn's stream from an int, a RandomState or None (fresh)."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


class NeuralEstimator(BaseEstimator):
    """Shared machinery; subclasses define ``__init__`` (their parameters), the input
    handling (``_fit_features`` / ``_features``) and the target handling."""

    _task: str = "regression"  # "classification" in ClassifierNet

    # -- hyper-parameters -------------------------------------------------------------------
    def _check_params(self) -> None:
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if np.isscalar(sizes) else tuple(sizes)
        if not all(isinstance(h, (int, np.integer)) and h > 0 for h in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive ints, got {sizes!r}")
        if self.max_iter is None or self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.learning_rate_init > 0:
            raise ValueError(f"learning_rate_init must be > 0, got {self.learning_rate_init!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        if self.batch_size != "auto" and not (
            isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1
        ):
            raise ValueError(f"batch_size must be 'auto' or an int >= 1, got {self.batch_size!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction}"
            )
        if self.n_iter_no_change < 1:
            raise ValueError(f"n_iter_no_change must be >= 1, got {self.n_iter_no_change}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        self._act = _ACTIVATIONS.get(self.activation, self.activation)
        self._sizes = tuple(int(h) for h in sizes)

    def _build(self, n_in: int, n_out: int) -> Sequential:
        layers: list = []
        for h in self._sizes:
            layers.append(Dense(h, self._act))
            if self.dropout:
                layers.append(Dropout(float(self.dropout)))
        layers.append(Dense(n_out))
        net = Sequential(layers, name=type(self).__name__)
        net.build((None, n_in))
        return net.astype(self.dtype) if self.dtype != "float32" else net

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, sample_weight: Any = None):
        """Train on ``X`` (N, F) and ``y`` (N,); with ``warm_start``, from the current weights."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fitted(self) -> bool:
        return hasattr(self, "network_")

    def _fit(self, X, y, sample_weight, incremental: bool, classes: Any = None):
        self._check_params()
        go_on = (incremental or self.warm_start) and self._fitted()
        Xf, y = self._fit_features(X, y, reset=not go_on, sample_weight=sample_weight)
        w = self._row_weights(y, sample_weight, len(Xf))
        target = self._fit_target(y, w, reset=not go_on, classes=classes)
        if not go_on:
            self._seed = _seed_from(self.random_state)
            set_seed(self._seed)
            self.network_ = self._build(Xf.shape[1], self._n_outputs())
            self._optimizer = None
            self.n_iter_, self.loss_curve_ = 0, []
        else:  # a fresh but repeatable stream for each continuation
            set_seed(self._seed + 7919 * (self.n_iter_ + 1))
        if getattr(self, "_optimizer", None) is None:
            cls = OPTIMIZERS[self.optimizer]
            self._optimizer = cls(
                self.network_.parameters(),
                lr=float(self.learning_rate_init),
                weight_decay=float(self.alpha),
            )
        self._optimizer.lr = float(self.learning_rate_init)  # a warm start may change it
        self._train(
            Xf, target, w, epochs=1 if incremental else int(self.max_iter), incremental=incremental
        )
        return self

    def _row_weights(self, y: np.ndarray, sample_weight: Any, n: int) -> np.ndarray | None:
        w = None if sample_weight is None else check_sample_weight(sample_weight, n)
        cw = self._class_weights(y)
        if cw is not None:
            w = cw if w is None else w * cw
        if w is None:
            return None
        if not np.any(w > 0):
            raise ValueError("Sample weights must contain at least one non-zero number")
        return w * (len(w) / w.sum())  # mean 1: weight 2 == a repeated row

    def _class_weights(self, y: np.ndarray) -> np.ndarray | None:
        return None

    def _train(self, X, target, w, epochs: int, incremental: bool) -> None:
        n = len(X)
        batch = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        validation = None
        callbacks: list = []
        if self.early_stopping and not incremental:
            tr, va = self._validation_split(target)
            validation = (X[va], target[va], None if w is None else w[va])
            X, target = X[tr], target[tr]
            w = None if w is None else w[tr]
        if not incremental:
            stop = EarlyStopping(
                monitor="val_loss" if validation is not None else "loss",
                min_delta=float(self.tol),
                patience=int(self.n_iter_no_change),
                restore_best_weights=validation is not None,
            )
            callbacks.append(stop)
        trainer = Trainer(self.network_, self._loss(), self._optimizer)
        hist = trainer.fit(
            X,
            target,
            epochs=epochs,
            batch_size=batch,
            validation_data=validation,
            callbacks=callbacks,
            sample_weight=w,
            shuffle=bool(self.shuffle),
            verbose=int(self.verbose),
        )
        self.network_.eval()
        ran = len(hist.history.get("loss", []))
        self.n_iter_ += ran
        self.loss_curve_ = list(self.loss_curve_) + [float(v) for v in hist.history.get("loss", [])]
        if validation is not None:
            self.validation_scores_ = [-float(v) for v in hist.history.get("val_loss", [])]
        if not incremental and callbacks and callbacks[0].stopped_epoch < 0 and ran == epochs:
            warnings.warn(
                f"{type(self).__name__}: maximum iterations ({epochs}) reached and the "
                "optimization has not converged yet.",
                ConvergenceWarning,
                stacklevel=4,
            )

    def _validation_split(self, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(len(target))
        strat = None
        if self._task == "classification":
            codes = target.reshape(len(target), -1)[:, 0]
            counts = np.unique(codes, return_counts=True)[1]
            n_val = int(np.ceil(self.validation_fraction * len(target)))
            if counts.min() >= 2 and n_val >= len(counts):
                strat = codes
        return train_test_split(
            idx, test_size=self.validation_fraction, random_state=self._seed, stratify=strat
        )

    # -- predicting ---------------------------------------------------------------------------
    def _outputs(self, X: Any) -> np.ndarray:
        """Network outputs (N, k) as float64, in eval mode, without a graph."""
        check_is_fitted(self, "network_")
        net = self.network_
        Xf = np.ascontiguousarray(self._features(X), dtype=net.dtype)
        net.eval()
        with no_grad():
            parts = [net(Xf[i : i + _EVAL_BATCH]).data for i in range(0, len(Xf), _EVAL_BATCH)]
        out = np.concatenate(parts) if parts else np.zeros((0, self._n_outputs()), np.float32)
        return out.astype(np.float64)

    # -- the model file ---------------------------------------------------------------------
    def _tabular_model(self):
        """This estimator as a fitted TabularModel (shares the network; nothing is copied)."""
        from ..tabular import TabularModel

        check_is_fitted(self, "network_")
        tm = TabularModel(
            hidden=self._sizes,
            dropout=float(self.dropout),
            lr=float(self.learning_rate_init),
            weight_decay=float(self.alpha),
            epochs=int(self.max_iter),
            seed=int(self._seed),
        )
        tm.network = self.network_
        tm.preprocessor = self._file_preprocessor()
        self._fill_tabular(tm)
        return tm

    def to_lnn(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The manifest (kind ``"tabular"`` plus an ``"estimator"`` section) and arrays."""
        manifest, arrays = self._tabular_model().to_lnn()
        manifest["estimator"] = {
            "class": type(self).__name__,
            "params": _json_params(self.get_params(deep=False)),
            "fitted": self._fitted_state(),
        }
        return manifest, arrays

    def _fitted_state(self) -> dict:
        state = {
            "n_features_in_": int(self.n_features_in_),
            "n_iter_": int(self.n_iter_),
            "loss_curve_": [float(v) for v in self.loss_curve_],
            "seed": int(self._seed),
        }
        if hasattr(self, "feature_names_in_"):
            state["feature_names_in_"] = [str(c) for c in self.feature_names_in_]
        if hasattr(self, "validation_scores_"):
            state["validation_scores_"] = [float(v) for v in self.validation_scores_]
        return state

    def _restore(self, manifest: dict, arrays: dict) -> None:
        """Set the fitted attributes from a file written by :meth:`to_lnn`."""
        from ..tabular import TabularModel

        tm = TabularModel.from_lnn(manifest, arrays)
        state = manifest["estimator"]["fitted"]
        self._check_params()
        self.network_ = tm.network
        self.n_features_in_ = _int(state["n_features_in_"], "n_features_in_")
        self.n_iter_ = _int(state["n_iter_"], "n_iter_")
        self.loss_curve_ = [float(v) for v in state["loss_curve_"]]
        self._seed = _int(state["seed"], "seed")
        self._optimizer = None  # optimizer moments are not saved: a new one on the next fit
        if "feature_names_in_" in state:
            self.feature_names_in_ = np.asarray(
                [str(c) for c in state["feature_names_in_"]], object
            )
        if "validation_scores_" in state:
            self.validation_scores_ = [float(v) for v in state["validation_scores_"]]
        self._restore_tabular(tm, state)
        self._restore_input(tm)

    def _to_bytes(self) -> bytes:
        from ..io import save

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "estimator.lnn")
            save(self, path)
            with open(path, "rb") as f:
                return f.read()

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        fitted = self._fitted()
        keep = {
            k: v for k, v in state.items() if k in self._param_names() or k == "_sklearn_version"
        }
        if fitted:
            keep["_lnn"] = self._to_bytes()
        return keep

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        blob = state.pop("_lnn", None)
        super().__setstate__(state)
        if blob is not None:
            from ..runtime.format import read_lnn

            self._restore(*read_lnn(blob))

    @classmethod
    def _param_names(cls) -> list[str]:
        return cls._get_param_names()


def _int(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ModelFormatError(f"estimator section: bad {what} {v!r}")
    return v


def _json_params(params: dict) -> dict:
    """Parameters as JSON values: tuples -> lists, a class_weight dict -> [label, w] pairs,
    a RandomState -> None (the seed actually used is stored with the fitted state)."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, tuple):
            v = [_plain(x) for x in v]
        elif isinstance(v, dict):
            v = {"pairs": [[_plain(a), float(b)] for a, b in v.items()]}
        elif isinstance(v, (list, np.ndarray)):
            v = [_plain(x) for x in v]
        elif not (v is None or isinstance(v, (str, bool, int, float, np.generic))):
            v = None
        out[k] = _plain(v)
    return out


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _params_from_json(cls: type, params: Any) -> dict:
    if not isinstance(params, dict):
        raise ModelFormatError("estimator section: params must be an object")
    known = set(cls._get_param_names())
    out: dict[str, Any] = {}
    for k, v in params.items():
        if k not in known:
            raise ModelFormatError(f"estimator section: unknown parameter {k!r}")
        if isinstance(v, dict) and "pairs" in v:
            v = {a: float(b) for a, b in v["pairs"]}
        elif k == "hidden_layer_sizes" and isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return out


def load(source: str | os.PathLike[str] | bytes | io.IOBase) -> NeuralEstimator:
    """Rebuild a fitted estimator from a file written by ``lepton_nn.save(estimator, path)``.

    (``lepton_nn.load`` on the same file gives the equivalent
    :class:`~lepton_nn.tabular.TabularModel`, as the runtime and the CLI read it.)
    """
    from ..runtime.format import read_lnn

    manifest, arrays = read_lnn(source)
    section = manifest.get("estimator")
    if not isinstance(section, dict) or not isinstance(section.get("fitted"), dict):
        raise ModelFormatError("this file holds no scikit-learn estimator section")
    cls = ESTIMATORS.get(section.get("class"))
    if cls is None:
        raise ModelFormatError(f"unknown estimator class {section.get('class')!r}")
    est = cls(**_params_from_json(cls, section.get("params")))
    try:
        est._restore(manifest, arrays)
    except ModelFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFormatError(f"estimator section: {exc}") from exc
    return est
