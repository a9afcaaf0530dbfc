"""``lepton-nn serve`` over time: a model file replaced while requests run (``--reload``),
and SIGTERM with requests in flight (the server as a subprocess, where signals matter)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from serve_helpers import (
    ROOT,
    Running,
    _credit_rows,
    _fire,
    httpx,
    serve_files,  # noqa: F401 (the fixture "files")
)

import lepton_nn as L
import lepton_nn.runtime as rt
from lepton_nn import nn
from lepton_nn.serve import ServeConfig


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


def _port_of(proc: subprocess.Popen, out: list[str]) -> int:
    """The port a ``serve --port 0`` subprocess listens on, from uvicorn's start line (the
    kernel picks a free port at bind time: no other test can hold it; a port probed free
    and bound later by the server could be taken in between). ``out`` collects the output."""

    def read():
        for line in proc.stdout:
            out.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while not (m := re.search(r"running on http://127\.0\.0\.1:(\d+)", "".join(out))):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(out)
        time.sleep(0.05)
    return int(m.group(1))


def test_graceful_shutdown_answers_requests_in_flight(files):
    """SIGTERM while 8 requests wait in a long batch window: each is answered, then the
    process ends."""
    cmd = [sys.executable, "-m", "lepton_nn", "serve", files["credit"], "--port", "0",
           "--batch-window-ms", "1500"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out: list[str] = []
        url = f"http://127.0.0.1:{_port_of(proc, out)}"
        assert httpx.get(url + "/readyz").status_code == 200, "".join(out)
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
