"""``lepton-nn serve``: the real server (uvicorn on a free loopback port) called over HTTP.

Servers run in a thread of the test process (``serve_helpers.Running``, on a pre-bound
socket). Answers are checked against the runtime called directly on the same rows. The
other ``test_serve_*.py`` files: reloading and shutdown, the command line, reason codes.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from serve_helpers import (
    Running,
    _config,
    _credit_rows,
    _fire,
    httpx,
    serve_files,  # noqa: F401 (the fixture "files")
)

import lepton_nn.runtime as rt
from lepton_nn.serve import ServeConfig


def test_endpoints_answer_as_the_runtime(files):
    rows = _credit_rows(5)
    served = rt.load(files["credit"])
    with Running(_config(files, "credit", "mlp", "gru")) as s:
        c = s.client
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json()["models"] == ["credit", "mlp", "gru"]
        models = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        credit = models["credit"]
        assert credit["inputs"]["columns"] == list(served.preprocessing.names)
        assert credit["outputs"]["classes"] == served.classes.tolist()
        assert len(credit["sha256"]) == 64 and credit["version"] == credit["sha256"][:12]
        assert models["gru"]["streaming"] and not models["mlp"]["streaming"]
        assert models["mlp"]["inputs"] == {"shape": [None, 3]}

        r = c.post("/v1/models/credit:predict", json={"rows": rows})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["predictions"] == served.predict(rows).tolist()
        np.testing.assert_allclose(got["probabilities"], served.predict_proba(rows), rtol=1e-6)
        assert got["classes"] == served.classes.tolist()
        # the same rows as arrays in training column order
        arrays = [[row[col] for col in served.preprocessing.names] for row in rows]
        r2 = c.post("/v1/models/credit:predict", json={"rows": arrays}).json()
        assert r2["predictions"] == got["predictions"]
        np.testing.assert_allclose(r2["probabilities"], got["probabilities"], rtol=1e-6)

        x = np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32)
        r = c.post("/v1/models/mlp:predict", json={"rows": x.tolist()}).json()
        np.testing.assert_allclose(r["outputs"], rt.load(files["mlp"]).predict(x), rtol=1e-6)

        text = c.get("/metrics").text
        assert 'lepton_requests_total{model="credit",endpoint="predict",code="200"} 2' in text
        assert 'lepton_request_seconds_count{model="credit",endpoint="predict"} 2' in text
        assert 'lepton_batch_rows_sum{model="credit"} 10' in text
        assert "# TYPE lepton_request_seconds histogram" in text


def test_bad_input_gets_its_status_and_the_server_goes_on(files):
    with Running(_config(files, "credit", "mlp", max_body_bytes=4000)) as s:
        c = s.client
        url = "/v1/models/credit:predict"
        r = c.post(url, content=b'{"rows": [{"Age": ')
        assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
        r = c.post(url, content=json.dumps({"rows": _credit_rows(40)}).encode())
        assert r.status_code == 413 and "4000" in r.json()["error"]

        def chunks():  # no content-length: the limit is counted as the body streams in
            for _ in range(10):
                yield b" " * 1000

        assert c.post(url, content=chunks()).status_code == 413
        rows = _credit_rows(3)
        rows[2]["Age"] = "thirty"
        r = c.post(url, json={"rows": rows})
        assert r.status_code == 422
        assert "row index 2" in r.json()["error"] and "'Age'" in r.json()["error"]
        rows[1]["home"] = rows[1].pop("Home")  # a left-out column is imputed, not a typo
        r = c.post(url, json={"rows": rows})
        assert r.status_code == 422 and "column 'Home'" in r.json()["error"]
        assert "which has 'home'" in r.json()["error"]
        assert c.post(url, json={"rows": [[1, 2]]}).status_code == 422  # 2 of 13 columns
        assert c.post(url, json={"rows": []}).status_code == 422
        assert c.post(url, json={"data": []}).status_code == 422
        assert c.post(url, json=[1, 2]).status_code == 422
        assert c.post(url, json={"rows": [5]}).status_code == 422
        r = c.post("/v1/models/mlp:predict", json={"rows": [[1, 2]]})
        assert r.status_code == 422 and "(batch, 3)" in r.json()["error"]
        r = c.post("/v1/models/mlp:predict", json={"rows": [{"a": 1}]})
        assert r.status_code == 422 and "bare network" in r.json()["error"]
        assert c.post("/v1/models/nope:predict", json={"rows": []}).status_code == 404
        assert c.get(url).status_code == 405

        service = s.app.state.service  # an unexpected failure inside: 500, then business
        runner = service.runners["credit"]
        real = runner.work
        runner.work = lambda *a: 1 / 0
        r = c.post(url, json={"rows": _credit_rows(1)})
        assert r.status_code == 500 and "ZeroDivisionError" in r.json()["error"]
        runner.work = lambda v, asks: [{"predictions": {1}}] * len(asks)  # not JSON
        r = c.post(url, json={"rows": _credit_rows(1)})
        assert r.status_code == 500 and "TypeError" in r.json()["error"]
        runner.work = real
        assert c.post(url, json={"rows": _credit_rows(1)}).status_code == 200
        text = c.get("/metrics").text
        assert 'model="credit",endpoint="predict",code="422"} 7' in text
        assert 'model="mlp",endpoint="predict",code="422"} 2' in text
        assert 'model="credit",endpoint="predict",code="500"} 2' in text


def test_a_left_out_column_the_model_imputes_reads_as_missing(files, tmp_path):
    """An object row leaving out an imputed column answered 422 while the same row with
    the value empty (predict, score) or null was imputed; a column without a fill still
    answers 422 naming it."""
    from lepton_nn import io

    served = rt.load(files["credit"])
    rows = _credit_rows(4)
    left_out = [dict(r) for r in rows]
    del left_out[0]["Income"], left_out[2]["Home"], left_out[2]["Age"]  # numeric, categorical
    nulls = [{**r, **{c: None for c in served.preprocessing.names if c not in r}} for r in left_out]
    model = io.load(files["credit"])
    home = next(s for s in model.preprocessor.columns_ if s["name"] == "Home")
    home["fill"] = None  # a categorical column without a fill: missing encodes as zeros
    no_fill = str(tmp_path / "no_fill.lnn")
    io.save(model, no_fill)
    with Running(ServeConfig(models=[("credit", files["credit"]), ("no_fill", no_fill)])) as s:
        r = s.client.post("/v1/models/credit:predict", json={"rows": left_out})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["predictions"] == served.predict(nulls).tolist()
        np.testing.assert_allclose(got["probabilities"], served.predict_proba(nulls), rtol=1e-6)
        assert got["probabilities"] != served.predict_proba(rows).tolist()  # not the full rows
        r = s.client.post("/v1/models/credit:predict", json={"rows": left_out, "reasons": 2})
        want = s.client.post("/v1/models/credit:predict", json={"rows": nulls, "reasons": 2})
        assert r.status_code == 200 and r.json()["reasons"] == want.json()["reasons"]
        r = s.client.post("/v1/models/no_fill:predict", json={"rows": left_out})
        assert r.status_code == 422
        assert r.json()["error"] == (
            "row index 2, column 'Home': missing from this row (the model has no fill for it: "
            "give its value)"
        )
        left_out[2]["Home"] = None  # null is a missing value: all zeros, as in a CSV file
        r = s.client.post("/v1/models/no_fill:predict", json={"rows": left_out})
        assert r.status_code == 200, r.text


def test_batched_answers_equal_unbatched_ones(files):
    """32 concurrent requests of 1-3 rows: gathered into batches (the batch histogram shows
    fewer runs than requests) with the answers of one network run per request, to float32
    rounding (BLAS's gemv and gemm sum in different orders: ~1e-7)."""
    rng = np.random.default_rng(0)
    bodies, start = [], 0
    for _ in range(32):
        n = int(rng.integers(1, 4))
        bodies.append({"rows": _credit_rows(n, start)})
        start += n
    with Running(_config(files, "credit", batch_window_ms=150)) as b:
        batched = _fire(b.url, bodies, 32)
        text = b.client.get("/metrics").text
        im = b.app.state.service.models["credit"].current.model
        assert im.max_plans == 65  # every batch size up to 64 keeps its plan
    with Running(_config(files, "credit", batching=False)) as u:
        single = _fire(u.url, bodies, 32)
        text_u = u.client.get("/metrics").text
    runs = int(text.split('lepton_batch_rows_count{model="credit"} ')[1].split()[0])
    assert runs < 32, "no two requests were batched"
    assert 'lepton_batch_rows_count{model="credit"} 32' in text_u
    for rb, ru in zip(batched, single):
        assert rb.status_code == ru.status_code == 200
        jb, ju = rb.json(), ru.json()
        assert jb["predictions"] == ju["predictions"]
        np.testing.assert_allclose(jb["probabilities"], ju["probabilities"], rtol=1e-6)


def test_a_batch_mixing_good_and_bad_requests(files):
    """A request with a bad row fails alone (422, before batching); the others answer."""
    bodies = [{"rows": _credit_rows(2, 2 * i)} for i in range(12)]
    bodies[5]["rows"][1]["Income"] = "lots"
    with Running(_config(files, "credit", batch_window_ms=100, max_batch_size=8)) as s:
        got = _fire(s.url, bodies, 12)
    served = rt.load(files["credit"])
    for i, r in enumerate(got):
        if i == 5:
            assert r.status_code == 422 and "row index 1, column 'Income'" in r.json()["error"]
        else:
            assert r.json()["predictions"] == served.predict(bodies[i]["rows"]).tolist()


def test_step_streams_over_http(files):
    served = rt.load(files["gru"])
    x = np.random.default_rng(1).standard_normal((2, 8, 3)).astype(np.float32)
    with Running(_config(files, "gru", "mlp", max_streams=2)) as s:
        c = s.client
        for t in range(8):
            r = c.post("/v1/models/gru:step", json={"key": "s1", "x": x[0, t].tolist()})
            assert r.status_code == 200, r.text
            r2 = c.post("/v1/models/gru:step", json={"keys": [7], "x": [x[1, t].tolist()]})
            got = np.array([r.json()["outputs"][0], r2.json()["outputs"][0]])
            want = served.predict(x, lengths=np.full(2, t + 1))
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        r = c.post("/v1/models/gru:step", json={"key": "third", "x": x[0, 0].tolist()})
        assert r.status_code == 429 and "max_streams=2" in r.json()["error"]
        r = c.post("/v1/models/gru:step", json={"key": "s1", "x": [1.0, 2.0]})
        assert r.status_code == 422 and "3 features" in r.json()["error"]
        r = c.post("/v1/models/gru:step", json={"x": [1.0, 2.0, 3.0]})
        assert r.status_code == 422
        r = c.post("/v1/models/mlp:step", json={"key": "a", "x": [1.0, 2.0, 3.0]})
        assert r.status_code == 422 and "cannot stream" in r.json()["error"]
        assert 'lepton_live_streams{model="gru"} 2' in c.get("/metrics").text


def test_concurrent_streams_step_together_as_each_alone(files):
    """12 streams step concurrently (batched into shared session steps, with one request of
    the wrong width among them): each stream's outputs are its whole-sequence ones."""
    served = rt.load(files["gru"])
    x = np.random.default_rng(2).standard_normal((12, 8, 3)).astype(np.float32)
    want = np.stack([served.predict(x, lengths=np.full(12, t + 1)) for t in range(8)], axis=1)
    with Running(_config(files, "gru", batch_window_ms=50)) as s:
        barrier = threading.Barrier(12, timeout=60)
        limits = httpx.Limits(max_connections=12, max_keepalive_connections=12)
        with httpx.Client(base_url=s.url, timeout=60, limits=limits) as c:

            def stream(i: int):
                got, bad = [], None
                for t in range(8):
                    barrier.wait()
                    if i == 3 and t == 4:  # a bad request: its own 422, no step taken
                        body = {"key": f"s{i}", "x": [1.0, 2.0]}
                        bad = c.post("/v1/models/gru:step", json=body).status_code
                    body = {"key": f"s{i}", "x": x[i, t].tolist()}
                    r = c.post("/v1/models/gru:step", json=body)
                    assert r.status_code == 200, r.text
                    got.append(r.json()["outputs"][0])
                return got, bad

            with ThreadPoolExecutor(12) as pool:
                results = list(pool.map(stream, range(12)))
    assert results[3][1] == 422
    np.testing.assert_allclose([r for r, _ in results], want, rtol=1e-5, atol=1e-6)
