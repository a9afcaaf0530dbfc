"""lepton-nn train --dp-epsilon: one private fit, the budget printed and kept in the file."""

from __future__ import annotations

import json
import zipfile

import pytest

from lepton_nn.cli import main
from lepton_nn.datasets import path as data_path

CREDIT = str(data_path("credit_data.csv"))


def test_train_dp_prints_and_stores_epsilon(tmp_path, capsys):
    pub = tmp_path / "public.json"
    pub.write_text(
        json.dumps({"bounds": {"Age": [18, 100]}, "categories": {"Records": ["no", "yes"]}})
    )
    out = tmp_path / "dp.lnn"
    args = ["train", CREDIT, "--target", "Status", "--positive", "bad", "--epochs", "2",
            "--dp-epsilon", "3", "--dp-delta", "1e-5", "--dp-max-grad-norm", "0.5",
            "--dp-public", str(pub), "-o", str(out)]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "privacy spent: epsilon = " in text
    # Age searched within its public bounds, Records public, the 11 others DP
    assert (
        "3 columns DP histogram, 8 columns DP quantiles, 1 column DP quantiles within public "
        "bounds, 1 column public categories\n" in text
    )
    assert "(8 numeric column(s) without public bounds: their quartiles" in text
    # --epochs was given; the other flags left at their defaults take the private recipe
    assert "private recipe for the flags not given: batch_size 256, lr 0.02, dropout 0\n" in text
    with zipfile.ZipFile(out) as z:
        name = next(n for n in z.namelist() if n.endswith(".json"))
        manifest = json.loads(z.read(name))
    card = manifest["privacy"]
    assert 2.9 < card["epsilon"] <= 3.0 and card["delta"] == pytest.approx(1e-5)
    assert card["max_grad_norm"] == 0.5
    assert card["sample_rate"] == pytest.approx(256 / card["n_records"])
    assert card["steps"] == 2 * round(card["n_records"] / 256)
    assert "DP quantiles within public bounds [18, 100]" in card["preprocessing"]["columns"]["Age"]
    assert card["preprocessing"]["columns"]["Records"] == "public categories"
    # the model card carries the privacy record (lepton-nn info MODEL --card)
    assert main(["info", str(out), "--card"]) == 0
    md = capsys.readouterr().out
    assert "## Privacy" in md and "## Metrics" in md
    for fact in ("epsilon", "delta", "accountant", "noise_multiplier", "clipping_norm",
                 "sampling_rate", "steps", "preprocessing_epsilon"):  # fmt: skip
        assert f"- **{fact}**: " in md
    assert "- **clipping_norm**: 0.5" in md and "- **accountant**: rdp" in md
    assert f"- **noise_multiplier**: {card['noise_multiplier']:.4g}" in md
    assert "| Age | DP quantiles within public bounds [18, 100]" in md
    assert "| Records | public categories |" in md


def test_train_dp_refuses_what_would_spend_budget_unseen(tmp_path, capsys):
    out = str(tmp_path / "x.lnn")
    base = ["train", CREDIT, "--target", "Status", "--dp-epsilon", "1", "-o", out]
    assert main([*base, "--cv", "2"]) == 2
    assert "--cv" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"bounds": 1, "other": 2}')
    assert main([*base, "--dp-public", str(bad)]) == 2
