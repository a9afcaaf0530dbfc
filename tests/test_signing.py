"""Digests and Ed25519 signatures of model files, through both loaders and the CLI."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import lepton_nn as L
from lepton_nn import nn
from lepton_nn.cli import main
from lepton_nn.errors import ModelFormatError
from lepton_nn.runtime import load as rt_load
from lepton_nn.runtime.format import read_lnn, write_lnn

pytest.importorskip("cryptography")
from lepton_nn.runtime import signing  # noqa: E402


@pytest.fixture()
def model_file(tmp_path):
    L.set_seed(0)
    model = nn.Sequential([nn.Dense(3, "relu"), nn.Dense(2, "softmax")])
    model.build((None, 4))
    path = tmp_path / "m.lnn"
    L.save(model, path)
    return path


def _edit_manifest(path, edit):
    """Rewrite the manifest member the way a hand edit would (arrays and digest kept)."""
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    manifest = json.loads(members["manifest.json"])
    edit(manifest)
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["model"]["architecture"]["config"]["layers"][1]["config"].update(
            activation="sigmoid"
        ),
        lambda m: m.update(seed=m.get("seed", 0) + 1),
        lambda m: m["model"]["params"].reverse(),
    ],
)
def test_hand_edits_are_caught_by_the_digest(model_file, edit):
    _edit_manifest(model_file, edit)
    for loader in (L.load, rt_load, read_lnn):
        with pytest.raises(ModelFormatError, match="digest mismatch"):
            loader(model_file)


def test_sign_and_verify_in_both_loaders(tmp_path, model_file):
    key, pub = signing.keygen(tmp_path / "alice")
    _, other = signing.keygen(tmp_path / "mallory")
    for loader in (L.load, rt_load):
        with pytest.raises(ModelFormatError, match="not signed"):
            loader(model_file, trusted_keys=[pub])
    kid = signing.sign_file(model_file, key)
    assert kid == signing.key_id(pub)
    x = np.ones((2, 4), np.float32)
    for loader in (L.load, rt_load):
        loader(model_file)  # a signed file loads without trusted keys too
        got = loader(model_file, trusted_keys=[open(pub, "rb").read()])
        assert got is not None
        loader(model_file, trusted_keys=[other, pub])  # any one of them
        with pytest.raises(ModelFormatError, match="does not verify"):
            loader(model_file, trusted_keys=[other])
    np.testing.assert_allclose(
        rt_load(model_file, trusted_keys=[pub]).predict(x), L.load(model_file)(x).data, 1e-6
    )


def test_resigned_or_altered_files_are_refused(tmp_path, model_file):
    key, pub = signing.keygen(tmp_path / "alice")
    mkey, _ = signing.keygen(tmp_path / "mallory")
    signing.sign_file(model_file, key)
    # an attacker edits the file and recomputes the digest: the signature no longer fits
    manifest, arrays = read_lnn(model_file)
    body = {
        k: v
        for k, v in manifest.items()
        if k not in ("format", "format_version", "arrays", "digest")
    }
    body["model"]["architecture"]["config"]["layers"][1]["config"]["activation"] = "sigmoid"
    write_lnn(tmp_path / "edited.lnn", body, arrays)
    with pytest.raises(ModelFormatError, match="does not verify"):
        rt_load(tmp_path / "edited.lnn", trusted_keys=[pub])
    # ... or re-signs it with a key of their own
    signing.sign_file(tmp_path / "edited.lnn", mkey)
    with pytest.raises(ModelFormatError, match="does not verify"):
        L.load(tmp_path / "edited.lnn", trusted_keys=[pub])


def test_cli_keygen_sign_verify(tmp_path, model_file, capsys):
    name = str(tmp_path / "k")
    assert main(["keygen", name]) == 0
    assert main(["keygen", name]) == 2  # never overwrites a key
    assert "not overwriting" in capsys.readouterr().err
    assert main(["verify", str(model_file), "--public-key", name + ".pub"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not signed" in err
    out = tmp_path / "signed.lnn"
    assert main(["sign", str(model_file), "--key", name + ".key", "-o", str(out)]) == 0
    assert main(["verify", str(out), "--public-key", name + ".pub"]) == 0
    assert main(["sign", str(model_file), "--key", name + ".pub"]) == 2  # a public key
    assert "signature OK" in capsys.readouterr().out


def test_cli_predict_on_a_bare_network_is_one_line(tmp_path, model_file, capsys):
    csv = tmp_path / "x.csv"
    csv.write_text("a,b,c,d\n1,2,3,4\n")
    assert main(["predict", str(model_file), str(csv)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bare network" in err


def test_cli_evaluate_on_a_bare_network_is_one_line(tmp_path, model_file, capsys):
    csv = tmp_path / "x.csv"
    csv.write_text("a,b,c,d,y\n1,2,3,4,0\n")
    assert main(["evaluate", str(model_file), str(csv), "--target", "y"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bare network" in err
