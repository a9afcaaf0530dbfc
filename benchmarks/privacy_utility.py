"""Utility of private training on the bundled credit data: ROC-AUC on a held-out 25 % at
epsilon 0.5, 1, 3, 8 (delta 1e-5) against non-private training, over several seeds.

    python benchmarks/privacy_utility.py [--seeds 5]        # the curve on the test split
    python benchmarks/privacy_utility.py --tune             # the recipe grid, validation only

The private recipe (``RECIPE``: batch 256 of ~3,340 rows, i.e. sampling rate ~0.077, 12
epochs, AdamW lr 0.02, clipping norm 1, no dropout) was chosen with ``--tune``: a grid at
epsilon 3 scored on a validation split (20 %) of the training rows only; the test split is
read once per setting below and was never used to choose anything.

Settings. Non-private: the default TabularModel (early stopping on a validation split) and
the same recipe without privacy. Private, TabularModel(privacy=Privacy(target_epsilon=e)):
* public schema: the application form's plausible ranges and category lists (below) are
  public; the quartiles are searched within the ranges with 10 % of the budget;
* public ranges only: the ranges alone scale the columns (``bounds_scaling="range"``, free);
* no public knowledge: every statistic from the data by a DP mechanism (10 % of the budget).
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import numpy as np

from lepton_nn import datasets, metrics
from lepton_nn.data import train_test_split
from lepton_nn.privacy import Privacy
from lepton_nn.tabular import TabularModel

# public knowledge of the credit application form (plausible ranges and the form's choices),
# written by hand, not read from the data: what a user passes as Privacy(bounds, categories)
PUBLIC_BOUNDS = {
    "Seniority": (0, 50), "Time": (0, 72), "Age": (18, 100), "Expenses": (0, 200),
    "Income": (0, 1000), "Assets": (0, 300000), "Debt": (0, 30000), "Amount": (0, 5000),
    "Price": (0, 12000),
}  # fmt: skip
PUBLIC_CATEGORIES = {
    "Home": ["rent", "owner", "parents", "priv", "other", "ignore"],
    "Marital": ["single", "married", "widow", "separated", "divorced"],
    "Records": ["no", "yes"],
    "Job": ["fixed", "partime", "freelance", "others"],
}
RECIPE = {"batch_size": 256, "epochs": 12, "lr": 0.02, "dropout": 0.0, "validation_split": 0.0}
EPSILONS = (0.5, 1, 3, 8)


def auc(model, table) -> float:
    codes = (np.asarray(table.target) == model.labels.positive_).astype(int)
    return float(metrics.roc_auc(codes, model.predict_proba(table)[:, -1]))


def splits():
    """(train, test) as the curve uses them, and (inner train, validation) inside train."""
    table = datasets.load_credit()
    y = np.asarray(table.target)
    tr, te = train_test_split(np.arange(table.n_rows), test_size=0.25, stratify=y, seed=0)
    tr = np.sort(tr)
    itr, iva = train_test_split(tr, test_size=0.2, stratify=y[tr], seed=1)
    return (table.take(tr), table.take(np.sort(te))), (table.take(np.sort(itr)), table.take(iva))


def fit(train, seed, eps=None, mode="public", clip=1.0, **recipe):
    kw = dict(seed=seed, positive="bad", **recipe)
    if eps is not None:
        public = {}
        if mode in ("public", "range"):
            public = {"bounds": PUBLIC_BOUNDS, "categories": PUBLIC_CATEGORIES}
        if mode == "range":
            public["bounds_scaling"] = "range"
        kw["privacy"] = Privacy(target_epsilon=eps, target_delta=1e-5, max_grad_norm=clip, **public)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # categories a DP histogram did not release
        return TabularModel(**kw).fit(train)


def tune(seeds: int) -> None:
    """The recipe grid at epsilon 3 (public schema) on the validation split only."""
    _, (train, val) = splits()
    base = [auc(fit(train, s), val) for s in range(seeds)]
    print(f"non-private (early stopping), validation ROC-AUC {np.mean(base):.4f}")
    grid = {"batch_size": [128, 256, 384, 512], "epochs": [5, 8, 12, 20],
            "lr": [0.01, 0.02, 0.03, 0.05], "clip": [0.3, 1.0]}  # fmt: skip
    for values in itertools.product(*grid.values()):
        kw = dict(zip(grid, values))
        recipe = {**RECIPE, **{k: v for k, v in kw.items() if k != "clip"}}
        scores = [auc(fit(train, s, 3.0, clip=kw["clip"], **recipe), val) for s in range(seeds)]
        print(f"  {kw}  {np.mean(scores):.4f} +- {np.std(scores):.4f}", flush=True)


def curve(seeds: int) -> None:
    (train, test), _ = splits()
    settings = [("non-private (early stopping)", None, None, {}),
                ("non-private (the private recipe)", None, None, RECIPE)]  # fmt: skip
    for label, mode in (("public schema", "public"), ("public ranges only", "range"),
                        ("no public knowledge", "dp")):  # fmt: skip
        settings += [(f"DP eps={e:<3} {label}", e, mode, RECIPE) for e in EPSILONS]
    base = None
    print(f"credit_data.csv: {train.n_rows} training rows, {test.n_rows} test rows; "
          f"ROC-AUC over {seeds} seeds (mean +- std, min..max)")  # fmt: skip
    for label, eps, mode, recipe in settings:
        scores, secs = [], []
        for s in range(seeds):
            t0 = time.perf_counter()
            m = fit(train, s, eps, mode, **recipe)
            secs.append(time.perf_counter() - t0)
            scores.append(auc(m, test))
        mean = float(np.mean(scores))
        base = mean if base is None else base
        extra = ""
        if eps is not None:
            card = m.privacy_card
            extra = f"  spent eps {card['epsilon']:.3f}, sigma {card['noise_multiplier']:.3f}"
        print(
            f"{label:40s} {mean:.4f} +- {np.std(scores):.4f} ({min(scores):.3f}..{max(scores):.3f})"
            f"  {100 * (mean - base):+5.1f} pts  fit {np.mean(secs):.1f} s{extra}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tune", action="store_true", help="the recipe grid on validation rows")
    args = ap.parse_args()
    tune(args.seeds) if args.tune else curve(args.seeds)


if __name__ == "__main__":
    main()
