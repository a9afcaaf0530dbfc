"""``lepton-nn train`` on data larger than memory: streamed, in bounded memory.

``train`` streams when DATA is a folder, a glob or a Parquet file, or when a CSV file would
need more than ``--memory-budget`` to read whole (``read_csv`` holds about
``READ_CSV_FACTOR`` times the file's size at its peak: every field as a Python string).
A seeded fifth of the chunks is held out for the report; the model trained on the other
chunks is the one saved (no refit on all rows, which would cost a second training).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import time

import numpy as np

from ..errors import LeptonError
from .args import positive_line

READ_CSV_FACTOR = 14  # read_csv's peak memory / file size (measured on a CSV of numbers)
REPORT_ROWS = 50_000  # held-out rows scored for the report (a seeded sample of chunks)
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30, "GB": 2**30}


def memory_size(text: str) -> int:
    """``"500MB"``, ``"2G"``, ``"1.5GB"``, ``"100000000"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMG]?B?)\s*", text.upper())
    if not m or float(m[1]) <= 0:
        raise argparse.ArgumentTypeError(f"expected a size such as 500MB or 2GB, got {text!r}")
    return int(float(m[1]) * _UNITS[m[2]])


def default_budget() -> int:
    """A quarter of this machine's RAM (1 GB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 2**30


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-budget",
        type=memory_size,
        default=None,
        dest="memory_budget",
        metavar="SIZE",
        help="stream the data (bounded memory) when reading it whole would need more than "
        "this (e.g. 2GB; default a quarter of RAM); a folder or glob always streams",
    )


def should_stream(args) -> bool:
    data = os.fspath(args.data)
    if os.path.isdir(data) or glob.has_magic(data) or data.lower().endswith((".parquet", ".pq")):
        return True
    budget = args.memory_budget or default_budget()
    return os.path.isfile(data) and os.path.getsize(data) * READ_CSV_FACTOR > budget


def train_stream(args, model_kwargs: dict) -> int:
    from .. import io
    from ..cli import _table_kwargs
    from ..data import stream
    from ..data.stream import concat_tables
    from ..tabular import TabularModel
    from . import report as R

    if args.cv or args.dp_epsilon is not None:
        raise LeptonError("--cv and --dp-epsilon need the data in memory; this data streams")
    t0 = time.perf_counter()
    kw = _table_kwargs(args)
    data = stream(args.data, target=args.target, batch_rows=65536, **kw)
    print(
        f"{args.data}: streaming {len(data.files)} file(s) in bounded memory "
        f"({data.n_rows:,} rows, {len(data.kinds)} features, target {args.target!r})"
    )
    train, held = data.split(0.2, seed=args.seed)
    model = TabularModel(**model_kwargs, seed=args.seed).fit(train)
    print(f"trained on {train.n_rows:,} rows ({model.task_}); {held.n_rows:,} rows held out")
    line = positive_line(model.labels, args.positive)  # (the rows are not in memory)
    if line:
        print(line)
    report = None
    if held.n_chunks:
        sample, rows = [], 0
        for i in np.random.default_rng(args.seed).permutation(held.n_chunks):
            sample.append(held.read_chunk(int(i)))
            rows += len(sample[-1])
            if rows >= REPORT_ROWS:
                break
        table = concat_tables(sample)
        report = R.complete(model.evaluate(table), model.task_)
        print(f"validation ({len(table):,} held-out rows):")
        print("\n".join(R.lines(report)))
    model.metrics_card = {
        "validation": None
        if report is None
        else {k: v for k, v in report.items() if k != "confusion_matrix"},
        "training": {"data": os.path.basename(os.fspath(args.data)), "rows": train.n_rows,
                     "streamed": True},
    }  # fmt: skip
    io.save(model, args.output)
    print(
        f"saved {args.output} ({os.path.getsize(args.output):,} bytes, "
        f"{time.perf_counter() - t0:.1f} s)"
    )
    return 0
