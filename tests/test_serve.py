"""``lepton-nn serve``: the real server (uvicorn on a free loopback port) called over HTTP.

Servers run in a thread of the test process (``uvicorn.Server`` on a pre-bound socket), or
as a subprocess where signals matter (graceful shutdown). Answers are checked against the
runtime called directly on the same rows.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

import uvicorn  # noqa: E402
from conftest import PKG_PARENT  # noqa: E402

import lepton_nn as L  # noqa: E402
import lepton_nn.runtime as rt  # noqa: E402
from lepton_nn import nn  # noqa: E402
from lepton_nn.datasets import load_credit  # noqa: E402
from lepton_nn.serve import ServeConfig, create_app  # noqa: E402

ROOT = str(PKG_PARENT)  # subprocesses import the lepton_nn these tests import


@functools.lru_cache(maxsize=1)
def _credit():
    return load_credit()


def _credit_rows(n: int, start: int = 0) -> list[dict]:
    table = _credit()
    rows = []
    for i in range(start, start + n):
        rows.append({c: _plain(table.data[c][i]) for c in table.columns})
    return rows


def _plain(v):
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and v != v else v


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two versions of a small credit model, a GRU network and an MLP (bare networks)."""
    from lepton_nn.tabular import TabularModel

    folder = tmp_path_factory.mktemp("serve")
    table = _credit()
    out = {}
    for name, seed in (("credit", 0), ("credit_b", 1)):
        model = TabularModel(hidden=(16,), epochs=2, seed=seed, positive="bad").fit(table)
        out[name] = str(folder / f"{name}.lnn")
        L.save(model, out[name])
    L.set_seed(0)
    gru = nn.Sequential([nn.GRU(6, return_sequences=True), nn.GRU(5), nn.Dense(2, "softmax")])
    gru.build((None, 8, 3))
    gru.eval()
    out["gru"] = str(folder / "gru.lnn")
    L.save(gru, out["gru"])
    mlp = nn.Sequential([nn.Dense(4, "relu"), nn.Dense(2)])
    mlp.build((None, 3))
    mlp.eval()
    mlp(np.zeros((1, 3), np.float32))
    out["mlp"] = str(folder / "mlp.lnn")
    L.save(mlp, out["mlp"])
    return out


class Running:
    """A uvicorn server in a thread on a free loopback port; ``client`` talks to it."""

    def __init__(self, config: ServeConfig) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.app = create_app(config)
        cfg = uvicorn.Config(self.app, log_level="error", lifespan="on", access_log=False)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _config(files, *names, **kw) -> ServeConfig:
    return ServeConfig(models=[(n, files[n]) for n in names], **kw)


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


def _fire(url: str, bodies: list[dict], threads: int) -> list:
    """POST every body at once from ``threads`` threads (one shared client, a connection
    each)."""
    barrier = threading.Barrier(min(threads, len(bodies)), timeout=60)
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx.Client(base_url=url, timeout=60, limits=limits) as c:

        def one(i: int):
            barrier.wait()
            return c.post("/v1/models/credit:predict", json=bodies[i])

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, range(len(bodies))))


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


def _replace(src: str, dst: str) -> None:
    """Write ``src``'s bytes to ``dst`` atomically (temp file + rename), as saves do."""
    tmp = dst + ".tmp"
    with open(src, "rb") as f, open(tmp, "wb") as g:
        g.write(f.read())
    os.replace(tmp, dst)


