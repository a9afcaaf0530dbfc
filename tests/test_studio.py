"""The studio's HTTP and event API (issue 22), over real HTTP on a free loopback port:
graph and node documents, pause / step / resume of a real ``fit``, the server-sent event
stream, and the backprop stepper against ``explain_backward`` and a NumPy gradient."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

import lepton_nn.inspect as I  # noqa: E402
from lepton_nn import nn  # noqa: E402


def _data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, :1] - x[:, 1:2] > 0).astype(np.float32)
    return x, y


def _seq():
    return nn.Sequential([nn.Dense(8, "relu", name="hidden"), nn.Dense(1, name="out")]).build(
        (None, 4)
    )


def _graph_model():
    x = nn.Input((4,), name="x")
    h = nn.Dense(6, "relu", name="h")(x)
    s = nn.Add(name="skip")([h, nn.Dense(6, name="side")(h)])
    return nn.Model(x, nn.Dense(1, name="head")(s))


def _wait(cond, what, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _plain(v):
    """Only Python's own JSON types (what the server process is sent: no NumPy scalars)."""
    if isinstance(v, dict):
        return all(type(k) is str and _plain(x) for k, x in v.items())
    if isinstance(v, list):
        return all(_plain(x) for x in v)
    return v is None or type(v) in (bool, int, float, str)


def _batches(st):
    return [e for e in st.events if e["type"] == "batch"]


@pytest.fixture
def training():
    x, y = _data()
    st = I.studio(_seq(), (x, y), loss="bce", epochs=10_000, batch_size=16, paused=True)
    yield st
    st.close()
    st.fit_thread.join(10)
    assert not st.fit_thread.is_alive()  # closing the studio ended the run


def test_bound_to_loopback_and_serves_its_own_page():
    st = I.studio(_seq(), _data())
    try:
        assert st.url.startswith("http://127.0.0.1:")
        page = httpx.get(st.url)
        assert page.status_code == 200 and 'data-testid="loss-chart"' in page.text
        assert "http" not in page.text.replace(st.url, "")  # nothing fetched from elsewhere
        js = httpx.get(st.url + "static/studio.js")
        assert js.status_code == 200 and "EventSource" in js.text
        assert "javascript" in js.headers["content-type"]
        for name in ("charts.js", "detail.js", "studio.css"):
            r = httpx.get(st.url + "static/" + name)
            assert r.status_code == 200 and f'/static/{name}"' in page.text
            assert "http" not in r.text.replace("http://www.w3.org/2000/svg", "")
        assert httpx.get(st.url + "static/..%2Fserver.py").status_code == 404
    finally:
        st.close()


def test_graph_of_sequential_and_node_formula():
    st = I.studio(_seq(), _data())
    try:
        g = httpx.get(st.url + "api/graph").json()
        assert [n["name"] for n in g["nodes"]] == ["hidden", "out"]
        assert [n["shape"] for n in g["nodes"]] == ["(N, 8)", "(N, 1)"]
        assert [n["params"] for n in g["nodes"]] == [4 * 8 + 8, 8 + 1]
        assert g["edges"] == [["input", "hidden"], ["hidden", "out"]]
        d = httpx.get(st.url + "api/node/hidden").json()
        assert d["forward"].startswith("y = f(x W + b)") and "relu" in d["forward"]
        assert d["rules"][0]["op"] == "Linear relu"
        assert d["derivative"] == I.RULES["Linear"][1]
        assert d["params"] == {"weight": "(4, 8)", "bias": "(8,)"}
        assert httpx.get(st.url + "api/node/nope").status_code == 404
    finally:
        st.close()


def test_graph_of_a_graph_model_has_one_node_per_call_and_the_dag_edges():
    st = I.studio(_graph_model(), _data())
    try:
        g = httpx.get(st.url + "api/graph").json()
        assert g["inputs"] == ["x"]
        assert [n["name"] for n in g["nodes"]] == ["h", "side", "skip", "head"]
        assert sorted(map(tuple, g["edges"])) == sorted(
            [("x", "h"), ("h", "side"), ("h", "skip"), ("side", "skip"), ("skip", "head")]
        )
        skip = httpx.get(st.url + "api/node/skip").json()
        assert skip["rules"][0]["op"] == "Add"
    finally:
        st.close()


