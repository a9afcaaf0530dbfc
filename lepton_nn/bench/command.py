"""``lepton-nn bench``: run, write the report, print where it is."""

from __future__ import annotations

import sys

from .options import Options
from .report import console_summary, write_report
from .runner import run


def main(args) -> int:
    """``lepton-nn bench``: run, write the report, print where it is."""
    try:
        opts = Options.from_args(args)
    except ValueError as exc:
        print(f"lepton-nn bench: error: {exc}", file=sys.stderr)
        return 2
    res = run(opts)
    paths = write_report(res, opts.out)
    summary = console_summary(res)
    if summary:
        print("targets:\n" + summary)
    print(f"report: {paths['markdown']}\njson:   {paths['json']}")
    if paths["charts"]:
        print(f"charts: {paths['charts']}")
    return 0
