"""Shared by the ``tests/test_serve*.py`` files: the real server (uvicorn on a free loopback
port) in a thread, the credit rows as JSON objects, the model files (the fixture ``files``),
many requests fired at once, and the command line as a subprocess.

Importing this module skips the importing test file when the ``serve`` extra is missing.
"""

from __future__ import annotations

import functools
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


@pytest.fixture(scope="module", name="files")
def serve_files(tmp_path_factory):
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


def _cli(*args, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lepton_nn", *args], input=stdin, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
