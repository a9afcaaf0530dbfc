"""``lepton-nn datasets [list | export NAME [FOLDER]]``: the bundled data sets, as files."""

from __future__ import annotations

import os

from .args import float_in, nonneg_int


def cmd_datasets(args) -> int:
    from .. import datasets

    if args.action == "export":
        if not args.name:
            raise datasets.DataError("datasets export: give a NAME; see 'lepton-nn datasets'")
        names = datasets.names() if args.name == "all" else [args.name]
        for name in names:
            if args.holdout:
                outs = datasets.export_split(name, args.folder, args.holdout, args.seed)
            else:
                outs = (datasets.export(name, args.folder),)
            for out in outs:
                print(f"wrote {out} ({os.path.getsize(out):,} bytes)")
        return 0
    for name in datasets.names():
        target = f"target {datasets.TARGETS[name]}"
        print(f"{name:<19} {target:<17} {datasets.ABOUT[name]}")
    print("time series export in long form (a row per series and step: series, split, step,")
    print("channels, label) for datasets.load_series() and examples/, not for 'lepton-nn train'")
    print("licences: lepton_nn/datasets/LICENSE-DATA.md; export: lepton-nn datasets export NAME")
    return 0


def add_parser(sub, h) -> None:
    d = sub.add_parser(
        "datasets",
        help="list the bundled data sets, or write one as a CSV file",
        formatter_class=h,
    )
    d.add_argument(
        "action",
        nargs="?",
        choices=["list", "export"],
        default="list",
        help="list the data sets, or export NAME to FOLDER as CSV",
    )
    d.add_argument("name", nargs="?", help="data set to export ('all' for every one)")
    d.add_argument("folder", nargs="?", default=".", help="existing folder to write NAME.csv in")
    d.add_argument(
        "--holdout",
        type=float_in(0.0, 1.0, low_open=True, high_open=True),
        help="also split: NAME_train.csv and a stratified NAME_holdout.csv of this fraction",
    )
    d.add_argument("--seed", type=nonneg_int, default=0, help="seed of the --holdout split")
    d.set_defaults(fn=cmd_datasets)
