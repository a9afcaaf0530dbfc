"""The ``lepton-nn`` command (also ``python -m lepton_nn``).

Every command turns expected failures (bad CSV, bad model file, wrong arguments) into one
readable line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import __version__
from .errors import LeptonError

EXIT_ERROR = 2


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes sizes like 64,32, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"--hidden takes positive sizes, got {text!r}")
    return sizes


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _model_kwargs(args) -> dict:
    kw = {}
    for name in ("hidden", "epochs", "lr", "dropout", "batch_size", "positive", "class_weight"):
        v = getattr(args, name, None)
        if v is not None:
            kw[name] = v
    return kw


# -- cross-validation on raw tables ---------------------------------------------------------
def _cv_lines(
    scores: dict[str, list[float]], keys=("accuracy", "roc_auc", "ks", "f1")
) -> list[str]:
    out = []
    for key in keys:
        if key in scores:
            v = np.asarray(scores[key])
            out.append(
                f"  {key:<9} {v.mean():.4f} +/- {v.std():.4f}   folds: "
                + " ".join(f"{x:.3f}" for x in v)
            )
    return out


def _report_lines(report: dict) -> list[str]:
    lines = []
    for key in (
        "n",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "pr_auc",
        "ks",
        "log_loss",
        "r2",
        "mse",
        "mae",
        "f1_macro",
    ):
        if key in report:
            lines.append(f"  {key:<9} {_fmt(report[key])}")
    cm = report.get("confusion_matrix")
    if cm is not None:
        lines.append("  confusion matrix (rows: true, columns: predicted):")
        lines.extend("    " + " ".join(f"{c:>6}" for c in row) for row in cm)
    return lines


# -- commands ---------------------------------------------------------------------------
def cmd_train(args) -> int:
    from . import io
    from .data import read_csv, train_test_split
    from .tabular import TabularModel, cross_validate_table

    table = read_csv(args.data, target=args.target)
    t0 = time.perf_counter()
    if args.cv:
        scores = cross_validate_table(table, args.cv, args.seed, **_model_kwargs(args))
        print(f"{args.cv}-fold cross-validation:")
        print("\n".join(_cv_lines(scores)))
    y = np.asarray(table.target).astype(str)
    idx = np.arange(len(y))
    tr, va = train_test_split(idx, test_size=0.2, stratify=y, seed=args.seed)
    model = TabularModel(**_model_kwargs(args), seed=args.seed).fit(table.take(tr))
    report = model.evaluate(table.take(va))
    print(f"validation ({len(va)} rows held out):")
    print("\n".join(_report_lines(report)))
    model = TabularModel(**_model_kwargs(args), seed=args.seed).fit(
        table
    )  # refit on every row for the file
    model.metrics_card = {
        "validation": {k: v for k, v in report.items() if k != "confusion_matrix"}
    }
    io.save(model, args.output)
    print(
        f"saved {args.output} ({os.path.getsize(args.output):,} bytes, "
        f"{time.perf_counter() - t0:.1f} s)"
    )
    return 0


def cmd_evaluate(args) -> int:
    from .data import read_csv

    model = _load_tabular(args.model, "evaluate")
    table = read_csv(args.data, target=args.target)
    report = model.evaluate(table)
    if args.json:
        keys = ("accuracy", "precision", "recall", "f1", "roc_auc", "ks", "confusion_matrix", "n")
        print(json.dumps({k: report.get(k) for k in keys}))
    else:
        print("\n".join(_report_lines(report)))
    return 0


def cmd_predict(args) -> int:
    import csv

    from .data import read_csv

    model = _load_tabular(args.model, "predict")
    table = read_csv(args.data)
    labels = model.predict(table)
    out = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        w = csv.writer(out)
        if model.task_ == "regression":
            w.writerow(["prediction"])
            w.writerows([[v] for v in labels.tolist()])
        else:
            proba = model.predict_proba(table)
            w.writerow(["prediction", *[f"p_{c}" for c in model.classes_.tolist()]])
            for lab, p in zip(labels.tolist(), proba.tolist()):
                w.writerow([lab, *[f"{x:.6f}" for x in p]])
    finally:
        if args.output:
            out.close()
    return 0


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


def cmd_keygen(args) -> int:
    """``lepton-nn keygen NAME``: a new Ed25519 key pair, NAME.key (secret) and NAME.pub."""
    from .runtime import signing

    try:
        key, pub = signing.keygen(args.name)
    except FileExistsError as exc:
        raise LeptonError(str(exc)) from None
    print(f"wrote {key} (keep it secret) and {pub} (key id {signing.key_id(pub)})")
    return 0


def cmd_sign(args) -> int:
    """``lepton-nn sign MODEL --key NAME.key [-o OUT]``: sign a model file (in place)."""
    from .runtime import signing

    try:
        kid = signing.sign_file(args.model, args.key, args.output)
    except ValueError as exc:  # an unreadable key
        raise LeptonError(f"{args.key}: {exc}") from None
    print(f"signed {args.output or args.model} (key id {kid})")
    return 0


def cmd_verify(args) -> int:
    """``lepton-nn verify MODEL --public-key NAME.pub``: exit 0 when a trusted key signed it."""
    from .runtime import signing

    try:
        kid = signing.verify_file(args.model, args.public_key)
    except ValueError as exc:
        if isinstance(exc, LeptonError):
            raise
        raise LeptonError(f"{exc}") from None
    print(f"{args.model}: signature OK (key id {kid})")
    return 0


def _add_signing_commands(sub) -> None:
    k = sub.add_parser("keygen", help="make an Ed25519 key pair NAME.key / NAME.pub")
    k.add_argument("name", help="path prefix of the two files")
    k.set_defaults(fn=cmd_keygen)
    s = sub.add_parser("sign", help="sign a model file with a private key")
    s.add_argument("model")
    s.add_argument("--key", required=True, help="the private key (NAME.key)")
    s.add_argument("-o", "--output", help="write the signed file here (default: in place)")
    s.set_defaults(fn=cmd_sign)
    v = sub.add_parser("verify", help="check a model file's signature against public keys")
    v.add_argument("model")
    v.add_argument(
        "--public-key", required=True, action="append", help="a trusted NAME.pub (repeatable)"
    )
    v.set_defaults(fn=cmd_verify)


def cmd_demo(args) -> int:
    from . import io, runtime
    from .data import train_test_split
    from .datasets import load_credit
    from .tabular import TabularModel, cross_validate_table

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
    print("\n".join(_cv_lines(scores)))
    model = TabularModel(**kwargs, seed=args.seed).fit(train)
    report = model.evaluate(test)
    print(f"\nheld-out test ({len(te)} rows, positive class 'bad'):")
    print("\n".join(_report_lines(report)))
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


def _median_us(fn, arg, calls: int = 200) -> float:
    """Median wall time of ``fn(arg)`` in microseconds over ``calls`` calls (after 10 warm-up)."""
    for _ in range(10):
        fn(arg)
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        fn(arg)
        times[i] = time.perf_counter() - t0
    return float(np.median(times) * 1e6)


def _compress_row(path: str, model, test, keys) -> dict:
    """Size, weights, nonzeros, held-out metrics and runtime batch-1 latency of one file."""
    from . import runtime
    from .nn import Dense

    params = [m.weight.data for m in model.network.modules() if isinstance(m, Dense)]
    report = model.evaluate(test)
    served = runtime.load(path)
    row = test.take([0])
    x = np.ascontiguousarray(served.transform(row))
    return {
        "size": os.path.getsize(path),
        "weights": sum(int(w.size) for w in params),
        "nonzero": sum(int(np.count_nonzero(w)) for w in params),
        **{k: report.get(k) for k in keys},
        "net_us": _median_us(served.forward, x),
        "row_us": _median_us(
            served.predict_proba if model.task_ != "regression" else served.predict, row
        ),
    }


def cmd_compress(args) -> int:
    from . import io
    from .data import read_csv, train_test_split
    from .tabular import TabularModel

    if not 0.0 <= args.prune < 1.0:
        raise LeptonError(f"--prune takes a fraction in [0, 1), got {args.prune}")
    if args.int8 not in (None, "dynamic", "static"):
        raise LeptonError(f"--int8 takes dynamic or static, got {args.int8!r}")
    if args.fine_tune_epochs < 0:
        raise LeptonError(f"--fine-tune-epochs must be >= 0, got {args.fine_tune_epochs}")
    if args.max_accuracy_drop is not None and not 0.0 <= args.max_accuracy_drop <= 1.0:
        raise LeptonError(
            f"--max-accuracy-drop takes a fraction in [0, 1], got {args.max_accuracy_drop}"
        )
    if args.prune == 0 and args.int8 is None:
        raise LeptonError("nothing to do: give --prune FRACTION and/or --int8 dynamic|static")
    if args.structured and args.prune == 0:
        raise LeptonError("--structured needs --prune FRACTION")
    if os.path.abspath(args.output) == os.path.abspath(args.model):
        raise LeptonError("-o must differ from MODEL (the original is the 'before' of the report)")
    model = io.load(args.model)
    if not isinstance(model, TabularModel):
        raise LeptonError(f"{args.model}: not a tabular model (one saved by 'lepton-nn train')")
    table = read_csv(args.data, target=args.target)
    y = np.asarray(table.target).astype(str)
    idx = np.arange(len(y))
    strat = y if model.task_ != "regression" else None
    tr, te = train_test_split(idx, test_size=0.2, stratify=strat, seed=args.seed)
    train, test = table.take(tr), table.take(te)
    t0 = time.perf_counter()
    small = model.compress(
        train,
        prune=args.prune,
        structured=args.structured,
        fine_tune_epochs=args.fine_tune_epochs,
        quantize=args.int8,
        max_accuracy_drop=args.max_accuracy_drop if args.int8 else None,
    )
    took = time.perf_counter() - t0
    io.save(small, args.output)
    shipped = io.load(args.output)  # report on what the file holds
    keys = ("accuracy", "roc_auc") if model.task_ != "regression" else ("r2", "mae")
    before = _compress_row(args.model, model, test, keys)
    after = _compress_row(args.output, shipped, test, keys)

    what = []
    if args.prune:
        kind = "whole hidden units (L1), compacted" if args.structured else "weights by magnitude"
        how = (
            f"gradually over {args.fine_tune_epochs} fine-tuning epochs"
            if args.fine_tune_epochs
            else "one shot, no fine-tuning"
        )
        what.append(f"pruned {args.prune:.0%} of {kind}, {how}")
    if args.int8:
        q = small.compression.get("int8_layers", [])
        what.append(f"int8 {args.int8} ({len(q)} of the Dense layers)")
    print(f"{args.model} -> {args.output}: {'; '.join(what)} ({took:.1f} s)")
    print(
        f"evaluated on a held-out stratified 20 % of {args.data} ({len(te)} rows, seed "
        f"{args.seed}); fine-tuning and calibration used the other {len(tr)}"
    )
    heads = ["", "size (B)", "weights", "nonzero", *keys, "net us", "row us"]
    rows = [heads]
    for name, r in (("before", before), ("after", after)):
        rows.append(
            [
                name,
                f"{r['size']:,}",
                f"{r['weights']:,}",
                f"{r['nonzero']:,}",
                *[_fmt(r[k]) for k in keys],
                f"{r['net_us']:.1f}",
                f"{r['row_us']:.1f}",
            ]
        )
    change = ["change", f"{after['size'] / before['size'] - 1:+.1%}", "", ""]
    for k in keys:
        a, b = after[k], before[k]
        change.append("n/a" if a is None or b is None else f"{a - b:+.4f}")
    change += [
        f"{after['net_us'] / before['net_us'] - 1:+.0%}",
        f"{after['row_us'] / before['row_us'] - 1:+.0%}",
    ]
    rows.append(change)
    widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
    for r in rows:
        print(
            "  "
            + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        )
    print(
        "  (latency: lepton_nn.runtime, median of 200 batch-1 calls in microseconds; "
        "net: the network on a prepared row, row: predict on a raw row)"
    )
    if keys[0] == "accuracy" and before["accuracy"] is not None:
        drop = before["accuracy"] - after["accuracy"]
        line = f"accuracy cost: {drop * 100:+.2f} points on the held-out rows"
        if args.max_accuracy_drop is not None:
            over = drop > args.max_accuracy_drop
            verdict = "OVER BUDGET" if over else "within"
            line += f" (budget {args.max_accuracy_drop * 100:.2f}: {verdict})"
        print(line)
    return 0


def _grid(text: str) -> dict[str, list]:
    """``"lr=1e-3,3e-3;hidden=32,64x32;dropout=0,0.2"`` -> {"lr": [...], "hidden": [...], ...}."""
    grid: dict[str, list] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, values = part.partition("=")
        name = name.strip().replace("-", "_")
        if name not in _TUNABLE or not values:
            raise LeptonError(
                f"--grid: unknown or empty entry {part!r}; tunable: {sorted(_TUNABLE)}"
            )
        try:
            grid[name] = [_TUNABLE[name](v.strip()) for v in values.split(",") if v.strip()]
        except ValueError:
            raise LeptonError(f"--grid: bad value in {part!r}") from None
    return grid


_TUNABLE = {
    "lr": float,
    "weight_decay": float,
    "dropout": float,
    "hidden": lambda v: tuple(int(h) for h in v.split("x")),
    "batch_size": int,
    "epochs": int,
}


def cmd_tune(args) -> int:
    from .data import LabelEncoder, Preprocessor, read_csv
    from .tabular import mlp_trainer
    from .tuning import GridSearch, RandomSearch, choice, loguniform, uniform

    table = read_csv(args.data, target=args.target)
    pre = Preprocessor(missing_indicator=True)
    X, y_raw = pre.fit_resample(table, table.target)
    labels = LabelEncoder(positive=args.positive).fit(y_raw)
    y = labels.transform(y_raw)
    n_out = 1 if len(labels.classes_) == 2 else len(labels.classes_)
    build = functools.partial(mlp_trainer, n_in=X.shape[1], n_out=n_out)  # picklable
    if n_out == 1:
        y = y.astype(np.float32).reshape(-1, 1)
    kw = {
        "cv": args.cv,
        "seed": args.seed,
        "executor": "serial" if args.jobs == 1 else None,
        "n_jobs": args.jobs,
        "scoring": args.scoring,
        "fit_kwargs": {"epochs": 30, "batch_size": 64},
    }
    if args.trials:
        space = {
            "lr": loguniform(1e-4, 1e-2),
            "hidden": choice([(16,), (32,), (32, 16), (64, 32)]),
            "dropout": uniform(0.0, 0.5),
            "weight_decay": loguniform(1e-5, 1e-2),
            "batch_size": choice([32, 64, 128]),
        }
        search = RandomSearch(build, space, n_trials=args.trials, **kw)
    else:
        grid = (
            _grid(args.grid)
            if args.grid
            else {"lr": [1e-3, 3e-3], "hidden": [(32, 16), (64, 32)], "dropout": [0.0, 0.2]}
        )
        search = GridSearch(build, grid, **kw)
    t0 = time.perf_counter()
    search.fit(X, y)
    print(
        f"{len(search.results_)} configurations x {args.cv} folds "
        f"({time.perf_counter() - t0:.1f} s; preprocessing statistics from all rows, "
        "labels unused):"
    )
    print(search.table(top=args.top))
    print(f"best: {search.best_params_}  {search.scoring_} {search.best_score_:.4f}")
    return 0


def _print_plan_memory(path: str) -> None:
    """The runtime plan's activation memory (buffers reused after their last reader)."""
    from .runtime import load as load_runtime

    try:
        served = load_runtime(path)
    except LeptonError as exc:
        print(f"runtime plan: none ({exc})")
        return
    for n in (1, 64):
        m = served.plan_info(n)
        print(
            f"runtime plan, batch {n}: {m['steps']} steps, activation memory "
            f"{m['peak_bytes']:,} bytes in {m['buffers']} buffers "
            f"({m['requested_bytes']:,} without reuse); weights {m['weight_bytes']:,} bytes"
        )