def test_reload_under_load_fails_no_request(files, tmp_path):
    """Judged by causality, never by how long a step takes on a loaded machine: a request
    sent after an answer of the new version was received gets the new version; one answered
    before the file was replaced, the old; one sent after the damaged file's failed reload
    was counted, still the new."""
    path = str(tmp_path / "live.lnn")
    _replace(files["credit"], path)
    a, b = rt.load(files["credit"]), rt.load(files["credit_b"])
    rows = _credit_rows(4)
    want = {"a": a.predict_proba(rows), "b": b.predict_proba(rows)}
    config = ServeConfig(models=[("credit", path)], reload=True, reload_interval=0.05)
    with Running(config) as s:
        v0 = s.client.get("/v1/models").json()["models"][0]["sha256"]
        stop, answers, failures = threading.Event(), [], []

        def hammer():
            with httpx.Client(base_url=s.url, timeout=60) as c:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        r = c.post("/v1/models/credit:predict", json={"rows": rows})
                    except httpx.HTTPError as e:  # a failed request, reported below
                        failures.append(e)
                        return
                    answers.append((sent, time.monotonic(), r))

        def wait_for(condition, what):  # a guard against hanging, not a timed assertion
            deadline = time.monotonic() + 120
            while not condition():
                assert not failures and time.monotonic() < deadline, (what, failures)
                time.sleep(0.02)

        def sent_after(t):
            return sum(sent > t for sent, _, _ in list(answers))

        def reloads(outcome):
            line = f'lepton_reloads_total{{model="credit",outcome="{outcome}"}} '
            text = s.client.get("/metrics").text
            return [int(ln[len(line) :]) for ln in text.splitlines() if ln.startswith(line)]

        workers = [threading.Thread(target=hammer) for _ in range(4)]
        for w in workers:
            w.start()
        wait_for(lambda: len(answers) >= 20, "no answers before the swap")
        swapped = time.monotonic()
        _replace(files["credit_b"], path)
        wait_for(lambda: s.client.get("/v1/models").json()["models"][0]["sha256"] != v0, "swap")
        seen = time.monotonic()  # the new version is served from here on
        wait_for(lambda: sent_after(seen) >= 20, "no answers after the swap")
        (tmp_path / "bad").write_bytes(b"not a model")
        _replace(str(tmp_path / "bad"), path)  # a damaged file: the served version stays
        wait_for(lambda: reloads("failed") == [1], "the damaged file was never tried")
        tried = time.monotonic()
        wait_for(lambda: sent_after(tried) >= 20, "no answers after the failed reload")
        stop.set()
        for w in workers:
            w.join()
        info = s.client.get("/v1/models").json()["models"][0]
        assert reloads("ok") == [1] and reloads("failed") == [1]
    assert not failures
    assert all(r.status_code == 200 for _, _, r in answers), {r.status_code for *_, r in answers}
    answers.sort(key=lambda a: a[0])  # in the order sent (threads append as they are scheduled)
    new = info["version"]
    versions = [r.json()["version"] for _, _, r in answers]
    assert versions[0] == v0[:12] != new and versions[-1] == new
    assert {v for (_, got, _), v in zip(answers, versions) if got < swapped} == {v0[:12]}
    first_b = min(got for (_, got, _), v in zip(answers, versions) if v == new)
    after = {v for (sent, _, _), v in zip(answers, versions) if sent > first_b}
    assert after == {new}  # no going back: sent after a new answer, a new answer
    assert {v for (sent, _, _), v in zip(answers, versions) if sent > seen} == {new}
    assert {v for (sent, _, _), v in zip(answers, versions) if sent > tried} == {new}
    for (_, _, r), v in zip(answers, versions):
        key = "a" if v == v0[:12] else "b"
        np.testing.assert_allclose(r.json()["probabilities"], want[key], rtol=1e-6)
    assert info["reloads"] == 1 and info["version"] == new


def test_reload_sees_a_new_file_of_the_same_size_and_mtime(files, tmp_path):
    """An atomic save within one tick of the kernel's coarse file clock keeps the mtime; of
    the same size, only the inode tells the new file."""
    mlp = nn.Sequential([nn.Dense(4, "relu"), nn.Dense(2)])
    mlp.build((None, 3))
    mlp.eval()
    mlp(np.zeros((1, 3), np.float32))
    first, other = str(tmp_path / "first.lnn"), str(tmp_path / "other.lnn")
    L.save(mlp, first)
    base = [p.data.copy() for p in mlp.parameters()]
    for k in range(1, 200):  # new weights of the same file size (the size varies a little)
        for p, w in zip(mlp.parameters(), base):
            p.data[...] = w + k / 64
        L.save(mlp, other)
        if os.path.getsize(other) == os.path.getsize(first):
            break
    assert os.path.getsize(other) == os.path.getsize(first)  # else the test is void
    path = str(tmp_path / "live.lnn")
    _replace(first, path)
    config = ServeConfig(models=[("m", path)], reload=True, reload_interval=0.02)
    with Running(config) as s:
        v0 = s.client.get("/v1/models").json()["models"][0]["sha256"]
        st = os.stat(path)
        tmp = path + ".tmp"
        with open(other, "rb") as f, open(tmp, "wb") as g:
            g.write(f.read())
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # the rename keeps this mtime
        os.replace(tmp, path)
        assert (os.stat(path).st_mtime_ns, os.stat(path).st_size) == (st.st_mtime_ns, st.st_size)
        deadline = time.monotonic() + 60  # a hang guard: a missed swap never comes
        while (info := s.client.get("/v1/models").json()["models"][0])["sha256"] == v0:
            assert time.monotonic() < deadline, "the new file was never loaded"
            time.sleep(0.02)
        x = [[0.5, -1.0, 2.0]]
        got = s.client.post("/v1/models/m:predict", json={"rows": x}).json()
    assert info["reloads"] == 1 and got["version"] == info["version"]
    np.testing.assert_allclose(got["outputs"], rt.load(other).predict(np.array(x, np.float32)),
                               rtol=1e-6)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_graceful_shutdown_answers_requests_in_flight(files):
    """SIGTERM while 8 requests wait in a long batch window: each is answered, then the
    process ends."""
    port = _free_port()
    cmd = [sys.executable, "-m", "lepton_nn", "serve", files["credit"], "--port", str(port),
           "--batch-window-ms", "1500"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        bodies = [{"rows": _credit_rows(1, i)} for i in range(8)]
        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(_fire, url, bodies, 8)
            time.sleep(0.7)  # the requests are in, waiting for the window to close
            proc.send_signal(signal.SIGTERM)
            got = fut.result(60)
        assert [r.status_code for r in got] == [200] * 8
        # drained, then uvicorn ends as the signal asked (a supervisor sees SIGTERM)
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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


def _cli(*args, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lepton_nn", *args], input=stdin, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


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
        # drained, then uvicorn ends as the signal asked (a supervisor sees SIGTERM)
        assert proc.wait(60) in (0, -signal.SIGTERM)
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