def test_pause_step_resume_control_a_real_fit(training):
    st = training
    url = st.url
    time.sleep(0.3)
    assert _batches(st) == []  # started paused: no batch ran
    for k in (1, 2, 3):
        s = httpx.post(url + "api/control", json={"action": "step"}).json()
        assert s["paused"]
        _wait(lambda k=k: len(_batches(st)) == k, f"batch {k}")
    time.sleep(0.3)
    assert len(_batches(st)) == 3  # one batch per step, no more
    httpx.post(url + "api/control", json={"action": "resume"})
    _wait(lambda: len(_batches(st)) >= 10, "training to go on")
    httpx.post(url + "api/control", json={"action": "pause"})
    _wait(lambda: st.waiting, "the fit thread to park")
    n = len(_batches(st))
    time.sleep(0.3)
    assert len(_batches(st)) == n
    # parked: every batch's loss has been published, none held back by the rate limit
    losses = [v for e in st.events if "losses" in e for v in e["losses"]]
    assert len(losses) == st.state()["step"] > 10
    assert httpx.post(url + "api/control", json={"action": "jump"}).status_code == 400


def test_batch_events_carry_recorder_stats_and_true_norms(training):
    st = training
    httpx.post(st.url + "api/control", json={"action": "step"})
    _wait(lambda: st.waiting and len(_batches(st)) == 1, "one batch")
    e = _batches(st)[0]
    assert set(e["layers"]) == {"hidden", "out"}
    hidden = e["layers"]["hidden"]
    for k in ("act_mean", "act_std", "dead", "grad_std", "update_ratio", "value_norm"):
        assert hidden[k] is not None and np.isfinite(hidden[k]), k
    assert 0 <= hidden["dead"] <= 1 and e["layers"]["out"]["dead"] is None  # ReLU only
    assert sum(hidden["hist"]["counts"]) == 16 * 8  # batch of 16 rows, 8 units
    m = st.model
    w = np.concatenate([p.data.ravel() for p in m.layers[0].parameters()])
    assert hidden["weight_norm"] == pytest.approx(np.linalg.norm(w.astype(np.float64)), rel=1e-5)
    assert e["batch_loss"] > 0
    node = httpx.get(st.url + "api/node/hidden").json()
    assert node["stats"]["value_norm"] == hidden["value_norm"]


