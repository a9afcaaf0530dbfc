"""``lepton-nn compress`` and ``TabularModel.compress``: pruned + int8 models in one file."""

from __future__ import annotations

import os

import numpy as np
import pytest

import lepton_nn
from lepton_nn import runtime
from lepton_nn.cli import main
from lepton_nn.data import read_csv
from lepton_nn.datasets import load_credit
from lepton_nn.datasets import path as data_path
from lepton_nn.tabular import TabularModel


@pytest.fixture(scope="module")
def credit_csv(tmp_path_factory):
    """About 800 rows of the bundled credit data."""
    lines = open(data_path("credit_data.csv"), encoding="utf-8").read().splitlines()
    p = tmp_path_factory.mktemp("compress") / "credit800.csv"
    p.write_text("\n".join(lines[:801]) + "\n", encoding="utf-8")
    return str(p)


@pytest.fixture(scope="module")
def trained(credit_csv, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("model") / "credit.lnn")
    argv = ["train", credit_csv, "--target", "Status", "--epochs", "8", "-o", out]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def compressed(trained, credit_csv, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("small") / "small.lnn")
    argv = ["compress", trained, credit_csv, "--target", "Status", "--prune", "0.5"]
    argv += ["--fine-tune-epochs", "2", "--int8", "static", "-o", out]
    return out, argv


def test_compress_prints_before_and_after_and_saves_a_smaller_file(trained, compressed, capsys):
    out, argv = compressed
    capsys.readouterr()
    assert main(argv) == 0
    text = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert {"before", "after", "change"} <= set(rows)
    assert "accuracy" in text and "roc_auc" in text and "accuracy cost:" in text
    before, after = rows["before"], rows["after"]
    assert int(after[1].replace(",", "")) == os.path.getsize(out)
    assert os.path.getsize(out) < os.path.getsize(trained)
    # 50 % pruned: about half the weights are left
    assert int(after[3].replace(",", "")) <= 0.55 * int(before[3].replace(",", ""))


def test_runtime_serves_the_compressed_file_on_raw_rows(compressed, credit_csv):
    out, argv = compressed
    if not os.path.exists(out):
        assert main(argv) == 0
    table = read_csv(credit_csv, target="Status")
    served = runtime.load(out)
    assert any(s.kind == "int8" for s in served.network.steps)
    loaded = lepton_nn.load(out)
    assert isinstance(loaded, TabularModel) and loaded.compression["int8"] == "static"
    a, b = served.predict(table), loaded.predict(table)
    assert np.mean(a == b) >= 0.97
    assert set(np.unique(a)) <= set(loaded.classes_)
    p = served.predict_proba(table)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)


def test_tabular_compress_round_trip_float_network_within_int8_tolerance(tmp_path):
    table = load_credit().take(np.arange(800))
    model = TabularModel(hidden=(16,), epochs=5, seed=1).fit(table)
    small = model.compress(table, prune=0.5, quantize="dynamic")
    assert model.quantized is None and small.quantized is not None  # the original is untouched
    path = tmp_path / "small.lnn"
    lepton_nn.save(small, path)
    manifest, _ = runtime.read_lnn(path)
    assert manifest["kind"] == "tabular" and "compression" in manifest["model"]
    loaded = lepton_nn.load(path)
    # the float network holds the dequantized weights: its own outputs stay close to int8's
    x = loaded.transform(table)
    z_float = loaded.network(x).data[:, 0]
    z_int8 = small.decision_function(table)
    assert np.max(np.abs(z_float - z_int8)) < 0.05 * (np.abs(z_int8).max() + 1)
    np.testing.assert_array_equal(loaded.predict(table), small.predict(table))
    np.testing.assert_array_equal(runtime.load(path).predict(table), small.predict(table))


def test_structured_pruning_compacts_the_network():
    table = load_credit().take(np.arange(400))
    model = TabularModel(hidden=(16, 8), epochs=3, seed=0).fit(table)
    small = model.compress(prune=0.5, structured=True)
    widths = [m.units for m in small.network.modules() if hasattr(m, "units")]
    assert widths == [8, 4, 1]


@pytest.mark.parametrize(
    "flags, expect",
    [
        (["--prune", "1.5"], "--prune"),
        (["--int8", "int4"], "--int8"),
        ([], "nothing to do"),
        (["--prune", "0.5", "--fine-tune-epochs", "-1"], "--fine-tune-epochs"),
        (["--structured", "--int8", "dynamic"], "--structured"),
    ],
)
def test_bad_flags_exit_2_with_one_line(trained, credit_csv, tmp_path, capsys, flags, expect):
    out = str(tmp_path / "x.lnn")
    rc = main(["compress", trained, credit_csv, "--target", "Status", *flags, "-o", out])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and expect in err
    assert not os.path.exists(out)


def test_damaged_model_file_exits_2_with_one_line(trained, credit_csv, tmp_path, capsys):
    bad = tmp_path / "bad.lnn"
    data = open(trained, "rb").read()
    bad.write_bytes(data[: len(data) // 2])
    out = str(tmp_path / "x.lnn")
    rc = main(
        ["compress", str(bad), credit_csv, "--target", "Status", "--int8", "dynamic"] + ["-o", out]
    )
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "lepton-nn: error:" in err
    assert not os.path.exists(out)
