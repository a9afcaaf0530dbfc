"""The ``lepton-nn`` command (also ``python -m lepton_nn``).

Every command turns expected failures (bad CSV, bad model file, bad flag values) into one
readable line on stderr and exit status 2, never a traceback. ``build_parser`` holds the
subcommands; the longer ones live in ``lepton_nn/commands/`` (one module each).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import __version__
from .commands import args as A
from .commands import report as R
from .errors import LeptonError

EXIT_ERROR = 2

# train's defaults: those of TabularModel (a test keeps them equal), shown by --help
TRAIN_DEFAULTS = {
    "hidden": "32x16",
    "epochs": 100,
    "patience": 10,
    "lr": 3e-3,
    "weight_decay": 1e-3,
    "dropout": 0.2,
    "batch_size": 64,
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``lepton-nn train: error: --epochs: must be >= 1``)."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default; none for flags without a default or without help."""

    def _get_help_string(self, action):
        d = action.default
        if d is None or d is False or d is argparse.SUPPRESS or action.const is not None:
            return action.help
        return super()._get_help_string(action)


def _model_kwargs(args) -> dict:
    kw = {}
    for name in ("hidden", "epochs", "patience", "lr", "weight_decay", "dropout", "batch_size"):
        kw[name] = getattr(args, name)
    if kw["patience"] == 0:  # no early stopping: every epoch, on every training row
        kw["validation_split"] = 0.0
    for name in ("positive", "class_weight"):
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    if getattr(args, "monotone", None):
        kw["monotone"] = dict(args.monotone)
    return kw


