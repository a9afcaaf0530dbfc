"""``lepton-nn calibrate MODEL DATA --target T [--method platt|isotonic|temperature] -o OUT``
and ``lepton-nn fairness MODEL DATA --target T --group COL [--json]``: the calibration and
fairness tools of :mod:`lepton_nn.risk` on a saved tabular classifier and a CSV of labelled
rows the network was not trained on. Bad input: one line, exit 2."""

from __future__ import annotations

import math
import os


def _model_and_rows(args):
    """The saved TabularModel and the CSV's rows, typed as in training, with the target."""
    from .. import io
    from ..data import read_csv
    from ..errors import LeptonError

    model = io.load(args.model)
    if getattr(model, "task_", None) not in ("binary", "multiclass"):
        raise LeptonError(
            f"{args.model}: not a tabular classifier (one saved by 'lepton-nn train')"
        )
    kinds = {s["name"]: s["kind"] for s in model.preprocessor.columns_}
    kinds.pop(args.target, None)
    table = read_csv(args.data, target=args.target, column_types=kinds)
    return model, table


def cmd_calibrate(args) -> int:
    from .. import io
    from ..errors import LeptonError
    from ..risk.calibration import calibrate
    from .args import check_output

    check_output(args.output)
    if os.path.abspath(args.output) == os.path.abspath(args.model):
        raise LeptonError("calibrate: write the calibrated copy to a new file (-o)")
    model, table = _model_and_rows(args)
    new = calibrate(model, table, method=args.method)
    facts = new.card["sections"]["Calibration"]["facts"]
    print(f"{args.method} calibration on {facts['held_out_rows']} held-out rows of {args.data}")
    if "brier_before" in facts:
        print(f"  brier  {facts['brier_before']:.4f} -> {facts['brier_after']:.4f}")
        print(f"  ece    {facts['ece_before']:.4f} -> {facts['ece_after']:.4f}")
        print("  (measured on the rows the map was fitted on: check it on other rows)")
    for k in ("a", "b", "t"):
        if k in facts:
            print(f"  {k} = {facts[k]:.6g}")
    io.save(new, args.output)
    print(f"saved {args.output}; the runtime applies the map (predict, serve)")
    return 0


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _ci(v) -> str:
    return "n/a" if v is None or None in v else f"[{v[0]:.3f}, {v[1]:.3f}]"


def fairness_markdown(report, group: str) -> str:
    lines = [
        f"# Fairness by {group}",
        "",
        f"- **demographic_parity_ratio**: {_fmt(report.demographic_parity_ratio)} "
        f"(95% CI {_ci(report.ci['demographic_parity_ratio'])}); four-fifths rule: "
        + ("pass" if report.four_fifths_pass else "FAIL"),
        f"- **equalized_odds_difference**: {_fmt(report.equalized_odds_difference)} "
        f"(95% CI {_ci(report.ci['equalized_odds_difference'])})",
        "",
        "| group | n | approval rate | 95% CI | TPR | 95% CI | FPR | 95% CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in report.groups:
        cells = [str(g["group"]).replace("|", "\\|"), str(g["n"])]
        for key in ("approval_rate", "tpr", "fpr"):
            cells += [_fmt(g[key]), _ci(g[f"{key}_ci"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "TPR/FPR: declined among the adverse / not adverse rows of each group."]
    return "\n".join(lines) + "\n"


def cmd_fairness(args) -> int:
    from ..risk.groups import fairness

    model, table = _model_and_rows(args)
    report = fairness(
        model, table, table.target, group=args.group, adverse=args.adverse, n_boot=args.boot,
        seed=args.seed,
    )  # fmt: skip
    print(report.to_json() if args.json else fairness_markdown(report, args.group), end="")
    if args.json:
        print()
    return 0


def add_parsers(sub, h) -> None:
    from . import args as A

    c = sub.add_parser(
        "calibrate",
        help="calibrate a classifier's probabilities on held-out rows; save a copy",
        formatter_class=h,
    )
    c.add_argument("model", help="model file saved by 'lepton-nn train'")
    c.add_argument("data", help="CSV of labelled rows the model was NOT trained on")
    c.add_argument("--target", required=True, help="the label column of DATA")
    c.add_argument(
        "--method", choices=("platt", "isotonic", "temperature"), default="platt",
        help="platt (binary), isotonic (binary) or temperature (binary or multiclass)",
    )  # fmt: skip
    c.add_argument("-o", "--output", required=True, help="where to save the calibrated copy")
    c.set_defaults(fn=cmd_calibrate)

    f = sub.add_parser(
        "fairness",
        help="approval, TPR, FPR by group; demographic parity ratio, equalized odds",
        formatter_class=h,
    )
    f.add_argument("model", help="binary model file saved by 'lepton-nn train'")
    f.add_argument("data", help="CSV of labelled rows (held out from training)")
    f.add_argument("--target", required=True, help="the label column of DATA")
    f.add_argument("--group", required=True, help="the protected attribute's column of DATA")
    f.add_argument("--adverse", help="the adverse (declined) class (default: the positive one)")
    f.add_argument(
        "--boot", type=A.nonneg_int, default=200, help="bootstrap resamples for the intervals"
    )
    f.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    f.add_argument("--json", action="store_true", help="the report as JSON (default: Markdown)")
    f.set_defaults(fn=cmd_fairness)