def cmd_info(args) -> int:
    from . import backend
    from .kernels import cpu_features

    if args.model:
        from .runtime.format import inspect_lnn

        manifest = inspect_lnn(args.model)
        print(json.dumps({k: v for k, v in manifest.items() if k != "arrays"}, indent=2))
        print(f"arrays: {len(manifest.get('arrays', {}))}")
        _print_plan_memory(args.model)
        return 0
    import platform

    print(f"lepton_nn {__version__}")
    print(f"python {platform.python_version()} on {platform.machine()} ({platform.system()})")
    print(f"numpy {np.__version__}")
    for name in ("numba", "Cython"):
        try:
            mod = __import__(name)
            print(f"{name.lower()} {mod.__version__}")
        except ImportError:
            print(f"{name.lower()} not installed")
    print(f"cpu features: {' '.join(cpu_features()) or 'unknown'}")
    print(f"backends available: {', '.join(backend.available())}")
    print(f"active backend: {backend.get_backend().name}")
    from .backend.threads import blas_threads_controlled, get_num_threads

    control = "held to 1 inside parallel ops" if blas_threads_controlled() else "not controlled"
    print(f"threads: {get_num_threads()} (set_num_threads / LEPTON_NUM_THREADS); BLAS {control}")
    for kernel, impl in backend.info().items():
        print(f"  {kernel:<28} {impl}")
    return 0


