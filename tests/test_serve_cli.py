"""The serving command line: ``lepton-nn predict MODEL -`` on standard input, ``lepton-nn
serve``'s one-line errors, workers' configuration from the environment, and what serving
imports (no training code)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from serve_helpers import (
    ROOT,
    _cli,
    _config,
    _credit_rows,
    serve_files,  # noqa: F401 (the fixture "files")
)

import lepton_nn.runtime as rt


def test_predict_from_standard_input(files):
    served = rt.load(files["credit"])
    rows = _credit_rows(4)
    rows[2]["Age"] = "old"
    lines = [json.dumps(r) for r in rows]
    got = _cli("predict", files["credit"], "-", stdin="\n".join(lines) + "\n")
    assert got.returncode == 2
    out = [json.loads(line) for line in got.stdout.splitlines()]
    assert len(out) == 4 and "line 3" in out[2]["error"] and "'Age'" in out[2]["error"]
    good = [rows[i] for i in (0, 1, 3)]
    want, proba = served.predict(good).tolist(), served.predict_proba(good)
    assert [out[i]["prediction"] for i in (0, 1, 3)] == want
    classes = served.classes.tolist()
    for k, i in enumerate((0, 1, 3)):
        np.testing.assert_allclose([out[i]["probabilities"][c] for c in classes], proba[k],
                                   rtol=1e-6)  # fmt: skip

    names = list(rows[0])
    csv_in = ",".join(names) + "\n" + "\n".join(",".join(str(r[n]) for n in names) for r in good)
    got = _cli("predict", files["credit"], "-", stdin=csv_in + "\n")
    assert got.returncode == 0, got.stderr
    out = got.stdout.splitlines()
    assert out[0] == "prediction," + ",".join(f"p_{c}" for c in classes)
    assert [line.split(",")[0] for line in out[1:]] == want
    bad = csv_in.splitlines()
    bad.insert(2, bad[1].replace(str(good[1]["Age"]), "old", 1) + ",extra")
    got = _cli("predict", files["credit"], "-", stdin="\n".join(bad) + "\n")
    assert got.returncode == 2 and "<stdin> line 3: 14 values for 13 columns" in got.stderr
    out = got.stdout.splitlines()
    assert len(out) == 5 and out[2] == "," * len(classes) and out[3].split(",")[0] == want[1]


def test_predict_stdin_flushes_each_line(files):
    """One row in, its answer out before the next row is written (a pipe to a stream)."""
    cmd = [sys.executable, "-m", "lepton_nn", "predict", files["credit"], "-"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for row in _credit_rows(3):
            proc.stdin.write(json.dumps(row) + "\n")
            proc.stdin.flush()
            assert "prediction" in json.loads(proc.stdout.readline())
        proc.stdin.close()
        assert proc.wait(60) == 0  # the end of its input ends the command
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_command_errors_are_one_line(files, tmp_path):
    got = _cli("serve", str(tmp_path / "missing.lnn"))
    assert got.returncode == 2 and "missing.lnn" in got.stderr and "Traceback" not in got.stderr
    got = _cli("serve", files["credit"], "--port", "70000")
    assert got.returncode == 2 and "65535" in got.stderr
    got = _cli("serve", files["credit"], f"credit={files['mlp']}")
    assert got.returncode == 2 and "two models are named 'credit'" in got.stderr
    got = _cli("serve", files["credit"], "--batch-window-ms", "-1")
    assert got.returncode == 2 and "--batch-window-ms" in got.stderr


def test_workers_read_their_config_from_the_environment(files, monkeypatch):
    import dataclasses

    from lepton_nn.serve import server

    config = _config(files, "credit", max_batch_size=16)
    monkeypatch.setenv(server.ENV, json.dumps(dataclasses.asdict(config)))
    app = server.app_from_env()
    assert app.state.service.config == config


def test_serving_imports_no_training_code(files):
    code = (
        "import sys; from lepton_nn.serve import create_app, ServeConfig; "
        "import lepton_nn.serve.server, lepton_nn.commands.serve; "
        "bad = [m for m in sys.modules if m.startswith(('lepton_nn.autograd', 'lepton_nn.nn',"
        " 'lepton_nn.train', 'numba', 'lepton_nn.data.'))]; print(bad)"
    )
    got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert got.stdout.strip() == "[]", got.stderr
