"""Reason codes over HTTP (``"reasons": K`` in a predict request): the same as
``lepton_nn.risk.reason_codes`` and the runtime's explainer, batched or not, refused clearly,
and served without training code."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from serve_helpers import (
    ROOT,
    Running,
    _config,
    _credit,
    _credit_rows,
    _fire,
    _plain,
    serve_files,  # noqa: F401 (the fixture "files")
)

import lepton_nn as L
import lepton_nn.runtime as rt
from lepton_nn.serve import ServeConfig


def _codes(triples) -> list:
    """Reason codes as JSON gives them back: [column, value, contribution] lists."""
    return [[list(t) for t in row] for row in triples]


def _same_codes(got: list, want: list) -> None:
    assert [[t[:2] for t in row] for row in got] == [[t[:2] for t in row] for row in want]
    flat = [t[2] for row in got for t in row]
    np.testing.assert_allclose(flat, [t[2] for row in want for t in row], rtol=1e-9, atol=0)


def test_reasons_equal_risk_reason_codes(files):
    from lepton_nn.risk import reason_codes

    rows = _credit_rows(8, 40)
    served = rt.load(files["credit"])
    with Running(_config(files, "credit")) as s:
        c = s.client
        assert {m["name"]: m["reasons"] for m in c.get("/v1/models").json()["models"]} == {
            "credit": True
        }
        url = "/v1/models/credit:predict"
        r = c.post(url, json={"rows": rows, "reasons": 3})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["predictions"] == served.predict(rows).tolist()
        want = _codes(reason_codes(files["credit"], rows, 3))
        assert any(len(row) == 3 for row in want)  # the check below is not about empty lists
        _same_codes(got["reasons"], want)
        for adverse in ("good", "bad"):
            r = c.post(url, json={"rows": rows, "reasons": 2, "adverse": adverse}).json()
            _same_codes(r["reasons"], _codes(reason_codes(served, rows, 2, adverse=adverse)))
        arrays = [[row[col] for col in served.preprocessing.names] for row in rows]
        r = c.post(url, json={"rows": arrays, "reasons": 3}).json()
        _same_codes(r["reasons"], want)
        assert "reasons" not in c.post(url, json={"rows": rows}).json()


def test_batched_reasons_equal_unbatched(files):
    """24 concurrent requests, some asking for reasons (various K and adverse classes), some
    not: each gets what it asked for, the same as when every request runs alone."""
    rng = np.random.default_rng(1)
    bodies, start = [], 0
    for i in range(24):
        n = int(rng.integers(1, 4))
        body: dict = {"rows": _credit_rows(n, start)}
        start += n
        if i % 3:
            body["reasons"] = int(rng.integers(1, 6))
            if i % 3 == 2:
                body["adverse"] = "good"
        bodies.append(body)
    with Running(_config(files, "credit", batch_window_ms=150)) as b:
        batched = _fire(b.url, bodies, 24)
        text = b.client.get("/metrics").text
    with Running(_config(files, "credit", batching=False)) as u:
        single = _fire(u.url, bodies, 24)
    runs = int(text.split('lepton_batch_rows_count{model="credit"} ')[1].split()[0])
    assert runs < 24, "no two requests were batched"
    for body, rb, ru in zip(bodies, batched, single):
        assert rb.status_code == ru.status_code == 200, rb.text
        jb, ju = rb.json(), ru.json()
        assert jb["predictions"] == ju["predictions"]
        assert ("reasons" in jb) == ("reasons" in ju) == ("reasons" in body)
        if "reasons" in body:
            assert jb["reasons"] == ju["reasons"]  # computed on the request's rows alone
            assert len(jb["reasons"]) == len(body["rows"])
            assert all(len(row) <= body["reasons"] for row in jb["reasons"])


def test_reasons_refused_clearly(files, tmp_path):
    from lepton_nn.tabular import TabularModel

    model = TabularModel(hidden=(4,), epochs=1, seed=0, positive="bad").fit(_credit())
    model.profile = None  # a file from before profiles were written
    files = {**files, "old": str(tmp_path / "old.lnn")}
    L.save(model, files["old"])
    rows = _credit_rows(2)
    with Running(_config(files, "credit", "mlp", "old")) as s:
        c = s.client
        url = "/v1/models/credit:predict"
        n_cols = len(rt.load(files["credit"]).preprocessing.names)
        for k in (0, -1, n_cols + 1, "3", True, None, 2.0):
            r = c.post(url, json={"rows": rows, "reasons": k})
            assert r.status_code == 422, k
            assert f"'reasons' must be an integer from 1 to {n_cols}" in r.json()["error"]
        assert c.post(url, json={"rows": rows, "reasons": n_cols}).status_code == 200
        r = c.post(url, json={"rows": rows, "reasons": 2, "adverse": "ugly"})
        assert r.status_code == 422 and "not one of the classes" in r.json()["error"]
        r = c.post(url, json={"rows": rows, "adverse": "good"})
        assert r.status_code == 422 and "'adverse' goes with 'reasons'" in r.json()["error"]
        r = c.post("/v1/models/mlp:predict", json={"rows": [[1, 2, 3]], "reasons": 2})
        assert r.status_code == 422
        assert "cannot give reasons" in r.json()["error"] and "binary" in r.json()["error"]
        r = c.post("/v1/models/old:predict", json={"rows": rows, "reasons": 2})
        assert r.status_code == 422 and "no training profile" in r.json()["error"]
        assert "reasons" not in c.post("/v1/models/old:predict", json={"rows": rows}).json()
        r = c.post(url, json={"rows": rows, "reasons": 2})  # the server goes on
        assert r.status_code == 200 and len(r.json()["reasons"]) == 2


def test_multiclass_reasons_over_http(files, tmp_path):
    """A 5-class model: reasons toward each row's predicted class by default, or toward the
    class asked for; the same as the runtime's explainer on the same rows."""
    from lepton_nn.runtime.reasons import Reasons
    from lepton_nn.tabular import TabularModel

    table = _credit()
    y = table.data["Marital"]
    keep = np.array([v is not None for v in y])
    data = {c: table.data[c][keep] for c in table.columns if c != "Marital"}
    path = str(tmp_path / "marital.lnn")
    L.save(TabularModel(hidden=(8,), epochs=1, seed=0).fit(data, y[keep]), path)
    rows = [{c: _plain(data[c][i]) for c in data} for i in range(0, 300, 30)]
    im = rt.load(path)
    rv = Reasons(im)
    url = "/v1/models/marital:predict"
    with Running(ServeConfig(models=[("marital", path)], batching=False)) as s:
        assert s.client.get("/v1/models").json()["models"][0]["reasons"] is True
        r = s.client.post(url, json={"rows": rows, "reasons": 3})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == im.predict(rows).tolist()
        _same_codes(r.json()["reasons"], _codes(rv(rows, 3)))
        r = s.client.post(url, json={"rows": rows, "reasons": 2, "adverse": "widow"})
        _same_codes(r.json()["reasons"], _codes(rv(rows, 2, adverse="widow")))
        default = s.client.post(url, json={"rows": rows, "reasons": 2}).json()["reasons"]
        assert r.json()["reasons"] != default  # not every row is predicted a widow
        r = s.client.post(url, json={"rows": rows, "reasons": 2, "adverse": "engaged"})
        assert r.status_code == 422 and "not one of the classes" in r.json()["error"]


def test_serving_reasons_imports_no_training_code(files):
    code = (
        "import json, sys\n"
        "from starlette.testclient import TestClient\n"
        "from lepton_nn.serve import create_app, ServeConfig\n"
        f"app = create_app(ServeConfig(models=[('credit', {files['credit']!r})]))\n"
        f"rows = json.loads({json.dumps(_credit_rows(3))!r})\n"
        "with TestClient(app) as c:\n"
        "    r = c.post('/v1/models/credit:predict', json={'rows': rows, 'reasons': 3})\n"
        "    assert r.status_code == 200 and len(r.json()['reasons']) == 3, r.text\n"
        "bad = [m for m in sys.modules if m.startswith(('lepton_nn.autograd', 'lepton_nn.nn',"
        " 'lepton_nn.ops', 'lepton_nn.train', 'lepton_nn.tabular', 'lepton_nn.risk',"
        " 'numba', 'lepton_nn.data.'))]\n"
        "print(bad)\n"
    )
    got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert got.returncode == 0 and got.stdout.strip() == "[]", got.stdout + got.stderr
