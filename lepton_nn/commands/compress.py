"""``lepton-nn compress``: prune and/or int8-quantize a model saved by ``train``, report the
size, accuracy and latency before and after, and refuse a result over the accuracy budget.

Exit status: 0 written; 1 over ``--max-accuracy-drop`` (nothing written); 2 bad input.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from ..errors import LeptonError
from .args import add_verbosity, check_output, float_in, fraction, nonneg_int
from .report import fmt

EXIT_OVER_BUDGET = 1


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (the training data's fingerprint kept in the metrics card)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def _row(path: str, model, test, keys) -> dict:
    """Size, weights, nonzeros, held-out metrics and runtime batch-1 latency of one file."""
    from .. import runtime
    from ..nn import Dense

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


def _check_args(args) -> None:
    if args.prune == 0 and args.int8 is None:
        raise LeptonError("nothing to do: give --prune FRACTION and/or --int8 dynamic|static")
    if args.structured and args.prune == 0:
        raise LeptonError("--structured needs --prune FRACTION")
    if os.path.abspath(args.output) == os.path.abspath(args.model):
        raise LeptonError("-o must differ from MODEL (the original is the 'before' of the report)")
    check_output(args.output)
    if args.holdout and os.path.abspath(args.holdout) == os.path.abspath(args.data):
        raise LeptonError("--holdout must differ from DATA (rows to evaluate on, not train on)")


def _seen_note(model, data_path: str) -> str | None:
    """Whether the original model was trained on this very file (its metrics card says)."""
    card = (model.metrics_card or {}).get("training") or {}
    if card.get("sha256") and card["sha256"] == file_digest(data_path):
        return (
            "note: MODEL was trained on every row of this file, so the rows evaluated below "
            "were seen by the original model: 'before' is optimistic and so is the cost of "
            "compressing; give rows it never saw (--holdout FILE) for an unbiased comparison"
        )
    return None


def cmd_compress(args) -> int:
    from .. import io
    from ..data import read_csv, train_test_split
    from ..tabular import TabularModel

    _check_args(args)
    model = io.load(args.model)
    if not isinstance(model, TabularModel):
        raise LeptonError(f"{args.model}: not a tabular model (one saved by 'lepton-nn train')")
    regression = model.task_ == "regression"
    if regression and args.max_accuracy_drop is not None:
        raise LeptonError(f"--max-accuracy-drop: {args.model} is a regression model")
    table = read_csv(args.data, target=args.target)
    if args.holdout:  # rows the original model never saw, if it was trained on another file
        train, test = table, read_csv(args.holdout, target=args.target)
    else:
        y = np.asarray(table.target).astype(str)
        idx = np.arange(len(y))
        tr, te = train_test_split(
            idx, test_size=0.2, stratify=None if regression else y, seed=args.seed
        )
        train, test = table.take(tr), table.take(te)
    t0 = time.perf_counter()
    model.verbose = args.verbose
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
    keys = ("r2", "mae") if regression else ("accuracy", "roc_auc")
    before = _row(args.model, model, test, keys)
    after = _row(args.output, shipped, test, keys)
    _print_table(args, small, before, after, keys, took, len(train), len(test))
    if not regression and before["accuracy"] is not None:
        drop = before["accuracy"] - after["accuracy"]
        line = f"accuracy cost: {drop * 100:+.2f} points on the held-out rows"
        if args.max_accuracy_drop is not None:
            over = drop > args.max_accuracy_drop + 1e-12
            line += f" (budget {args.max_accuracy_drop * 100:.2f}: {'OVER' if over else 'within'})"
            if over:
                os.unlink(args.output)
                print(line)
                print(f"refused: {args.output} not written (over the accuracy budget)")
                return EXIT_OVER_BUDGET
        print(line)
    return 0


def _print_table(args, small, before, after, keys, took, n_tr, n_te) -> None:
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
    if args.holdout:
        print(
            f"evaluated on {args.holdout} ({n_te} rows); fine-tuning and calibration used all "
            f"{n_tr} rows of {args.data}"
        )
    else:
        print(
            f"evaluated on a held-out 20 % of {args.data} ({n_te} rows, seed {args.seed}); "
            f"fine-tuning and calibration used the other {n_tr}"
        )
    note = _seen_note(small, args.holdout or args.data)
    if note:
        print(note)
    heads = ["", "size (B)", "weights", "nonzero", *keys, "net us", "row us"]
    rows = [heads]
    for name, r in (("before", before), ("after", after)):
        rows.append(
            [
                name,
                f"{r['size']:,}",
                f"{r['weights']:,}",
                f"{r['nonzero']:,}",
                *[fmt(r[k]) for k in keys],
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


def add_parser(sub, h) -> None:
    c = sub.add_parser(
        "compress",
        help="prune and/or int8-quantize a trained model",
        description="Exit status: 0 written; 1 over --max-accuracy-drop (nothing written); "
        "2 bad input.",
        formatter_class=h,
    )
    c.add_argument("model", help="a model file saved by 'lepton-nn train'")
    c.add_argument("data", help="labelled rows: fine-tuning, calibration and the evaluation")
    c.add_argument("--target", required=True, help="target column of DATA")
    c.add_argument("--prune", type=fraction, default=0.0, help="fraction of weights to remove")
    c.add_argument("--structured", action="store_true", help="prune whole units, then compact")
    c.add_argument(
        "--fine-tune-epochs",
        type=nonneg_int,
        default=0,
        dest="fine_tune_epochs",
        help="epochs of training while pruning gradually (0: one shot)",
    )
    c.add_argument(
        "--int8", choices=["dynamic", "static"], help="int8 weights (static: calibrated on DATA)"
    )
    c.add_argument(
        "--max-accuracy-drop",
        type=float_in(0.0, 1.0),
        dest="max_accuracy_drop",
        help="accuracy budget as a fraction (0.01: one point); over it nothing is written, exit 1",
    )
    c.add_argument(
        "--holdout",
        help="labelled rows the model never saw, to evaluate on (default: 20 %% of DATA, "
        "then DATA's other 80 %% fine-tune and calibrate)",
    )
    c.add_argument("--seed", type=nonneg_int, default=0, help="seed of the 20 %% split")
    c.add_argument("-o", "--output", required=True, help="the compressed model file")
    add_verbosity(c)
    c.set_defaults(fn=cmd_compress)
