"""``lepton-nn convert`` both ways: ops found, parity against ONNX Runtime, sizes."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import lepton_nn as L  # noqa: E402
from lepton_nn import nn, runtime  # noqa: E402
from lepton_nn.cli import main  # noqa: E402


def _parity(out: str) -> float:
    return float(re.search(r"max \|difference\| (\S+)", out).group(1))


def test_convert_both_ways(tmp_path, capsys):
    model = nn.Sequential([nn.Conv2D(3, 3, activation="relu"), nn.MaxPool2D(2), nn.Flatten(),
                           nn.Dense(4, "softmax")])  # fmt: skip
    model.build((None, 1, 8, 8))
    L.save(model, tmp_path / "m.lnn")
    assert main(["convert", str(tmp_path / "m.lnn"), "-o", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "Conv x1" in out and "Gemm x1" in out and "bytes ->" in out
    assert _parity(out) <= 1e-5
    assert main(["convert", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "back.lnn")]) == 0
    out = capsys.readouterr().out
    assert _parity(out) <= 1e-5
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(runtime.load(tmp_path / "back.lnn").predict(x), model(x).data,
                               atol=1e-6)  # fmt: skip
    assert isinstance(L.load(tmp_path / "back.lnn"), nn.Sequential)


def test_convert_refuses_other_extensions(tmp_path, capsys):
    (tmp_path / "m.lnn").write_bytes(b"")
    assert main(["convert", str(tmp_path / "m.lnn"), "-o", str(tmp_path / "m.txt")]) != 0
    assert ".onnx and an .lnn" in capsys.readouterr().err


def test_convert_a_tabular_file(tmp_path, capsys):
    import warnings

    from lepton_nn.data import read_csv
    from lepton_nn.datasets import __file__ as datasets
    from lepton_nn.tabular import TabularModel

    table = read_csv(datasets.replace("__init__.py", "credit_data.csv"), target="Status")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L.save(TabularModel(hidden=(8,), epochs=1, seed=0).fit(table), tmp_path / "t.lnn")
    assert main(["convert", str(tmp_path / "t.lnn"), "-o", str(tmp_path / "t.onnx")]) == 0
    out = capsys.readouterr().out
    assert "LabelEncoder" in out and "labels equal" in out
    assert _parity(out) <= 1e-5


def test_convert_without_onnxruntime_says_how_to_check_parity(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    model = nn.Sequential([nn.Dense(2)])
    model.build((None, 3))
    L.save(model, tmp_path / "m.lnn")
    assert main(["convert", str(tmp_path / "m.lnn"), "-o", str(tmp_path / "m.onnx")]) == 0
    assert "parity: not checked (pip install onnxruntime" in capsys.readouterr().out
