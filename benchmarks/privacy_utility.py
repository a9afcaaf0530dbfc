"""Utility of private training on the bundled credit data: ROC-AUC on a held-out 25 % at
epsilon 0.5, 1, 3, 8 (delta 1e-5) against non-private training, same model and seed.

    python benchmarks/privacy_utility.py [--seeds 3] [--epochs 20]

Private runs: TabularModel(privacy=Privacy(target_epsilon=e)), DP preprocessing (no public
bounds given), DP-SGD for a fixed number of epochs. Non-private: the default TabularModel
(early stopping on a validation split), and the same fixed-epoch recipe without privacy.
"""

from __future__ import annotations

import argparse
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


def auc(model, table, y) -> float:
    codes = (y == model.labels.positive_).astype(int)
    return float(metrics.roc_auc(codes, model.predict_proba(table)[:, -1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()
    table = datasets.load_credit()
    y = np.asarray(table.target)
    idx = np.arange(table.n_rows)
    tr, te = train_test_split(idx, test_size=0.25, stratify=y, seed=0)
    train, test = table.take(np.sort(tr)), table.take(np.sort(te))
    y_test = np.asarray(test.target)
    rows = []
    settings = [
        ("non-private (early stopping)", None, "default"),
        ("non-private (fixed epochs)", None, "fixed"),
    ]
    settings += [(f"DP eps={e} (public schema)", e, "public") for e in (0.5, 1, 3, 8)]
    settings += [(f"DP eps={e} (DP preprocessing)", e, "dp-pre") for e in (0.5, 1, 3, 8)]
    for label, eps, mode in settings:
        scores, secs = [], []
        for s in range(args.seeds):
            kw = dict(seed=s, positive="bad")
            if mode != "default":
                kw.update(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          dropout=0.0, validation_split=0.0)  # fmt: skip
            if eps is not None:
                public = {}
                if mode == "public":
                    public = {"bounds": PUBLIC_BOUNDS, "categories": PUBLIC_CATEGORIES}
                kw["privacy"] = Privacy(target_epsilon=eps, target_delta=1e-5, **public)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = TabularModel(**kw).fit(train)
                scores.append(auc(m, test, y_test))
            secs.append(time.perf_counter() - t0)
        extra = ""
        if eps is not None:
            card = m.privacy_card
            extra = f"  (spent eps {card['epsilon']:.3f}, sigma {card['noise_multiplier']:.3f})"
        rows.append((label, np.mean(scores), np.std(scores), np.mean(secs)))
        print(
            f"{label:32s} ROC-AUC {np.mean(scores):.4f} +- {np.std(scores):.4f}   "
            f"fit {np.mean(secs):.1f} s{extra}",
            flush=True,
        )


if __name__ == "__main__":
    main()
