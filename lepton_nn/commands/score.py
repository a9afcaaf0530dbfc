"""``lepton-nn predict MODEL DATA... -o OUT/``: many files, Parquet, a folder or ``--dask``.

Each input file is read in batches of rows and scored into one part in the folder ``OUT``
(``part-00000.parquet`` or ``.csv``), with a line per finished file; on ``--dask`` the files
are spread over the cluster's workers (:func:`lepton_nn.distributed.score`).
"""

from __future__ import annotations

import os
import sys
import time

from ..errors import LeptonError


def add_arguments(p) -> None:
    """The scoring options of ``predict``."""
    from .args import positive_int

    p.add_argument(
        "--dask",
        metavar="ADDRESS|local:N",
        help="score the files on a Dask cluster (tcp://host:8786, or local:N worker processes)",
    )
    p.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="COLUMN",
        help="input column copied to the output beside the predictions (repeatable)",
    )
    p.add_argument(
        "--batch-rows",
        type=positive_int,
        default=65536,
        help="rows read and scored at a time per file (bounds the memory)",
    )
    p.add_argument(
        "--format",
        choices=("parquet", "csv"),
        help="of the output parts (default: Parquet when pyarrow is installed, else CSV)",
    )


def cmd_score(args) -> int:
    from ..distributed import score

    if not args.output:
        raise LeptonError("predict: with several files, Parquet or a folder, -o names a folder")
    if os.path.isfile(args.output):
        raise LeptonError(f"-o {args.output}: a file exists there; give a folder for the parts")
    executor = None
    if args.dask:
        from ..distributed import dask_executor

        executor = dask_executor(args.dask)
    t0 = time.perf_counter()

    def progress(done: int, total: int, part: dict) -> None:
        print(
            f"file {done}/{total} ({time.perf_counter() - t0:.1f} s): {part['file']} -> "
            f"{part['out']} ({part['rows']:,} rows)",
            file=sys.stderr,
            flush=True,
        )

    try:
        s = score(
            args.model,
            args.data,
            args.output,
            client=executor,
            key_columns=args.key,
            batch_rows=args.batch_rows,
            format=args.format,
            progress=progress,
        )
    finally:
        if executor is not None:
            executor.shutdown()
    rate = s["rows"] / s["seconds"] if s["seconds"] > 0 else float("inf")
    print(
        f"scored {s['rows']:,} rows of {s['files']} file(s) into {args.output} in "
        f"{s['seconds']:.1f} s ({rate:,.0f} rows/s)"
    )
    return 0