def _monotone_spec(text: str) -> list[tuple[str, int]]:
    """``--monotone Income:-1,Debt:+1`` -> [("Income", -1), ("Debt", 1)]."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, sign = item.rpartition(":")
        if not name or sign.strip() not in ("+1", "1", "-1"):
            raise argparse.ArgumentTypeError(
                f"{item!r}: give COLUMN:+1 (score rises with it) or COLUMN:-1 (falls)"
            )
        out.append((name.strip(), int(sign)))
    return out


# -- train, evaluate, predict, demo --------------------------------------------------------
def _column_list(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _table_kwargs(args) -> dict:
    """read_csv settings from --numeric, --categorical, --drop, --id, --non-numeric."""
    both = set(args.numeric) & set(args.categorical)
    if both:
        raise LeptonError(f"--numeric and --categorical both name column(s) {sorted(both)}")
    types = {c: "numeric" for c in args.numeric} | {c: "categorical" for c in args.categorical}
    return {"column_types": types, "drop": [*args.drop, *args.id], "non_numeric": args.non_numeric}


def cmd_train(args) -> int:
    from . import io
    from .commands.compress import file_digest
    from .data import train_test_split
    from .tabular import REFIT_BELOW, TabularModel, _infer_task, cross_validate_table

    A.check_output(args.output)
    from .commands.train_stream import should_stream, train_stream

    if should_stream(args):  # a folder, a glob, Parquet, or a file over --memory-budget
        return train_stream(args, {**_model_kwargs(args), "verbose": args.verbose})
    table = _read_table(args)
    y_raw = np.asarray(table.target)
    task = _infer_task(y_raw)
    if task == "regression" and args.positive is not None:
        raise LeptonError(f"--positive: the target {args.target!r} is numeric (regression)")
    n_out = len(np.unique(y_raw.astype(str))) if task == "multiclass" else 1
    A.check_budget(max(1, len(table.columns)), args.hidden, n_out)
    kwargs = {**_model_kwargs(args), "verbose": args.verbose}
    say = print if args.verbose else (lambda *a, **k: None)
    t0 = time.perf_counter()
    print(
        f"{args.data}: {len(table)} rows, {len(table.columns)} features, target "
        f"{args.target!r} ({task})"
    )
    if args.dp_epsilon is not None:
        from .commands.private import train_private

        return train_private(args, table, task, kwargs, t0)
    if args.cv:
        say(f"cross-validating ({args.cv} folds)...")
        scores = cross_validate_table(table, args.cv, args.seed, **kwargs)
        kind = "stratified " if task != "regression" else ""
        print(f"{args.cv}-fold {kind}cross-validation:")
        print("\n".join(R.cv_lines(scores, task)))
    idx = np.arange(len(y_raw))
    strat = None if task == "regression" else table  # a Table: errors name file rows
    tr, va = train_test_split(idx, test_size=0.2, stratify=strat, seed=args.seed)
    say(f"training on {len(tr)} rows ({len(va)} held out for the report below)...")
    model = TabularModel(**kwargs, seed=args.seed).fit(table.take(tr))
    line = A.positive_line(model.labels, args.positive, table.target)
    if line:
        print(line)
    if len(tr) < REFIT_BELOW:
        say(
            f"(under {REFIT_BELOW:,} rows: after early stopping the network was trained again "
            "on all its rows for the epochs it chose)"
        )
    report = R.complete(model.evaluate(table.take(va)), task)
    print(f"validation ({len(va)} rows held out):")
    print("\n".join(R.lines(report)))
    say(
        f"refitting on all {len(table)} rows for the saved file (the rows held out above are "
        "too useful to leave out of the model you ship)..."
    )
    model = TabularModel(**kwargs, seed=args.seed).fit(table)
    model.metrics_card = {
        "validation": {k: v for k, v in report.items() if k != "confusion_matrix"},
        "training": {
            "data": os.path.basename(args.data),
            "rows": len(table),
            "sha256": file_digest(args.data),
        },
    }
    if task == "binary":  # the model card (lepton-nn info MODEL --card)
        from .risk.model_card import card_from_report

        card_from_report(
            model,
            report,
            f"Validation: {len(va)} rows held out from a model trained on the other "
            f"{len(tr)}; the saved model was then refit on all {len(table)} rows.",
            scores if args.cv else None,
        )
    io.save(model, args.output)
    print(
        f"saved {args.output} ({os.path.getsize(args.output):,} bytes, "
        f"{time.perf_counter() - t0:.1f} s)"
    )
    return 0


def _read_table(args):
    from .data import read_csv

    return read_csv(args.data, target=args.target, **_table_kwargs(args))


def cmd_evaluate(args) -> int:
    from .data import read_csv

    model = _load_tabular(args.model, "evaluate")
    table = read_csv(args.data, target=args.target, column_types=model.input_kinds)
    report = R.complete(model.evaluate(table), model.task_)
    print(R.to_json(report) if args.json else "\n".join(R.lines(report)))
    return 0


def cmd_predict(args) -> int:
    import csv

    from .data import read_csv

    streamed = args.dask or len(args.data) > 1 or not _one_csv_file(args.data[0])
    if args.reasons and (streamed or args.data[0] == "-"):
        raise LeptonError("--reasons reads one CSV file (not standard input, Parquet or folders)")
    if streamed:
        from .commands.score import cmd_score  # many files, Parquet, a folder: streamed

        return cmd_score(args)
    args.data = args.data[0]
    A.check_output(args.output)
    if args.data == "-":  # rows from standard input, one result per row as it comes
        from .commands.serve import predict_stdin

        if not args.output:
            return predict_stdin(args.model)
        with open(args.output, "w", newline="") as out:
            return predict_stdin(args.model, out=out)
    model = _load_tabular(args.model, "predict")
    table = read_csv(args.data, column_types=model.input_kinds)  # typed as in training
    labels = model.predict(table)
    reasons = _reasons(model, table, args) if args.reasons else None
    out = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        w = csv.writer(out)
        if model.task_ == "regression":
            w.writerow(["prediction"])
            w.writerows([[v] for v in labels.tolist()])
        else:
            proba = model.predict_proba(table)
            head = ["prediction", *[f"p_{c}" for c in model.classes_.tolist()]]
            w.writerow(head + [f"reason_{i + 1}" for i in range(args.reasons or 0)])
            for i, (lab, p) in enumerate(zip(labels.tolist(), proba.tolist())):
                w.writerow([lab, *[f"{x:.6f}" for x in p], *(reasons[i] if reasons else [])])
    finally:
        if args.output:
            out.close()
    return 0


def _one_csv_file(path: str) -> bool:
    return not os.path.isdir(path) and not path.lower().endswith((".parquet", ".pq", "*"))


def _reasons(model, table, args) -> list[list[str]]:
    """``--reasons K``: per row K cells ``column=value (+contribution)`` (empty past the
    columns that push toward ``--adverse``; multiclass: toward ``--adverse`` or else the
    row's predicted class, as ``serve`` does), from :func:`lepton_nn.risk.reason_codes`."""
    from .risk.reasons import reason_codes

    if model.task_ == "regression":
        raise LeptonError(f"--reasons: {args.model} is a regression model, not a classifier")
    k = args.reasons
    cells = []
    for row in reason_codes(model, table, k=k, adverse=args.adverse):
        cells.append([f"{c}={v} ({d:+.4f})" for c, v, d in row] + [""] * (k - len(row)))
    return cells


def _load_tabular(path: str, command: str):
    """The tabular model in ``path``; a bare network (no preprocessing, no labels) is refused
    in one line: it has no way to read CSV rows."""
    from . import io
    from .tabular import TabularModel

    model = io.load(path)
    if not isinstance(model, TabularModel):
        raise LeptonError(
            f"{path} holds a bare network ({type(model).__name__}), not a tabular model: "
            f"'{command}' needs the preprocessing and labels that 'train' saves; serve the "
            "network with lepton_nn.runtime.load(path).predict(x) on numeric arrays"
        )
    return model


def cmd_demo(args) -> int:
    from . import io, runtime
    from .data import train_test_split
    from .datasets import load_credit
    from .tabular import TabularModel, cross_validate_table

    A.check_output(args.output)  # before the minute of work, not after
    t0 = time.perf_counter()
    table = load_credit()
    print(
        f"lepton_nn {__version__} demo: credit scoring on credit_data.csv "
        f"({len(table)} applications, {len(table.columns)} features, target Status)"
    )
    y = np.asarray(table.target).astype(str)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.2, stratify=y, seed=args.seed)
    train, test = table.take(tr), table.take(te)
    kwargs = {"positive": "bad"}
    scores = cross_validate_table(train, 5, args.seed, **kwargs)
    print(f"\n5-fold stratified cross-validation on {len(tr)} training rows:")
    print("\n".join(R.cv_lines(scores, "binary")))
    model = TabularModel(**kwargs, seed=args.seed).fit(train)
    report = model.evaluate(test)
    print(f"\nheld-out test ({len(te)} rows, positive class 'bad'):")
    print("\n".join(R.lines(report)))
    path = args.output or os.path.join(os.getcwd(), "credit_model.lnn")
    model.metrics_card = {"test": {k: v for k, v in report.items() if k != "confusion_matrix"}}
    io.save(model, path)
    served = runtime.load(path)
    same = np.array_equal(served.predict(test), model.predict(test))
    print(
        f"\nsaved {path} ({os.path.getsize(path):,} bytes); NumPy-only runtime predictions "
        f"{'match' if same else 'DIFFER FROM'} the trained model's"
    )
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0 if same else 1


