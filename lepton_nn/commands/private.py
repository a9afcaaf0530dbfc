"""``lepton-nn train --dp-epsilon ...``: one private fit (DP-SGD, see docs/privacy.md), its
flags, and the privacy record it prints and saves."""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from ..errors import LeptonError
from . import args as A
from . import report as R


def privacy_from_args(args):
    """--dp-* flags -> a lepton_nn.privacy.Privacy request."""
    import json

    from ..privacy import Privacy

    public: dict = {}
    if args.dp_public:
        try:
            with open(args.dp_public, encoding="utf-8") as f:
                public = json.load(f)
        except (OSError, ValueError) as e:
            raise LeptonError(f"--dp-public {args.dp_public}: {e}") from None
        keys = {"bounds", "categories", "bounds_scaling"}
        if (
            not isinstance(public, dict)
            or set(public) - keys
            or public.get("bounds_scaling", "quantiles") not in ("quantiles", "range")
        ):
            raise LeptonError(
                f'--dp-public {args.dp_public}: expected {{"bounds": {{column: [lo, hi]}}, '
                f'"categories": {{column: [values]}}, "bounds_scaling": "quantiles" | "range"}}'
            )
    return Privacy(
        target_epsilon=args.dp_epsilon,
        target_delta=args.dp_delta,
        max_grad_norm=args.dp_max_grad_norm,
        bounds=public.get("bounds"),
        categories=public.get("categories"),
        bounds_scaling=public.get("bounds_scaling", "quantiles"),
    )


def train_private(args, table, task, kwargs, t0) -> int:
    """train --dp-epsilon: ONE private fit on 80 % of the rows, scored on the other 20 %, saved.
    (No refit on all rows and no --cv: every fit on the same people spends budget again.)"""
    from .. import io
    from ..data import train_test_split
    from ..tabular import TabularModel
    from .compress import file_digest

    if args.cv:
        raise LeptonError("--cv with --dp-epsilon: each fold would spend the budget again")
    if args.class_weight:
        raise LeptonError("--class-weight with --dp-epsilon: weights change the sensitivity")
    privacy = privacy_from_args(args)
    from ..cli import TRAIN_DEFAULTS
    from ..privacy import RECIPE

    taken = {k: v for k, v in RECIPE.items() if kwargs.get(k) == TRAIN_DEFAULTS.get(k)}
    kwargs = {**kwargs, **taken}  # flags left at their defaults: the private recipe
    if taken:
        print(
            "private recipe for the flags not given: "
            + ", ".join(f"{k} {v:g}" for k, v in taken.items())
        )
    idx = np.arange(len(table))
    strat = None if task == "regression" else table
    tr, va = train_test_split(idx, test_size=0.2, stratify=strat, seed=args.seed)
    print(f"private training on {len(tr)} rows (epsilon {args.dp_epsilon}, delta {args.dp_delta})")
    with warnings.catch_warnings():  # rare categories the DP histogram withheld: said below
        warnings.filterwarnings("ignore", message=".*category not seen in training")
        train = table.take(tr)
        model = TabularModel(**kwargs, seed=args.seed, privacy=privacy).fit(train)
        report = R.complete(model.evaluate(table.take(va)), task)
    line = A.positive_line(model.labels, args.positive, train.target)
    if line:
        print(line)
    card = model.privacy_card
    print(
        f"privacy spent: epsilon = {card['epsilon']:.4g} at delta = {card['delta']:.3g} "
        f"(noise multiplier {card['noise_multiplier']:.4g}, clipping norm "
        f"{card['max_grad_norm']:g}, {card['steps']} steps); preprocessing: "
        + _sources(card["preprocessing"]["columns"])
    )
    if any(v.startswith("DP histogram") for v in card["preprocessing"]["columns"].values()):
        print(
            "(categories the DP histogram did not release read as unknown, all zeros; "
            "name public categories with --dp-public)"
        )
    unbounded = [
        k for k, v in card["preprocessing"]["columns"].items() if v.startswith("DP quantiles (")
    ]
    if unbounded:
        print(
            f"({len(unbounded)} numeric column(s) without public bounds: their quartiles were "
            "searched over +-1e10, which takes far more budget than a small epsilon leaves "
            "(docs/privacy.md); give plausible ranges with --dp-public)"
        )
    print(f"validation ({len(va)} rows held out; these figures are exact, not private):")
    print("\n".join(R.lines(report)))
    model.metrics_card = {
        "validation": {k: v for k, v in report.items() if k != "confusion_matrix"},
        "training": {
            "data": os.path.basename(args.data),
            "rows": len(tr),
            "sha256": file_digest(args.data),
        },
    }
    from ..risk.model_card import card_from_report, privacy_section

    if task == "binary":  # the model card (lepton-nn info MODEL --card)
        card_from_report(
            model,
            report,
            f"Validation: {len(va)} rows held out from the private fit on the other "
            f"{len(tr)} (exact figures, not private).",
        )
    privacy_section(model)
    io.save(model, args.output)
    print(
        f"saved {args.output} ({os.path.getsize(args.output):,} bytes, "
        f"{time.perf_counter() - t0:.1f} s); the privacy record is in its manifest and "
        "model card (lepton-nn info MODEL --card)"
    )
    return 0


def _sources(columns: dict) -> str:
    """'9 columns DP quantiles within public bounds, 4 public categories': how many columns
    took each kind of statistic (the per-column record is in the model card)."""
    kinds: dict[str, int] = {}
    for how in columns.values():
        kind = how.split(" [")[0].split(" (")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{n} column{'s' * (n > 1)} {k}" for k, n in sorted(kinds.items()))


def add_dp_flags(t) -> None:
    g = t.add_argument_group("differential privacy (DP-SGD; see docs/privacy.md)")
    g.add_argument(
        "--dp-epsilon", type=A.positive_float, dest="dp_epsilon", help="privacy budget epsilon"
    )
    g.add_argument("--dp-delta", type=A.positive_float, default=1e-5, dest="dp_delta", help="delta")
    g.add_argument(
        "--dp-max-grad-norm",
        type=A.positive_float,
        default=1.0,
        dest="dp_max_grad_norm",
        help="clipping norm of each row's gradient",
    )
    g.add_argument(
        "--dp-public",
        dest="dp_public",
        metavar="JSON",
        help='public knowledge: {"bounds": {col: [lo, hi]}, "categories": {col: [...]}}',
    )
