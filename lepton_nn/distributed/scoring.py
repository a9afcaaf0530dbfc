"""Scoring datasets larger than memory with a saved model, here or on a Dask cluster.

The model travels as its ``.lnn`` bytes (scattered once to every worker, never pickled code)
and each worker loads it once through :func:`lepton_nn.runtime.load`, which re-validates the
file and checks its digest. Every input file becomes one output part (``part-00000.parquet``
...), written batch by batch: a worker holds one batch of rows at a time.

Output columns: the key columns asked for (as read), ``prediction`` (label or value) and, for
classifiers, ``p_<class>`` per class.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .sources import iter_batches, list_files

__all__ = ["score", "scorer", "predict_frame", "predict_columns"]

_models: dict[str, Any] = {}  # digest -> InferenceModel, per process (a worker loads once)


def _model(blob: bytes, digest: str) -> Any:
    model = _models.get(digest)
    if model is None:
        from ..runtime import load

        model = _models[digest] = load(blob)
    return model


def predict_columns(model: Any, rows: Any) -> dict[str, np.ndarray]:
    """``model.predict_columns(rows)`` (see :class:`lepton_nn.runtime.InferenceModel`)."""
    return model.predict_columns(rows)


def predict_frame(model: Any, df: Any, key_columns: Sequence[str] | None = None) -> Any:
    """``model.predict_frame(df, key_columns)``: keys, predictions and probabilities of the
    rows of a pandas DataFrame, its index kept (so ``map_partitions`` lines up)."""
    return model.predict_frame(df, key_columns or ())


class scorer:  # noqa: N801 - used like a function: ddf.map_partitions(scorer("m.lnn"))
    """A picklable partition scorer: ``scorer(path)(df) == predict_frame(load(path), df)``.

    It pickles as the model file's bytes (never as code objects) and loads the model once
    per process, so ``dask_df.map_partitions(scorer("m.lnn", ["id"]))`` or Spark's
    ``mapInPandas`` ship the file once per task graph.
    """

    def __init__(self, model_path: Any, key_columns: Sequence[str] | None = None):
        with open(model_path, "rb") as f:
            self.blob = f.read()
        self.digest = hashlib.sha256(self.blob).hexdigest()
        self.key_columns = list(key_columns or ())
        _model(self.blob, self.digest)  # a bad file fails here, not on a worker

    def __call__(self, df: Any) -> Any:
        return predict_frame(_model(self.blob, self.digest), df, self.key_columns)


def _columns(blob: bytes, digest: str, key_columns: list[str]) -> list[str]:
    names = list(_model(blob, digest).preprocessing.names)
    return names + [c for c in key_columns if c not in names]


def score_file(
    blob: bytes,
    digest: str,
    path: str,
    out_path: str,
    key_columns: list[str],
    batch_rows: int,
) -> dict[str, Any]:
    """Score one input file into one output part, batch by batch (runs on a worker)."""
    model = _model(blob, digest)
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    with _Writer(out_path) as w:
        cols, na = _columns(blob, digest, key_columns), sorted(model.preprocessing.na)
        for batch in iter_batches(path, batch_rows, cols, na):
            keys = {c: batch.raw[c] for c in key_columns}
            w.write({**keys, **predict_columns(model, batch)})
            n += batch.n_rows
    return {
        "file": path,
        "out": out_path,
        "rows": n,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,  # of this process (all its threads)
    }


class _Writer:
    """Appends column batches to a Parquet file (pyarrow) or a CSV file; atomic on close."""

    def __init__(self, path: str):
        self.path, self.tmp = path, f"{path}.{os.getpid()}.tmp"
        self.parquet = path.endswith(".parquet")
        self.w: Any = None
        self.f: Any = None

    def __enter__(self) -> _Writer:
        return self

    def write(self, cols: dict[str, np.ndarray]) -> None:
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table(
                {k: pa.array(v.tolist() if v.dtype == object else v) for k, v in cols.items()}
            )
            if self.w is None:
                self.w = pq.ParquetWriter(self.tmp, table.schema)
            self.w.write_table(table)
            return
        import csv

        if self.f is None:
            self.f = open(self.tmp, "w", newline="", encoding="utf-8")
            self.w = csv.writer(self.f)
            self.w.writerow(list(cols))
        self.w.writerows(zip(*(v.tolist() for v in cols.values())))

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if self.w is not None and self.parquet:
            self.w.close()
        if self.f is not None:
            self.f.close()
        if kind is None and os.path.exists(self.tmp):
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)


def score(
    model_path: Any,
    source: Any,
    out: Any,
    client: Any = None,
    key_columns: Sequence[str] | None = None,
    *,
    batch_rows: int = 65536,
    format: str | None = None,  # noqa: A002 - the user's word for it
    progress: Any = None,
) -> dict[str, Any]:
    """Score every file of ``source`` (a Parquet/CSV file, folder, glob or list) into the
    folder ``out`` (``part-00000.parquet``... one per input file, in input order).

    ``client``: a ``distributed.Client`` or a :class:`~.executors.DaskExecutor` (files are
    scored in parallel on its workers), or ``None`` (here, one file after another).
    ``format``: ``"parquet"`` (needs pyarrow) or ``"csv"``; default Parquet when pyarrow
    imports. ``progress(done, total, summary)`` is called as each file finishes.

    Returns ``{"files", "rows", "seconds", "parts": [per-file summaries]}``.
    """
    files = list_files(source)
    fmt = format or _default_format()
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format must be 'parquet' or 'csv', got {fmt!r}")
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    scoring = scorer(model_path)  # reads and validates the file here first
    keys = list(key_columns or ())
    outs = [os.path.join(out, f"part-{i:05d}.{fmt}") for i in range(len(files))]
    args = [(f, o, keys, int(batch_rows)) for f, o in zip(files, outs)]
    t0 = time.perf_counter()
    parts: list[dict[str, Any]] = []
    if client is None:
        for a in args:
            parts.append(score_file(scoring.blob, scoring.digest, *a))
            if progress is not None:
                progress(len(parts), len(files), parts[-1])
    else:
        parts = _on_dask(getattr(client, "client", client), scoring, args, progress)
    return {
        "files": len(files),
        "rows": sum(p["rows"] for p in parts),
        "seconds": time.perf_counter() - t0,
        "parts": parts,
    }


def _on_dask(client: Any, scoring: scorer, args: list, progress: Any) -> list[dict[str, Any]]:
    from distributed import as_completed

    [blob] = client.scatter([scoring.blob], broadcast=True, hash=False)  # once per worker
    futures = [client.submit(score_file, blob, scoring.digest, *a, pure=False) for a in args]
    order = {f.key: i for i, f in enumerate(futures)}
    parts: list[Any] = [None] * len(futures)
    for done, f in enumerate(as_completed(futures), start=1):
        parts[order[f.key]] = f.result()
        if progress is not None:
            progress(done, len(futures), parts[order[f.key]])
    return parts


def _default_format() -> str:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return "csv"
    return "parquet"
