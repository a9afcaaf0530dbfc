"""scikit-learn estimators over lepton_nn's networks and trainer (needs ``scikit-learn``).

::

    from lepton_nn.sklearn import MLPClassifier, TabularClassifier

    clf = TabularClassifier(random_state=0).fit(frame, y)     # mixed columns, missing values
    clf.predict_proba(new_rows)
    lepton_nn.save(clf, "credit.lnn")                         # a tabular model file

- :class:`MLPClassifier`, :class:`MLPRegressor`: numeric arrays, scikit-learn's MLP names;
- :class:`TabularClassifier`, :class:`TabularRegressor`: DataFrames or arrays with text and
  missing values, preprocessed as :class:`~lepton_nn.tabular.TabularModel` does.

All four pass scikit-learn's estimator checks and work in its Pipelines, searches,
cross-validation and calibration. A saved estimator is a ``kind: "tabular"`` model file that
the NumPy runtime serves; :func:`load` rebuilds the estimator from it. scikit-learn is
imported only inside this package.
"""

from __future__ import annotations

from ._base import load
from .estimators import MLPClassifier, MLPRegressor, TabularClassifier, TabularRegressor

__all__ = ["MLPClassifier", "MLPRegressor", "TabularClassifier", "TabularRegressor", "load"]
