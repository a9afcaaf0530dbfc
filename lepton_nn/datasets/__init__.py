"""Small real data sets bundled with the package (sources and licences in LICENSE-DATA.md)."""

from __future__ import annotations

from pathlib import Path

from lepton_nn.errors import DataError

_HERE = Path(__file__).resolve().parent
_FILES = {"credit_data": "credit_data.csv", "breast_cancer": "breast_cancer.csv"}


def names() -> list[str]:
    """The bundled data set names."""
    return sorted(_FILES)


def path(name: str) -> str:
    """Path of a bundled CSV by name (``"credit_data"`` or ``"credit_data.csv"``)."""
    key = name[:-4] if name.endswith(".csv") else name
    if key not in _FILES:
        raise DataError(f"no bundled data set {name!r}; available: {names()}")
    return str(_HERE / _FILES[key])


def load_credit():  # -> lepton_nn.data.Table
    """Credit scoring: 4,454 rows, 13 features (4 categorical), target ``Status`` good/bad."""
    from lepton_nn.data import read_csv

    return read_csv(path("credit_data"), target="Status")


def load_breast_cancer():  # -> lepton_nn.data.Table
    """Diagnosis: 569 rows, 30 numeric features, target ``diagnosis`` benign/malignant."""
    from lepton_nn.data import read_csv

    return read_csv(path("breast_cancer"), target="diagnosis")
