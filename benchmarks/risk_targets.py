"""Issue 18's credit-risk targets, measured (not a test; prints one table):

    python benchmarks/risk_targets.py [--seeds 3]

- ECE of the calibrated model on held-out rows (credit_data, 5 folds: train on 3, calibrate
  on 1, test on 1; test predictions pooled), each method and uncalibrated; target <= 0.03;
- PSI of the training rows against themselves (< 0.01) and against a copy with Income,
  Amount and Age shifted (> 0.25);
- reason codes on a synthetic set where the label depends on x0 and x1 only: share of
  declined rows whose two top reasons are {x0, x1} (target >= 95 %);
- monotone constraints (Seniority and Income falling, Debt rising, for P(bad)): ROC-AUC cost
  in points on the pooled test predictions (target <= 0.5).
"""

from __future__ import annotations

import argparse

import numpy as np

from lepton_nn import datasets, risk
from lepton_nn.tabular import TabularModel

MONOTONE = {"Seniority": -1, "Income": -1, "Debt": 1}


def credit(seeds: int) -> None:
    """5 folds per seed: train on 3, calibrate on the next, test on the fold; the ECE of the
    test predictions pooled over the 5 folds (all 4,454 rows: less sampling noise than one
    fold's ~900 rows, whose ECE of a perfectly calibrated model is itself ~0.02-0.03)."""
    from lepton_nn.metrics import expected_calibration_error, roc_auc

    table = datasets.load("credit_data")
    y = np.asarray(table.target) == "bad"
    ece: dict[str, list[float]] = {}
    auc_cost, psi_self, psi_shift = [], [], []
    for seed in range(seeds):
        folds = np.array_split(np.random.default_rng(seed).permutation(table.n_rows), 5)
        pooled: dict[str, np.ndarray] = {}
        tied_p = np.zeros(table.n_rows)
        for k in range(5):
            te, ca = folds[k], folds[(k + 1) % 5]
            tr = np.concatenate([folds[i] for i in range(5) if i not in (k, (k + 1) % 5)])
            model = TabularModel(seed=seed, positive="bad").fit(table.take(tr))
            cals = {"none": model}
            for method in ("platt", "temperature", "isotonic"):
                cals[method] = risk.calibrate(model, table.take(ca), method=method)
            for name, m in cals.items():
                pooled.setdefault(name, np.zeros(table.n_rows))[te] = m.predict_proba(
                    table.take(te)
                )[:, 1]
            tied = TabularModel(seed=seed, positive="bad", monotone=MONOTONE).fit(table.take(tr))
            tied_p[te] = tied.predict_proba(table.take(te))[:, 1]
            if k == 0:
                train = table.take(tr)
                same = risk.monitor(model, train)
                psi_self.append(max([same.score["psi"]] + [f["psi"] for f in same.features]))
                cols = {c: np.array(v, copy=True) for c, v in train.data.items()}
                for c in ("Income", "Amount", "Age"):
                    cols[c] = cols[c].astype(float) * 1.3 + 10
                shifted = risk.monitor(model, cols)
                psi_shift.append(
                    min(f["psi"] for f in shifted.features if f["name"] in ("Income", "Amount"))
                )
        for name, p in pooled.items():
            ece.setdefault(name, []).append(expected_calibration_error(y, p))
        auc_cost.append(100 * (roc_auc(y, pooled["none"]) - roc_auc(y, tied_p)))
    print(f"credit_data, {seeds} seeds x 5 folds (mean, then per seed)")
    for method, v in ece.items():
        print(f"  ECE {method:<12} {np.mean(v):.4f}  " + " ".join(f"{x:.4f}" for x in v))
    print(f"  PSI training vs itself (max over score and columns) {max(psi_self):.2e}")
    print(f"  PSI shifted (min over the shifted Income, Amount) {min(psi_shift):.3f}")
    print(
        f"  ROC-AUC cost of monotone {MONOTONE}: {np.mean(auc_cost):.2f} points  "
        + " ".join(f"{x:.2f}" for x in auc_cost)
    )


def reasons(seeds: int) -> None:
    shares = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(3000, 6))
        z = 4 * (np.minimum(X[:, 0], X[:, 1]) - 0.3)
        y = np.where(rng.random(3000) < 1 / (1 + np.exp(-z)), "bad", "good")
        data = {f"x{i}": X[:, i] for i in range(6)}
        model = TabularModel(seed=seed, positive="bad").fit(data, y)
        codes = risk.reason_codes(model, data, k=4)
        declined = np.flatnonzero(model.predict(data) == "bad")
        shares.append(np.mean([{c for c, _, _ in codes[i][:2]} == {"x0", "x1"} for i in declined]))
    print(
        f"reason codes: top two = {{x0, x1}} for {100 * np.mean(shares):.1f} % of declined rows "
        + " ".join(f"{100 * s:.1f}" for s in shares)
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args()
    credit(a.seeds)
    reasons(a.seeds)
