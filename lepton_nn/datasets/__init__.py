"""Small real data sets bundled with the package (sources and licences in LICENSE-DATA.md).

``load(name)`` reads one: the tabular sets as a :class:`~lepton_nn.data.Table` with its target
set; the time-series sets as ``{"train": (x, labels), "test": (x, labels)}`` with ``x`` float32
``(N, T, C)`` in the archive's own split. ``export(name, folder)`` writes the plain CSV (for
``lepton-nn train`` and other tools): ``lepton-nn datasets export credit_data .``.

=====================  =========================================================  ============
name                   what                                                       target
=====================  =========================================================  ============
credit_data            4,454 credit applications, 13 features (4 categorical)     Status
breast_cancer          569 diagnoses, 30 numeric features                         diagnosis
digits                 1,797 8x8 grey images of digits (px0..px63, 0-16)          digit
italy_power_demand     1,096 daily power-demand curves, 24 steps, 1 channel       label
basic_motions          80 sensor recordings, 100 steps, 6 channels                label
=====================  =========================================================  ============
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from lepton_nn.errors import DataError

_HERE = Path(__file__).resolve().parent
_FILES = {
    "credit_data": "credit_data.csv",
    "breast_cancer": "breast_cancer.csv",
    "digits": "digits.csv",
    "italy_power_demand": "italy_power_demand.csv.gz",
    "basic_motions": "basic_motions.csv.gz",
}
TARGETS = {
    "credit_data": "Status",
    "breast_cancer": "diagnosis",
    "digits": "digit",
    "italy_power_demand": "label",
    "basic_motions": "label",
}
SERIES = ("italy_power_demand", "basic_motions")
#: what each set holds (``lepton-nn datasets`` prints it)
ABOUT = {
    "credit_data": "4,454 credit applications, 13 features (4 categorical)",
    "breast_cancer": "569 diagnoses, 30 numeric features",
    "digits": "1,797 8x8 grey images of digits (px0..px63, 0-16)",
    "italy_power_demand": "time series: 1,096 daily power-demand curves, 24 steps, 1 channel",
    "basic_motions": "time series: 80 sensor recordings, 100 steps, 6 channels",
}


def names() -> list[str]:
    """The bundled data set names."""
    return sorted(_FILES)


def _key(name: str) -> str:
    key = str(name).removesuffix(".gz").removesuffix(".csv")
    if key not in _FILES:
        raise DataError(f"no bundled data set {name!r}; available: {', '.join(names())}")
    return key


def path(name: str) -> str:
    """Path of a bundled file by name (``"credit_data"`` or ``"credit_data.csv"``); the
    time-series sets are stored gzipped (``.csv.gz``)."""
    return str(_HERE / _FILES[_key(name)])


def read_bytes(name: str) -> bytes:
    """The CSV's bytes (decompressed)."""
    p = path(name)
    with open(p, "rb") as f:
        raw = f.read()
    return gzip.decompress(raw) if p.endswith(".gz") else raw


def export(name: str, folder: str | os.PathLike = ".") -> str:
    """Write the data set as a plain ``NAME.csv`` into ``folder`` (which must exist); returns
    the path written."""
    key = _key(name)
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder")
    out = os.path.join(folder, f"{key}.csv")
    with open(out, "wb") as f:
        f.write(read_bytes(key))
    return out


def export_split(
    name: str, folder: str | os.PathLike = ".", holdout: float = 0.2, seed: int = 0
) -> tuple[str, str]:
    """Write a tabular data set as ``NAME_train.csv`` and ``NAME_holdout.csv`` (the rows kept
    as they are, the holdout a stratified ``holdout`` fraction drawn with ``seed``): a file to
    train on and rows the model never sees. Returns both paths."""
    from lepton_nn.data import train_test_split

    key = _key(name)
    if key in SERIES:
        raise DataError(
            f"{key} keeps the archive's own split (its 'split' column); export it whole"
        )
    if not 0.0 < holdout < 1.0:
        raise DataError(f"holdout must be a fraction in (0, 1), got {holdout}")
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder")
    lines = read_bytes(key).decode("utf-8").splitlines(keepends=True)
    header, rows = lines[0], [r for r in lines[1:] if r.strip()]
    col = header.rstrip("\r\n").split(",").index(TARGETS[key])
    labels = np.array([r.rstrip("\r\n").split(",")[col] for r in rows])
    train, held = train_test_split(
        np.arange(len(rows)), test_size=holdout, stratify=labels, seed=seed
    )
    out = []
    for part, idx in (("train", train), ("holdout", held)):
        path = os.path.join(folder, f"{key}_{part}.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(header + "".join(rows[i] for i in np.sort(idx)))
        out.append(path)
    return out[0], out[1]


def load(name: str) -> Any:
    """A bundled data set by name (see the module docstring for what each returns)."""
    key = _key(name)
    if key in SERIES:
        return load_series(read_bytes(key))
    from lepton_nn.data import read_csv

    return read_csv(path(key), target=TARGETS[key])


def load_credit():  # -> lepton_nn.data.Table
    """Credit scoring: 4,454 rows, 13 features (4 categorical), target ``Status`` good/bad."""
    return load("credit_data")


def load_breast_cancer():  # -> lepton_nn.data.Table
    """Diagnosis: 569 rows, 30 numeric features, target ``diagnosis`` benign/malignant."""
    return load("breast_cancer")


def load_series(source: bytes | str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A long-format time-series CSV (``series, split, step, c0.., label``; bytes or a path)
    as ``{split: (x float32 (N, T, C), labels (N,))}``, series in id order."""
    text = source.decode("utf-8") if isinstance(source, bytes) else Path(source).read_text()
    header = text.split("\n", 1)[0].strip().split(",")
    cols = {name: i for i, name in enumerate(header)}
    chans = [cols[n] for n in header if n.startswith("c") and n[1:].isdigit()]
    raw = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=str, ndmin=2)
    series = raw[:, cols["series"]].astype(np.int64)
    steps = raw[:, cols["step"]].astype(np.int64)
    values = raw[:, chans].astype(np.float32)
    out = {}
    for split in np.unique(raw[:, cols["split"]]):
        rows = raw[:, cols["split"]] == split
        ids, first = np.unique(series[rows], return_index=True)
        x = np.zeros((len(ids), steps.max() + 1, len(chans)), np.float32)
        x[np.searchsorted(ids, series[rows]), steps[rows]] = values[rows]
        out[str(split)] = (x, raw[rows, cols["label"]][first])
    return out