# -- entry point ------------------------------------------------------------------------
def _add_train(sub) -> None:
    d = TRAIN_DEFAULTS
    t = sub.add_parser("train", help="train a model on a CSV and save it", formatter_class=Help)
    t.add_argument(
        "data", help="CSV file with a header row (or a folder, glob or Parquet: streamed)"
    )
    t.add_argument("--target", required=True, help="target column (numeric: regression)")
    t.add_argument(
        "--positive", help="label of the positive class (two classes; default: the larger label)"
    )
    t.add_argument(
        "--hidden",
        type=A.hidden_sizes,
        default=d["hidden"],
        help="hidden layer sizes, first to last, e.g. 64x32",
    )
    t.add_argument(
        "--epochs",
        type=A.positive_int,
        default=d["epochs"],
        help="most epochs (early stopping may stop sooner)",
    )
    t.add_argument(
        "--patience",
        type=A.nonneg_int,
        default=d["patience"],
        help="early stopping: epochs without a better loss on 20 %% of the training rows "
        "before it stops; 0: no early stopping (all --epochs on every training row, as in "
        "tune's trials)",
    )
    t.add_argument("--lr", type=A.positive_float, default=d["lr"], help="AdamW learning rate")
    t.add_argument(
        "--weight-decay",
        type=A.nonneg_float,
        default=d["weight_decay"],
        dest="weight_decay",
        help="AdamW weight decay",
    )
    t.add_argument("--dropout", type=A.fraction, default=d["dropout"], help="dropout rate")
    t.add_argument(
        "--batch-size",
        type=A.positive_int,
        default=d["batch_size"],
        dest="batch_size",
        help="rows per training step",
    )
    t.add_argument(
        "--class-weight",
        choices=["balanced"],
        dest="class_weight",
        help="weigh classes inversely to their frequency",
    )
    t.add_argument(
        "--cv", type=A.cv_folds, default=0, help="also report k-fold cross-validation (0: none)"
    )
    t.add_argument("--seed", type=A.nonneg_int, default=0, help="seed of splits and weights")
    t.add_argument(
        "--monotone",
        type=_monotone_spec,
        action="extend",
        metavar="COL:+1|-1",
        help="score only rises (+1) or falls (-1) with these numeric columns, e.g. Income:-1",
    )
    t.add_argument("-o", "--output", required=True, help="model file to write (.lnn)")
    cols = {"type": _column_list, "action": "extend", "default": [], "metavar": "COLS"}
    t.add_argument("--numeric", **cols, help="columns to read as numbers (comma-separated)")
    t.add_argument("--categorical", **cols, help="columns to read as categories")
    t.add_argument("--drop", **cols, help="columns to leave out of the model")
    t.add_argument("--id", **cols, help="ID columns (left out of the model)")
    t.add_argument(
        "--non-numeric",
        choices=["error", "missing"],
        default="error",
        dest="non_numeric",
        help="text in a column of numbers: refuse, or read as missing with a warning",
    )
    from .commands.private import add_dp_flags

    add_dp_flags(t)
    from .commands.train_stream import add_flags

    add_flags(t)
    A.add_verbosity(t)
    t.set_defaults(fn=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    from .commands import compress, convert, datasets, info, monitor, serve, signing, studio, tune

    p = Parser(
        prog="lepton-nn",
        description="Train, check and serve small neural networks on tabular data.",
    )
    p.add_argument("--version", action="version", version=f"lepton_nn {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    _add_train(sub)

    e = sub.add_parser(
        "evaluate", help="metrics of a saved model on labelled rows", formatter_class=Help
    )
    e.add_argument("model", help="model file saved by 'lepton-nn train'")
    e.add_argument("data", help="CSV file with the target column")
    e.add_argument("--target", required=True, help="target column")
    e.add_argument("--json", action="store_true", help="every metric as one JSON object")
    e.set_defaults(fn=cmd_evaluate)

    r = sub.add_parser(
        "predict", help="predictions and probabilities for raw rows", formatter_class=Help
    )
    r.add_argument("model", help="model file saved by 'lepton-nn train'")
    r.add_argument(
        "data",
        nargs="+",
        help="CSV file of raw rows (a target column is ignored); '-': rows from standard input "
        "(JSON lines or CSV), one result line per row as it comes; several files, Parquet files "
        "or a folder are scored file by file in bounded memory into the folder -o",
    )
    r.add_argument("-o", "--output", help="CSV file to write (default: standard output)")
    from .commands.score import add_arguments as add_scoring

    add_scoring(r)
    r.add_argument(
        "--reasons",
        type=A.positive_int,
        metavar="K",
        help="add columns reason_1..K: the columns pushing each row toward --adverse",
    )
    r.add_argument(
        "--adverse",
        help="the class that means decline (default: the positive one; multiclass: each row's "
        "predicted class)",
    )
    r.set_defaults(fn=cmd_predict)

    d = sub.add_parser(
        "demo", help="the credit-scoring demo on the bundled data", formatter_class=Help
    )
    d.add_argument("--seed", type=A.nonneg_int, default=0, help="seed of splits and weights")
    d.add_argument("-o", "--output", help="where to save the model (default ./credit_model.lnn)")
    d.set_defaults(fn=cmd_demo)

    tune.add_parser(sub, Help)
    info.add_parser(sub, Help)

    x = sub.add_parser(
        "explain", help="why a saved tabular model predicts what it does", formatter_class=Help
    )
    x.add_argument("model", help="model file saved by 'lepton-nn train'")
    x.add_argument("data", help="CSV file of raw rows")
    x.add_argument("--row", type=A.nonneg_int, default=0, help="data row to explain (0-based)")
    x.add_argument("--target", help="target column, for global importances")
    x.add_argument("--top", type=A.positive_int, default=10, help="features shown for the row")
    x.add_argument("--steps", type=A.positive_int, default=50, help="integrated-gradients steps")
    x.set_defaults(fn=lambda a: __import__("lepton_nn.explain", fromlist=["_"]).cli_explain(a))

    compress.add_parser(sub, Help)
    datasets.add_parser(sub, Help)
    convert.add_parser(sub, Help)
    serve.add_parser(sub, Help)
    studio.add_parser(sub, Help)
    monitor.add_parser(sub, Help)
    from .commands import calibrate  # calibrate, fairness (lepton_nn.risk)

    calibrate.add_parsers(sub, Help)

    b = sub.add_parser(
        "bench", help="benchmarks against TensorFlow, PyTorch, ONNX Runtime", formatter_class=Help
    )
    b.add_argument(
        "--against",
        help="peers, e.g. tensorflow,torch,onnxruntime (default: all installed; 'none' for none)",
    )
    b.add_argument("--quick", action="store_true", help="short rounds, one thread count")
    b.add_argument("--threads", help="thread counts, e.g. 2,1 (default: all cores, and 1)")
    b.add_argument("--out", default="bench-results", help="report folder")
    b.add_argument("--workloads", help="subset of W1-W8,ACC (default: all)")
    b.add_argument("--backends", help="lepton_nn backends (default: the best one and reference)")
    b.add_argument(
        "--python",
        action="append",
        metavar="ENGINE=PATH",
        help="run ENGINE's worker in another interpreter, e.g. tensorflow=/venv-tf/bin/python",
    )
    b.add_argument(
        "--max-load",
        type=float,
        help="rerun a workload whose rounds saw a 1-min load average above this (default 1)",
    )
    b.set_defaults(fn=lambda a: __import__("lepton_nn.bench.command", fromlist=["main"]).main(a))
    signing.add_parsers(sub)
    return p


def _quiet_stdout() -> None:
    """After a closed pipe: send what is left to /dev/null so the exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else list(argv)):  # bare `lepton-nn`: the commands
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (one line printed, code 2)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return int(args.fn(args) or 0)
    except BrokenPipeError:  # `lepton-nn predict ... | head`: the reader has enough
        _quiet_stdout()
        return 0
    except (LeptonError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        msg = str(exc) if not isinstance(exc, OSError) else f"{exc.strerror}: {exc.filename}"
        print(f"lepton-nn: error: {msg}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print("lepton-nn: error: out of memory (a smaller model or batch may fit)", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("lepton-nn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