def test_event_stream_replays_the_run_and_follows_it(training):
    st = training
    httpx.post(st.url + "api/control", json={"action": "step"})
    _wait(lambda: len(_batches(st)) == 1, "one batch")
    got = []
    with httpx.stream("GET", st.url + "api/events", timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
                if len([e for e in got if e["type"] == "batch"]) == 1:
                    httpx.post(st.url + "api/control", json={"action": "step"})
                if len([e for e in got if e["type"] == "batch"]) == 2:
                    break
    assert [e["seq"] for e in got] == list(range(len(got)))  # from the start, none lost
    assert got[0]["type"] == "state"
    # the server process's JSON is the studio's event, value for value (floats exactly)
    for e in got:
        assert _plain(st.events[e["seq"]]) and e == st.events[e["seq"]]
    assert [e["step"] for e in got if e["type"] == "batch"] == [1, 2]


def test_backward_stepping_matches_explain_backward_and_numpy(training):
    st = training
    r = httpx.get(st.url + "api/backward")
    assert r.status_code == 200, r.text  # paused before the first batch: allowed
    doc = r.json()
    steps = doc["steps"]
    assert steps[0]["label"] == "BCEWithLogits" and steps[0]["grad_norm"] == 1.0
    order = [s["layer"] for s in steps if s["layer"]]
    assert order == ["out", "hidden"]  # reverse topological: the last layer first
    # the gradient reaching the output layer's weight, by hand in NumPy (float64)
    m = st.model
    x, y = (a.astype(np.float64) for a in (st.sample[0][:8], st.sample[1][:8]))
    w1, b1 = (p.data.astype(np.float64) for p in m.layers[0].parameters())
    w2, b2 = (p.data.astype(np.float64) for p in m.layers[1].parameters())
    h = np.maximum(x @ w1 + b1, 0)
    z = h @ w2 + b2
    dz = (1 / (1 + np.exp(-z)) - y) / len(x)
    out = next(s for s in steps if s["layer"] == "out")
    got = {label: norm for _, label, norm in out["inputs"]}
    assert got["layers.1.weight"] == pytest.approx(np.linalg.norm(h.T @ dz), rel=1e-4)
    assert doc["loss"] == pytest.approx(np.mean(np.logaddexp(0, z) - y * z), rel=1e-5)
    assert all(p.grad is None for p in m.parameters())  # the stepper left .grad alone


def test_model_work_runs_between_batches_of_a_live_run(training):
    """Backprop stepping and a node's tensors while fit runs: the fit thread runs them at a
    batch boundary (never beside a batch), and training goes on after."""
    st = training
    httpx.post(st.url + "api/control", json={"action": "resume"})
    _wait(lambda: len(_batches(st)) >= 2, "training")
    r = httpx.get(st.url + "api/backward", timeout=30)
    assert r.status_code == 200 and r.json()["steps"][0]["label"] == "BCEWithLogits"
    assert httpx.get(st.url + "api/tensors/hidden", timeout=30).status_code == 200
    assert st.training and not st._jobs
    n = st.state()["step"]
    _wait(lambda: st.state()["step"] > n + 5, "training to go on")


def test_studio_callback_in_a_plain_fit():
    from lepton_nn.train import Trainer

    x, y = _data(64)
    st = I.Studio(sample=(x, y), max_rate=None, overhead=None)
    try:
        Trainer(_seq(), loss="bce").fit(x, y, epochs=2, batch_size=16, callbacks=[st], verbose=0)
        assert len(_batches(st)) == 8 and st.events[-1]["type"] == "done"
        assert [len(e["losses"]) for e in _batches(st)] == [1] * 8
        assert httpx.get(st.url + "api/state").json() == {
            "paused": False,
            "training": False,
            "step": 8,
        }
        assert httpx.get(st.url + "api/backward").status_code == 200  # not training: allowed
    finally:
        st.close()


def test_cli_studio_refuses_a_bad_call(capsys):
    from lepton_nn.cli import main

    assert main(["studio"]) != 0
    assert "--demo" in capsys.readouterr().err


def test_rate_limit_records_fewer_batches_but_keeps_every_loss():
    from lepton_nn.train import Trainer

    x, y = _data(64)
    st = I.Studio(sample=(x, y), max_rate=1e-6)  # one recorded batch per ~11 days
    try:
        hist = Trainer(_seq(), loss="bce").fit(
            x, y, epochs=2, batch_size=16, callbacks=[st], verbose=0
        )
        assert len(_batches(st)) == 1  # the first batch only
        losses = [v for e in st.events if e["type"] in ("batch", "losses") for v in e["losses"]]
        assert len(losses) == 8 and all(np.isfinite(losses))
        # the running means of fit's epochs are the means of the streamed batch losses
        assert np.mean(losses[4:]) == pytest.approx(hist.history["loss"][1], rel=1e-5)
    finally:
        st.close()


def test_a_studio_reused_for_another_model_shows_the_new_graph():
    from lepton_nn.train import Trainer

    x, y = _data(32)
    st = I.Studio(sample=(x, y))
    try:
        with pytest.raises(ValueError, match="no model"):
            st.prepare()
        Trainer(_seq(), loss="bce").fit(x, y, epochs=1, batch_size=16, callbacks=[st], verbose=0)
        assert [n["name"] for n in httpx.get(st.url + "api/graph").json()["nodes"]] == [
            "hidden",
            "out",
        ]
        other = _graph_model()
        Trainer(other, loss="bce").fit(x, y, epochs=1, batch_size=16, callbacks=[st], verbose=0)
        names = [n["name"] for n in httpx.get(st.url + "api/graph").json()["nodes"]]
        assert names == ["h", "side", "skip", "head"]
    finally:
        st.close()


def test_overhead_budget_stops_recording_once_spent():
    from lepton_nn.train import Trainer

    x, y = _data(64)
    st = I.Studio(sample=(x, y), max_rate=None, overhead=0.0)  # no budget after the first
    try:
        Trainer(_seq(), loss="bce").fit(x, y, epochs=2, batch_size=16, callbacks=[st], verbose=0)
        assert len(_batches(st)) == 1 and st._cost > 0
        assert sum(len(e["losses"]) for e in st.events if "losses" in e) == 8
    finally:
        st.close()


def test_cli_demo_serves_until_interrupted():
    import os
    import signal
    import subprocess
    import sys

    from conftest import PKG_PARENT

    env = {**os.environ, "PYTHONPATH": str(PKG_PARENT)}
    cmd = [sys.executable, "-m", "lepton_nn", "studio", "--demo", "--epochs", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("studio at http://127.0.0.1:"), line
        url = line.split()[2]
        g = httpx.get(url + "api/graph", timeout=30).json()
        assert [n["name"] for n in g["nodes"]] == ["hidden1", "hidden2", "out"]
        assert g["nodes"][0]["params"] == 30 * 16 + 16  # the 30 columns of the bundled data
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_page_and_script_ship_in_the_wheel():
    from pathlib import Path

    from conftest import PKG_PARENT

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    assert '"inspect/studio/assets/*"' in pyproject.read_text()
    assets = Path(PKG_PARENT) / "lepton_nn" / "inspect" / "studio" / "assets"
    assert sorted(p.name for p in assets.iterdir()) == [
        "charts.js",
        "detail.js",
        "graph.js",
        "studio.css",
        "studio.html",
        "studio.js",
    ]


def test_a_shared_layer_is_one_node_per_call_and_backprop_names_each_call():
    x_in = nn.Input((4,), name="x")
    shared = nn.Dense(4, "tanh", name="shared")
    h = shared(shared(x_in))  # the same weights twice: calls "shared" and "shared@1"
    model = nn.Model(x_in, nn.Dense(1, name="head")(h))
    x, y = _data(64)
    st = I.studio(model, (x, y), loss="bce", epochs=10_000, batch_size=16, paused=True)
    try:
        g = httpx.get(st.url + "api/graph").json()
        assert [n["name"] for n in g["nodes"]] == ["shared", "shared@1", "head"]
        assert g["edges"] == [["x", "shared"], ["shared", "shared@1"], ["shared@1", "head"]]
        steps = httpx.get(st.url + "api/backward").json()["steps"]
        assert [s["layer"] for s in steps if s["layer"]] == ["head", "shared@1", "shared"]
        httpx.post(st.url + "api/control", json={"action": "step"})
        _wait(lambda: len(_batches(st)) == 1, "one batch")
        layers = _batches(st)[0]["layers"]
        first, second = layers["shared"], layers["shared@1"]
        assert first["value_norm"] != second["value_norm"]  # each call its own output
        assert sum(first["hist"]["counts"]) == sum(second["hist"]["counts"]) == 16 * 4
    finally:
        st.close()
        st.fit_thread.join(10)


def test_pipe_never_blocks_and_keeps_the_order_when_the_reader_lags():
    """The fit thread's hand-off (bridge.Pipe): far more than a pipe holds, sent with no one
    reading, returns at once; the backlog then reaches the reader in order."""
    import os
    import threading

    from lepton_nn.inspect.studio.bridge import Pipe

    r, w = os.pipe()
    pipe = Pipe(w)
    msgs = [bytes([i % 251]) * (1000 + i) for i in range(300)]  # ~450 KB: > a pipe's buffer
    for m in msgs:
        pipe.send(m)  # nobody reads yet: must not block
    assert pipe.backlog  # the pipe took what it could, the rest waits
    got = bytearray()
    want = b"".join(msgs)

    def read() -> None:
        while len(got) < len(want):
            got.extend(os.read(r, 65536))

    reader = threading.Thread(target=read)
    reader.start()
    assert pipe.flush(30.0)
    reader.join(30)
    assert bytes(got) == want
    os.close(r)
    pipe.send(b"x")  # the reader has gone: dropped, no error
    pipe.send(b"y")
    assert pipe.gone
    pipe.close()
    os.close(w)


def test_the_server_process_keeps_layer_statistics_of_the_last_events_only(monkeypatch):
    from lepton_nn.inspect.studio import session
    from lepton_nn.train import Trainer

    monkeypatch.setattr(session, "KEEP_LAYERS", 3)
    x, y = _data()
    st = I.Studio(sample=(x, y), max_rate=None, overhead=None)
    try:
        Trainer(_seq(), loss="bce").fit(x, y, epochs=1, batch_size=16, callbacks=[st], verbose=0)
        got = []
        with httpx.stream("GET", st.url + "api/events", timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    got.append(json.loads(line[6:]))
                    if got[-1]["type"] == "done":
                        break
        batches = [e for e in got if e["type"] == "batch"]
        assert ["layers" in e for e in batches] == [False] * 5 + [True] * 3
        assert [e["step"] for e in batches] == list(range(1, 9))
        assert got == st.events  # the studio's own list is trimmed alike
    finally:
        st.close()


def test_the_budget_charges_the_batches_slowed_after_a_recording(monkeypatch):
    """A recorded batch costs its CPU time minus the plain mean, and the next AFTER (2)
    batches their excess; those do not enter the plain mean (a fake fit-thread clock)."""
    import types

    from lepton_nn.inspect.studio import session

    clock = types.SimpleNamespace(t=0.0, monotonic=time.monotonic)
    clock.thread_time = lambda: clock.t
    monkeypatch.setattr(session, "time", clock)

    class Server:  # no process: the events are not what this test reads
        def send_event(self, event):
            pass

        def stop(self):
            pass

    x, y = _data()
    st = I.Studio(model=_seq(), sample=(x, y), max_rate=None, overhead=None, every=4)
    st.server = Server()
    st.on_train_begin()
    st._step = 1  # steps 1-3 plain, 4 recorded, 5 and 6 after it, 7 plain
    for step, took in zip(range(1, 8), (1.0, 1.0, 1.0, 3.0, 1.5, 1.2, 1.0)):
        st.on_batch_begin(step)
        assert st._recording == (step == 4)
        clock.t += took
        st.on_batch_end(step, {"batch_loss": 0.5})
    assert st._cost == pytest.approx(2.0 + 0.5 + 0.2)
    assert st._plain == pytest.approx(1.0)  # the slowed batches are not plain ones
    st.on_train_end()
    st.close()


def test_page_work_on_a_parked_run_never_deadlocks():
    """Questions from several page threads while the run is parked on pause: each is run by
    the fit thread between batches. The fit thread once ran them while holding the condition
    that on_model takes after the model lock: a question waiting for the model lock while
    the fit thread ran another one, then went for the next, hung both (two locks taken in
    both orders)."""
    import threading

    x, y = _data(64)
    st = I.studio(_seq(), data=(x, y), epochs=1, batch_size=16, paused=True)
    try:
        for _ in range(600):  # parked before the first batch (a liveness wait, not a timing)
            if st.waiting:
                break
            time.sleep(0.05)
        assert st.waiting
        done = []

        def job():  # some work on the model, as a page's question is (it lets others run)
            time.sleep(0.002)
            return threading.current_thread().name

        def ask():
            for _ in range(25):
                done.append(st.on_model(job, timeout=60))

        askers = [threading.Thread(target=ask, daemon=True) for _ in range(6)]
        for t in askers:
            t.start()
        for t in askers:
            t.join(120)
        assert not any(t.is_alive() for t in askers), "page questions hung on a parked run"
        assert len(done) == 150 and set(done) == {"studio-fit"}  # run on the fit thread
    finally:
        st.control("resume")
        st.close()
