"""Quality and fit time: lepton_nn.sklearn against scikit-learn's own MLPClassifier.

Not a test (timings depend on the machine and its load). Run from the project root
(``PYTHONPATH=.`` when lepton_nn is not installed)::

    python benchmarks/sklearn_quality.py [--splits 5]

On each bundled data set (credit scoring, breast cancer), stratified k-fold CV; per model the
mean (and spread) of accuracy and ROC AUC on the held-out folds, and the mean fit time:

- ``lepton TabularClassifier``: raw DataFrame in (its own imputation, one-hot, scaling);
- ``lepton MLPClassifier`` and ``sklearn MLPClassifier`` with the same default-like settings
  (hidden (64, 32), adam, lr 1e-3, batch 200, max_iter 200, stop after 10 epochs without
  improvement) behind the same ColumnTransformer (median impute + scale, one-hot);
- ``sklearn MLPClassifier (early_stopping)``: the same with 10 % held out.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from lepton_nn import datasets
from lepton_nn.sklearn import MLPClassifier, TabularClassifier


def _frame(table):
    return pd.DataFrame({c: table.data[c] for c in table.columns}), np.asarray(table.target)


def _encoder():
    num = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    cat = make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
    )
    return ColumnTransformer(
        [
            ("num", num, make_column_selector(dtype_include="number")),
            ("cat", cat, make_column_selector(dtype_exclude="number")),
        ]
    )


def models(seed: int) -> dict:
    same = dict(hidden_layer_sizes=(64, 32), max_iter=200, random_state=seed)
    return {
        "lepton TabularClassifier": TabularClassifier(random_state=seed),
        "lepton MLPClassifier": make_pipeline(_encoder(), MLPClassifier(**same)),
        "sklearn MLPClassifier": make_pipeline(_encoder(), SkMLP(**same)),
        "sklearn MLPClassifier (early_stopping)": make_pipeline(
            _encoder(), SkMLP(early_stopping=True, **same)
        ),
    }


def run(name: str, X: pd.DataFrame, y: np.ndarray, splits: int) -> list[dict]:
    rows: dict[str, dict[str, list[float]]] = {}
    folds = StratifiedKFold(n_splits=splits, shuffle=True, random_state=0).split(X, y)
    for k, (tr, te) in enumerate(folds):
        for label, model in models(k).items():
            t0 = time.perf_counter()
            model.fit(X.iloc[tr], y[tr])
            fit_s = time.perf_counter() - t0
            proba = model.predict_proba(X.iloc[te])[:, 1]
            pos = y[te] == model.classes_[1]
            r = rows.setdefault(label, {"acc": [], "auc": [], "fit_s": []})
            r["acc"].append(accuracy_score(y[te], model.predict(X.iloc[te])))
            r["auc"].append(roc_auc_score(pos, proba))
            r["fit_s"].append(fit_s)
    return [
        {
            "data": name,
            "model": label,
            "accuracy": f"{np.mean(r['acc']):.4f} ± {np.std(r['acc']):.4f}",
            "roc_auc": f"{np.mean(r['auc']):.4f} ± {np.std(r['auc']):.4f}",
            "fit_s": f"{np.mean(r['fit_s']):.2f}",
        }
        for label, r in rows.items()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", type=int, default=5)
    args = ap.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    out = []
    for name, loader in (
        ("credit", datasets.load_credit),
        ("breast_cancer", datasets.load_breast_cancer),
    ):
        out += run(name, *_frame(loader()), args.splits)
    table = pd.DataFrame(out)
    print(table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
