"""``write_card(model, data, y)``: fill a tabular model's card (:mod:`.card`) from what is
known about it: its training profile, metrics and calibration on held-out rows, fairness by
group, the monitoring baseline, constraints and compression. ``save`` keeps it in the file;
``lepton-nn info MODEL --card`` prints it. Sections other rooms wrote (say, Privacy) stay.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import card

__all__ = ["card_from_report", "privacy_section", "write_card"]

_CV_KEYS = ("roc_auc", "ks", "accuracy", "f1", "brier", "ece")
_METRICS = ("n", "roc_auc", "ks", "accuracy", "precision", "recall", "f1", "log_loss")


def write_card(
    model: Any,
    data: Any,
    y: Any = None,
    *,
    group: Any = None,
    intended_use: str | None = None,
    cv: dict[str, list[float]] | None = None,
    adverse: Any = None,
) -> Any:
    """Write the card sections of a binary ``TabularModel`` and return the model.

    ``data``/``y``: held-out labelled rows (metrics, calibration, fairness, monitoring are
    measured on them). ``group``: a column name or array for the Fairness section.
    ``cv``: per-metric fold scores (``cross_validate_table``) for the spread in Metrics.
    """
    from .groups import fairness
    from .stability import monitor

    data, y = model._split_target(data, y)
    profile = model.profile or {}
    report = model.evaluate(data, y)
    if intended_use:
        card.set_section(model, "Intended use", text=intended_use)
    card_from_report(model, report, "Measured on held-out rows.", cv)
    if group is not None:
        f = fairness(model, data, y, group=group, adverse=adverse)
        lo, hi = f.ci["demographic_parity_ratio"]
        card.set_section(
            model,
            "Fairness",
            facts={
                "group": group if isinstance(group, str) else "(given)",
                "demographic_parity_ratio": f.demographic_parity_ratio,
                "dpr_95_ci": "n/a" if lo is None else f"[{lo:.3f}, {hi:.3f}]",
                "four_fifths_pass": f.four_fifths_pass,
                "equalized_odds_difference": f.equalized_odds_difference,
            },
            table=f.card_table(),
        )
    if profile:
        m = monitor(model, data)
        card.set_section(
            model,
            "Monitoring",
            text="PSI of these rows against the training bins stored in the file "
            "(lepton-nn monitor MODEL NEW.csv); watch > 0.1, shift > 0.25.",
            facts={"training_rows": profile["rows"], "bins": profile["bins"]},
            table={
                "columns": ["characteristic", "psi", "flag"],
                "rows": [["score", m.score["psi"], m.score["flag"]]]
                + [[x["name"], x["psi"], x["flag"]] for x in m.features],
            },
        )
    if model.compression:
        comp = {k: v for k, v in model.compression.items() if not isinstance(v, (dict, list))}
        card.set_section(model, "Compression", facts=comp)
    privacy_section(model)
    return model


_PRIVACY_FACTS = (
    ("epsilon", "epsilon"),
    ("delta", "delta"),
    ("accountant", "accountant"),
    ("mechanism", "mechanism"),
    ("unit", "unit"),
    ("noise_multiplier", "noise_multiplier"),
    ("max_grad_norm", "clipping_norm"),
    ("sample_rate", "sampling_rate"),
    ("steps", "steps"),
    ("n_records", "training_records"),
    ("training_epsilon", "training_epsilon"),
    ("training_delta", "training_delta"),
    ("target_scaling", "target_scaling"),
)


def privacy_section(model: Any, record: dict | None = None) -> Any:
    """The Privacy section of ``model.card`` from the privacy record of a private fit
    (``model.privacy_card``, or ``record``; :meth:`lepton_nn.privacy.PrivateTraining.report`):
    the (epsilon, delta) guarantee, how it was accounted, the DP-SGD settings, and how each
    preprocessing statistic was obtained (public knowledge or which DP mechanism). Nothing
    is written for a model trained without privacy. Returns the model."""
    rec = record if record is not None else getattr(model, "privacy_card", None)
    if not isinstance(rec, dict):
        return model
    facts: dict[str, Any] = {name: rec.get(key) for key, name in _PRIVACY_FACTS if key in rec}
    pre = rec.get("preprocessing")
    table = None
    if isinstance(pre, dict):
        facts["preprocessing_epsilon"] = pre.get("epsilon")
        facts["preprocessing_delta"] = pre.get("delta")
        cols = pre.get("columns") or {}
        table = {
            "columns": ["column", "statistics from"],
            "rows": [[str(k), str(v)] for k, v in cols.items()],
        }
    else:
        facts["preprocessing"] = None if pre is None else str(pre)
    text = (
        f"Trained with differential privacy: ({_num(rec.get('epsilon'))}, "
        f"{_num(rec.get('delta'))})-DP for one {rec.get('unit', 'record')}, covering the "
        "preprocessing statistics and the training (basic composition). Held-out metrics in "
        "this card are exact, not private; see docs/privacy.md."
    )
    card.set_section(model, "Privacy", text=text, facts=facts, table=table)
    return model


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "?"


def card_from_report(
    model: Any, report: dict, source: str, cv: dict[str, list[float]] | None = None
) -> Any:
    """Data, Metrics and Calibration sections from an ``evaluate`` report of a binary
    ``TabularModel`` (``source``: a sentence saying which rows it was measured on), and the
    Monitoring baseline. ``lepton-nn train`` writes these from its validation report."""
    profile = model.profile or {}
    kinds = model.input_kinds
    card.set_section(
        model,
        "Data",
        facts={
            "training_rows": profile.get("rows"),
            "columns": len(kinds),
            "categorical": sum(k == "categorical" for k in kinds.values()),
            "task": model.task_,
            "classes": ", ".join(map(str, model.classes_.tolist())),
            "positive_class": str(model.labels.positive_),
            "reason_code_baseline": profile.get("baseline_rule"),
        },
        table={
            "columns": ["column", "kind", "baseline"],
            "rows": [[c["name"], c["kind"], c["baseline"]] for c in profile.get("columns", [])],
        },
    )
    facts: dict[str, Any] = {k: report.get(k) for k in _METRICS}
    facts["threshold"] = model.threshold
    for key, scores in (cv or {}).items():
        if key not in _CV_KEYS:
            continue
        v = np.asarray(scores, dtype=np.float64)
        facts[f"{key} (CV)"] = f"{v.mean():.4f} +/- {v.std():.4f} over {len(v)} folds"
    if model.monotone:
        facts["monotone"] = ", ".join(
            f"{c} {'rises' if s > 0 else 'falls'}" for c, s in model.monotone.items()
        )
        facts["monotone_violations"] = sum(report.get("monotone_violations", {}).values())
    card.set_section(model, "Metrics", text=source, facts=facts)
    cal = model.calibration or {"method": "none"}
    cal_facts = {"method": cal["method"], "brier": report["brier"], "ece": report["ece"]}
    cal_facts.update({k: v for k, v in cal.items() if k in ("a", "b", "t")})
    rel = report["reliability"]
    card.set_section(
        model,
        "Calibration",
        facts=cal_facts,
        table={
            "columns": ["bin", "n", "mean_predicted", "observed_rate"],
            "rows": [
                [f"[{r['lo']:.1f}, {r['hi']:.1f})", r["n"], r["mean_predicted"], r["observed_rate"]]
                for r in rel
            ],
        },
    )
    if profile:
        card.set_section(
            model,
            "Monitoring",
            text="Baseline: the training bins stored in the file; check new rows with "
            "lepton-nn monitor MODEL NEW.csv (PSI; watch > 0.1, shift > 0.25).",
            facts={"training_rows": profile["rows"], "bins": profile["bins"]},
        )
    privacy_section(model)
    return model
