"""scikit-learn's own estimator checks on the four estimators (small max_iter for CI time).

Each estimator runs every check twice: with float64 weights, where all checks must pass,
and with the default float32 weights, where three checks are expected to fail, each for the
reason written in ``_FLOAT32_XFAIL`` (tests/test_sklearn.py checks the same properties
at float32 tolerance). Those marks are not strict: whether float32 rounding crosses the
checks' 1e-7 depends on the data and the BLAS build, so some of them pass (XPASS).

The Tabular estimators also run as deterministic float64 instances (no dropout, no early
stopping), which pass every check, ``check_sample_weight_equivalence_on_dense_data``
included (the Preprocessor's statistics are weighted); with their defaults that one check
is expected to fail for the reason in ``_STOCHASTIC``.
"""

from __future__ import annotations

import warnings

import pytest

sklearn = pytest.importorskip("sklearn")
if tuple(int(p) for p in sklearn.__version__.split(".")[:2]) < (1, 6):
    pytest.skip("expected_failed_checks needs scikit-learn >= 1.6", allow_module_level=True)

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from lepton_nn.sklearn import (  # noqa: E402
    MLPClassifier,
    MLPRegressor,
    TabularClassifier,
    TabularRegressor,
)

FAST = dict(max_iter=40, random_state=0)
CLASSES = (MLPClassifier, MLPRegressor, TabularClassifier, TabularRegressor)

_FLOAT32 = (
    "float32 arithmetic: predictions agree to ~2e-7 relative, the check asks for 1e-7 "
    "(float64 instances pass it; test_sklearn.py checks it at 1e-5)"
)
_FLOAT32_XFAIL = {
    # BLAS sums a row's dot products in an order that depends on the batch's row count
    "check_methods_sample_order_invariance": _FLOAT32,
    "check_methods_subset_invariance": _FLOAT32,
    # weights and repeated rows give the same loss, summed in a different order
    "check_sample_weight_equivalence_on_dense_data": _FLOAT32,
}
_STOCHASTIC = {
    # The Preprocessor's statistics are weighted (a weight k is k repeated rows), but with
    # the Tabular defaults training itself is not: dropout masks and the early-stopping
    # validation split are drawn per row, so k copies of a row get k draws where a weighted
    # row gets one. The deterministic instances below (no dropout, no early stopping) pass.
    "check_sample_weight_equivalence_on_dense_data": (
        "dropout and the early-stopping validation split draw per row: repeating a row "
        "changes the draws, weighting it does not"
    ),
}


def _expected_failures(estimator) -> dict[str, str]:
    fails = dict(_FLOAT32_XFAIL) if estimator.dtype == "float32" else {}
    if isinstance(estimator, (TabularClassifier, TabularRegressor)) and (
        estimator.dropout or estimator.early_stopping
    ):
        fails.update(_STOCHASTIC)
    return fails


DETERMINISTIC = dict(dropout=0.0, early_stopping=False, dtype="float64")
ESTIMATORS = (
    [cls(**FAST, dtype="float64") for cls in CLASSES]
    + [cls(**FAST) for cls in CLASSES]
    + [cls(**FAST, **DETERMINISTIC) for cls in (TabularClassifier, TabularRegressor)]
)


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_compatible_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
