"""``lepton-nn serve`` sets TCP_NODELAY on every connection it accepts, whatever made the
listening socket (without it, on asyncio's loop, a socket made without ``IPPROTO_TCP`` left
each small answer waiting ~40 ms for the client's delayed ACK). Checked on the server's own
accepted sockets (read from this process's open files; no timing), under asyncio's loop,
which sets the option only for listening sockets of ``IPPROTO_TCP`` (uvloop always does)."""

from __future__ import annotations

import os
import pickle
import socket
import sys
import threading
import time

import numpy as np
import pytest

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

import lepton_nn as L  # noqa: E402
from lepton_nn import nn  # noqa: E402
from lepton_nn.serve import server as server_mod  # noqa: E402
from lepton_nn.serve.app import ServeConfig  # noqa: E402
from lepton_nn.serve.nodelay import NoDelayHTTP  # noqa: E402

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")


def _accepted_nodelay(port: int) -> list[int]:
    """TCP_NODELAY of each connected socket of this process on local port ``port`` (the
    server's ends of its connections)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = os.dup(int(name))
        except OSError:
            continue
        try:
            s = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            continue
        with s:
            if s.family not in (socket.AF_INET, socket.AF_INET6) or s.type != socket.SOCK_STREAM:
                continue
            try:
                s.getpeername()
            except OSError:
                continue  # a listening socket
            if s.getsockname()[1] == port:
                found.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return found


@pytest.fixture
def config(tmp_path):
    net = nn.Sequential([nn.Dense(3, "relu"), nn.Dense(1)]).build((None, 4))
    L.save(net, tmp_path / "m.lnn")
    return ServeConfig(models=[("m", str(tmp_path / "m.lnn"))])


def _serve_in_thread(monkeypatch, config, **kw):
    """``serve(config, **kw)`` in a thread on asyncio's loop; returns (server, thread)."""
    real = server_mod.uvicorn_options
    monkeypatch.setattr(server_mod, "uvicorn_options", lambda *a: {**real(*a), "loop": "asyncio"})
    started = []
    startup = uvicorn.Server.startup

    async def keep(self, sockets=None):
        started.append(self)
        await startup(self, sockets=sockets)

    monkeypatch.setattr(uvicorn.Server, "startup", keep)
    thread = threading.Thread(target=server_mod.serve, args=(config,), kwargs=kw, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (started and started[0].started):
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.02)
    return started[0], thread


@linux
@pytest.mark.parametrize("made", ["given, proto 0", "given, IPPROTO_TCP", "bound by serve"])
def test_accepted_connections_have_tcp_nodelay(monkeypatch, config, made):
    if made.startswith("given"):
        proto = 0 if made.endswith("0") else socket.IPPROTO_TCP
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
        sock.bind(("127.0.0.1", 0))
        port, kw = sock.getsockname()[1], {"sockets": [sock]}
    else:
        kw = {"port": 0}  # the kernel picks a free port as serve binds (none probed before)
    server, thread = _serve_in_thread(monkeypatch, config, log_level="error", **kw)
    try:
        if made == "bound by serve":
            port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(3):  # one kept-alive connection, asked three times
                r = client.post("/v1/models/m:predict", json={"rows": np.ones((1, 4)).tolist()})
                assert r.status_code == 200, r.text
            seen = _accepted_nodelay(port)
            assert seen and all(seen), seen
    finally:
        server.should_exit = True
        thread.join(30)


def test_serve_hands_uvicorn_the_nodelay_protocol_in_every_mode(monkeypatch, config):
    got = {}
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: got.setdefault("workers", kw))
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: got.setdefault("one", self.config)
    )
    monkeypatch.delenv(server_mod.ENV, raising=False)
    server_mod.serve(config, workers=2)
    server_mod.serve(config, workers=1)
    assert got["workers"]["http"] is NoDelayHTTP and got["workers"]["workers"] == 2
    assert got["one"].http is NoDelayHTTP
    assert pickle.loads(pickle.dumps(NoDelayHTTP)) is NoDelayHTTP  # (workers are spawned)
