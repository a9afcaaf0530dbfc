"""Inputs: numeric arrays (the MLP estimators) or raw mixed tables (the Tabular ones).

``ArrayInput``: ``X`` is validated by scikit-learn (numeric, finite, 2-D) and fed to the
network as float32. ``TableInput``: ``X`` is a DataFrame or any 2-D array-like, possibly with
text and missing values; a :class:`~lepton_nn.data.Preprocessor` fitted on the training rows
(median / most-frequent imputation, missing-value indicators, one-hot, scaling: the
preprocessing of :class:`~lepton_nn.tabular.TabularModel`) turns it into the network's input.
Columns are matched by position (as scikit-learn does), named by ``feature_names_in_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_array, check_consistent_length, column_or_1d

from ..data import Preprocessor, Table
from ..runtime.preprocess import CONFIG_FORMAT, CONFIG_VERSION, is_frame
from ._compat import NEW_TAGS, check_sample_weight, validate_data

_FLOATS = (np.float64, np.float32)


class ArrayInput:
    """Numeric 2-D arrays in (NaN and inf are errors)."""

    def _fit_features(
        self, X: Any, y: Any, reset: bool, sample_weight: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(
            self, X, y, reset=reset, dtype=_FLOATS, y_numeric=self._task == "regression"
        )
        return np.ascontiguousarray(X, np.float32), y

    def _features(self, X: Any) -> np.ndarray:
        X = validate_data(self, X, reset=False, dtype=_FLOATS)
        return np.ascontiguousarray(X, np.float32)

    def _column_names(self) -> list[str]:
        if hasattr(self, "feature_names_in_"):
            return [str(c) for c in self.feature_names_in_]
        return [f"x{j}" for j in range(self.n_features_in_)]

    def _file_preprocessor(self) -> Preprocessor:
        """The identity as a Preprocessor, so the file is a plain tabular model file."""
        columns = [
            {
                "name": c,
                "kind": "numeric",
                "fill": 0.0,
                "center": 0.0,
                "scale": 1.0,
                "indicator": False,
            }
            for c in self._column_names()
        ]
        params = Preprocessor(scaling="none", drop_duplicates=False).get_params()
        return Preprocessor.from_config(
            {
                "format": CONFIG_FORMAT,
                "version": CONFIG_VERSION,
                "params": params,
                "columns": columns,
            }
        )

    def _restore_input(self, tm) -> None:
        if tm.preprocessor.n_features_out != self.n_features_in_:
            raise ValueError("the file's preprocessing does not match n_features_in_")


class TableInput:
    """DataFrames or array-likes with numbers, text and missing values."""

    def _columns(self, X: Any, reset: bool) -> dict[str, np.ndarray]:
        # scikit-learn's checks (2-D, non-empty, not sparse or complex, feature count and
        # names); the values themselves are read column by column below
        arr = validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=False)
        names = self._column_names()
        if is_frame(X):
            cols = [X.iloc[:, j] for j in range(X.shape[1])]
            return {n: _frame_column(c) for n, c in zip(names, cols)}
        return {n: arr[:, j] for j, n in enumerate(names)}

    def _column_names(self) -> list[str]:
        if hasattr(self, "feature_names_in_"):
            return [str(c) for c in self.feature_names_in_]
        return [f"x{j}" for j in range(self.n_features_in_)]

    def _categorical(self, X: Any, names: list[str]) -> dict[str, str]:
        kinds: dict[str, str] = {}
        if is_frame(X):
            for n, dt in zip(names, X.dtypes):
                if str(dt) == "category":
                    kinds[n] = "categorical"
        cats = self.categorical_features
        if cats is None:
            return kinds
        cats = np.asarray(cats)
        if cats.dtype == bool:
            if cats.shape != (len(names),):
                raise ValueError(
                    f"categorical_features mask has {cats.size} values for {len(names)} columns"
                )
            cats = np.flatnonzero(cats)
        for c in cats.tolist():
            if isinstance(c, (int, np.integer)):
                if not 0 <= c < len(names):
                    raise ValueError(f"categorical_features: column index {c} out of range")
                kinds[names[c]] = "categorical"
            elif str(c) in names:
                kinds[str(c)] = "categorical"
            else:
                raise ValueError(f"categorical_features: no column named {c!r}")
        return kinds

    def _fit_features(
        self, X: Any, y: Any, reset: bool, sample_weight: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Network input and ``y``; with ``reset``, first fit the Preprocessor, weighted by
        ``sample_weight`` (its statistics are then those of the rows repeated weight times,
        so weighting a row by k is repeating it k times; class weights do not enter)."""
        cols = self._columns(X, reset)
        y = column_or_1d(y, warn=True)
        check_consistent_length(next(iter(cols.values())), y)
        numeric = self._task == "regression"
        y = check_array(y, ensure_2d=False, dtype=np.float64 if numeric else None)
        if reset:
            if sample_weight is not None:
                sample_weight = check_sample_weight(sample_weight, len(y))
            names = list(cols)
            table = Table.from_arrays(cols, column_types=self._categorical(X, names))
            self.preprocessor_ = Preprocessor(
                missing_indicator=bool(self.missing_indicator),
                scaling=self.scaling,
                drop_duplicates=False,
            ).fit(table, sample_weight=sample_weight)
        return self.preprocessor_.transform(cols), y

    def _features(self, X: Any) -> np.ndarray:
        return self.preprocessor_.transform(self._columns(X, reset=False))

    def _file_preprocessor(self) -> Preprocessor:
        return self.preprocessor_

    def _restore_input(self, tm) -> None:
        self.preprocessor_ = tm.preprocessor
        if len(tm.preprocessor.feature_names_in) != self.n_features_in_:
            raise ValueError("the file's preprocessing does not match n_features_in_")

    # scikit-learn < 1.6 reads tags from _more_tags; 1.6+ from __sklearn_tags__
    if not NEW_TAGS:

        def _more_tags(self) -> dict:
            return {"allow_nan": True, "X_types": ["2darray", "categorical", "string"]}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags


def _frame_column(series: Any) -> np.ndarray:
    kind = getattr(getattr(series, "dtype", None), "kind", "O")
    if kind in "biuf":
        return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.asarray(series.to_numpy(dtype=object))