# -- entry point ------------------------------------------------------------------------
def cmd_convert(args) -> int:
    from .onnx.commands import convert, format_report

    report = convert(args.model, args.output, opset=args.opset)
    print(format_report(args.model, args.output, report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lepton-nn",
        description="Train, check and serve small neural networks on tabular data.",
    )
    p.add_argument("--version", action="version", version=f"lepton_nn {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on a CSV and save it")
    t.add_argument("data")
    t.add_argument("--target", required=True)
    t.add_argument("--positive", help="label of the positive class (binary targets)")
    t.add_argument("--hidden", type=_hidden, help="hidden layer sizes, e.g. 64,32")
    t.add_argument("--epochs", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--dropout", type=float)
    t.add_argument("--batch-size", type=int, dest="batch_size")
    t.add_argument("--class-weight", choices=["balanced"], dest="class_weight")
    t.add_argument("--cv", type=int, default=0, help="also report k-fold cross-validation")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("-o", "--output", required=True)
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="metrics of a saved model on labelled rows")
    e.add_argument("model")
    e.add_argument("data")
    e.add_argument("--target", required=True)
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_evaluate)

    r = sub.add_parser("predict", help="predictions and probabilities for raw rows")
    r.add_argument("model")
    r.add_argument("data")
    r.add_argument("-o", "--output")
    r.set_defaults(fn=cmd_predict)

    d = sub.add_parser("demo", help="the credit-scoring demo on the bundled data")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("-o", "--output", help="where to save the model (default ./credit_model.lnn)")
    d.set_defaults(fn=cmd_demo)

    u = sub.add_parser("tune", help="grid or random search of the network's hyperparameters")
    u.add_argument("data")
    u.add_argument("--target", required=True)
    u.add_argument("--positive", help="label of the positive class (binary targets)")
    u.add_argument("--grid", help='e.g. "lr=1e-3,3e-3;hidden=32,64x32;dropout=0,0.2"')
    u.add_argument("--trials", type=int, default=0, help="random search with N trials instead")
    u.add_argument("--cv", type=int, default=5)
    u.add_argument("--scoring", help="metric to rank by (default roc_auc / accuracy)")
    u.add_argument("--jobs", type=int, default=None, help="worker processes (1: no pool)")
    u.add_argument("--top", type=int, default=10, help="rows of the table to print")
    u.add_argument("--seed", type=int, default=0)
    u.set_defaults(fn=cmd_tune)

    i = sub.add_parser("info", help="versions, backends, CPU features; or a model file's manifest")
    i.add_argument("model", nargs="?")
    i.set_defaults(fn=cmd_info)

    x = sub.add_parser("explain", help="why a saved tabular model predicts what it does")
    x.add_argument("model")
    x.add_argument("data")
    x.add_argument("--row", type=int, default=0, help="data row to explain (0-based)")
    x.add_argument("--target", help="target column, for global importances")
    x.add_argument("--top", type=int, default=10, help="features shown for the row")
    x.add_argument("--steps", type=int, default=50, help="integrated-gradients steps")
    x.set_defaults(fn=lambda a: __import__("lepton_nn.explain", fromlist=["_"]).cli_explain(a))

    c = sub.add_parser("compress", help="prune and/or int8-quantize a trained model")
    c.add_argument("model")
    c.add_argument("data", help="labelled rows: fine-tuning, calibration and the evaluation")
    c.add_argument("--target", required=True)
    c.add_argument("--prune", type=float, default=0.0, help="fraction of weights to remove")
    c.add_argument("--structured", action="store_true", help="prune whole units, then compact")
    c.add_argument("--fine-tune-epochs", type=int, default=0, dest="fine_tune_epochs")
    c.add_argument("--int8", help="dynamic or static (calibrated on the data)")
    c.add_argument("--max-accuracy-drop", type=float, dest="max_accuracy_drop")
    c.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    c.add_argument("-o", "--output", required=True)
    c.set_defaults(fn=cmd_compress)

    v = sub.add_parser("convert", help="ONNX -> .lnn or .lnn -> ONNX (by the extensions)")
    v.add_argument("model", help="the .onnx or .lnn file to convert")
    v.add_argument("-o", "--output", required=True, help="the .lnn or .onnx file to write")
    v.add_argument("--opset", type=int, help="ai.onnx opset of an exported file (default 17)")
    v.set_defaults(fn=cmd_convert)

    b = sub.add_parser("bench", help="benchmarks against TensorFlow, PyTorch, ONNX Runtime")
    b.add_argument(
        "--against",
        help="peers, e.g. tensorflow,torch,onnxruntime (default: all installed; 'none' for none)",
    )
    b.add_argument("--quick", action="store_true", help="short rounds, one thread count")
    b.add_argument("--threads", help="thread counts, e.g. 2,1 (default: all cores, and 1)")
    b.add_argument("--out", default="bench-results", help="report folder")
    b.add_argument("--workloads", help="subset of W1,W2,W5,W7,ACC (default: all)")
    b.add_argument("--backends", help="lepton_nn backends (default: the best one and reference)")
    b.set_defaults(fn=lambda a: __import__("lepton_nn.bench", fromlist=["main"]).main(a))
    _add_signing_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (LeptonError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        msg = str(exc) if not isinstance(exc, OSError) else f"{exc.strerror}: {exc.filename}"
        print(f"lepton-nn: error: {msg}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("lepton-nn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
