"""``lepton-nn monitor MODEL DATA [--json]``: population stability of new rows against the
training bins stored in the model file (:func:`lepton_nn.risk.monitor`), as Markdown or
JSON. Exit 0 whatever the flags say (a report, not a test); bad input: one line, exit 2."""

from __future__ import annotations


def cmd_monitor(args) -> int:
    from ..data import read_csv
    from ..risk.stability import monitor
    from ..runtime import load

    model = load(args.model)
    if model.preprocessing is None:
        from ..errors import LeptonError

        raise LeptonError(f"{args.model}: not a tabular model (one saved by 'lepton-nn train')")
    kinds = {s["name"]: s["kind"] for s in model.preprocessing.columns}
    table = read_csv(args.data, column_types=kinds)  # typed as in training
    report = monitor(model, table)
    print(report.to_json() if args.json else report.to_markdown(), end="\n" if args.json else "")
    return 0


def add_parser(sub, h) -> None:
    m = sub.add_parser(
        "monitor",
        help="population stability (PSI) of new rows against the model's training data",
        formatter_class=h,
    )
    m.add_argument("model", help="model file saved by 'lepton-nn train'")
    m.add_argument("data", help="CSV file of new raw rows (a target column is ignored)")
    m.add_argument("--json", action="store_true", help="the report as JSON (default: Markdown)")
    m.set_defaults(fn=cmd_monitor)
