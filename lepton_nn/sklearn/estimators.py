"""The four estimators: their parameters (scikit-learn's names where its MLP has one)."""

from __future__ import annotations

from typing import Any

from ._base import ESTIMATORS
from ._heads import ClassifierNet, RegressorNet
from ._inputs import ArrayInput, TableInput

__all__ = ["MLPClassifier", "MLPRegressor", "TabularClassifier", "TabularRegressor"]

_COMMON_DOC = """
    Parameters
    ----------
    hidden_layer_sizes : widths of the hidden Dense layers.
    activation : ``"relu"``, ``"tanh"``, ``"logistic"``, ``"identity"`` (or any lepton_nn
        Dense activation, e.g. ``"gelu"``).
    alpha : L2 penalty, the optimizer's ``weight_decay``.
    batch_size : rows per step; ``"auto"`` is ``min(200, n_samples)``.
    learning_rate_init : the optimizer's learning rate.
    max_iter : epochs (passes over the data) at most.
    shuffle : shuffle the rows every epoch.
    random_state : seeds weight init, dropout, shuffling and the validation split.
    tol, n_iter_no_change : stop after ``n_iter_no_change`` epochs without an improvement of
        the monitored loss by more than ``tol``.
    verbose : 0 silent, 1 progress bar, 2 one line per epoch.
    warm_start : ``fit`` continues from the current weights (and optimizer state).
    early_stopping : hold out ``validation_fraction`` of the rows (stratified for
        classifiers), monitor their loss, keep the best epoch's weights.
    dropout : dropout rate after each hidden layer (0: none).
    optimizer : ``"adam"``, ``"adamw"``, ``"sgd"`` or ``"rmsprop"``.
    dtype : ``"float32"`` or ``"float64"``, the network's weights and arithmetic (float64
        makes results independent of batch composition to ~1e-15; float32 to ~1e-7).
"""

_TABLE_DOC = """\
    categorical_features : columns (names, indices or a boolean mask) to one-hot even
        if their values look numeric; text and pandas ``category`` columns always are.
    missing_indicator : add a 0/1 feature per column that had missing values in training.
    scaling : numeric columns ``"standard"``, ``"minmax"`` or ``"none"``.

    ``fit(X, y, sample_weight)`` weights the preprocessing too (medians, means, spreads and
    most-frequent fills are those of the rows repeated weight times; class weights do not
    enter it). Training is then weight == repetition exactly only without dropout and early
    stopping (their random draws are per row) and with one batch holding every row.
"""

_CLASS_DOC = """\
    class_weight : ``None``, ``"balanced"`` or ``{label: weight}``, multiplied into
        the sample weights.

    Attributes: ``classes_``, ``n_features_in_``, ``feature_names_in_`` (when fitted on a
    DataFrame with string column names), ``n_iter_``, ``loss_curve_``, ``network_`` (the
    lepton_nn ``Sequential``) and, with early stopping, ``validation_scores_`` (minus the
    validation loss per epoch).
"""

_REG_DOC = """
    Attributes: ``n_features_in_``, ``feature_names_in_``, ``n_iter_``, ``loss_curve_``,
    ``network_`` and, with early stopping, ``validation_scores_``.
"""


class MLPClassifier(ArrayInput, ClassifierNet):
    __doc__ = "A multi-layer perceptron classifier on numeric arrays." + _COMMON_DOC + _CLASS_DOC

    def __init__(
        self,
        hidden_layer_sizes: Any = (64, 32),
        activation: str = "relu",
        *,
        alpha: float = 1e-4,
        batch_size: Any = "auto",
        learning_rate_init: float = 1e-3,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: int = 0,
        warm_start: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        dropout: float = 0.0,
        optimizer: str = "adam",
        dtype: str = "float32",
        class_weight: Any = None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.optimizer = optimizer
        self.dtype = dtype
        self.class_weight = class_weight


class MLPRegressor(ArrayInput, RegressorNet):
    __doc__ = "A multi-layer perceptron regressor on numeric arrays." + _COMMON_DOC + _REG_DOC

    def __init__(
        self,
        hidden_layer_sizes: Any = (64, 32),
        activation: str = "relu",
        *,
        alpha: float = 1e-4,
        batch_size: Any = "auto",
        learning_rate_init: float = 1e-3,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: int = 0,
        warm_start: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
        dropout: float = 0.0,
        optimizer: str = "adam",
        dtype: str = "float32",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.optimizer = optimizer
        self.dtype = dtype


class TabularClassifier(TableInput, ClassifierNet):
    __doc__ = (
        "A classifier on raw tables (DataFrames, mixed numbers and text, missing values),\n"
        "with the preprocessing and the defaults of lepton_nn's TabularModel.\n"
        + _COMMON_DOC
        + _TABLE_DOC
        + _CLASS_DOC
    )

    def __init__(
        self,
        hidden_layer_sizes: Any = (32, 16),
        activation: str = "relu",
        *,
        alpha: float = 1e-3,
        batch_size: Any = 64,
        learning_rate_init: float = 3e-3,
        max_iter: int = 100,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: int = 0,
        warm_start: bool = False,
        early_stopping: bool = True,
        validation_fraction: float = 0.2,
        n_iter_no_change: int = 10,
        dropout: float = 0.2,
        optimizer: str = "adamw",
        dtype: str = "float32",
        class_weight: Any = None,
        categorical_features: Any = None,
        missing_indicator: bool = True,
        scaling: str = "standard",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.optimizer = optimizer
        self.dtype = dtype
        self.class_weight = class_weight
        self.categorical_features = categorical_features
        self.missing_indicator = missing_indicator
        self.scaling = scaling


class TabularRegressor(TableInput, RegressorNet):
    __doc__ = (
        "A regressor on raw tables (DataFrames, mixed numbers and text, missing values),\n"
        "with the preprocessing and the defaults of lepton_nn's TabularModel.\n"
        + _COMMON_DOC
        + _TABLE_DOC
        + _REG_DOC
    )

    def __init__(
        self,
        hidden_layer_sizes: Any = (32, 16),
        activation: str = "relu",
        *,
        alpha: float = 1e-3,
        batch_size: Any = 64,
        learning_rate_init: float = 3e-3,
        max_iter: int = 100,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: int = 0,
        warm_start: bool = False,
        early_stopping: bool = True,
        validation_fraction: float = 0.2,
        n_iter_no_change: int = 10,
        dropout: float = 0.2,
        optimizer: str = "adamw",
        dtype: str = "float32",
        categorical_features: Any = None,
        missing_indicator: bool = True,
        scaling: str = "standard",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.optimizer = optimizer
        self.dtype = dtype
        self.categorical_features = categorical_features
        self.missing_indicator = missing_indicator
        self.scaling = scaling


for _cls in (MLPClassifier, MLPRegressor, TabularClassifier, TabularRegressor):
    ESTIMATORS[_cls.__name__] = _cls
