"""Serving and streaming benchmarks (issue 20), loopback only, bounded in requests and time.

    python benchmarks/bench_serve.py                 # full run: ~2 min plus the load test
    python benchmarks/bench_serve.py --seconds 2 --load-seconds 10

1. ``lepton-nn serve`` of a credit model (trained on the bundled credit data, 32x16 hidden
   units) in its own process; one-row requests (raw columns, as from a web form) from 1, 8
   and 64 concurrent keep-alive connections, with dynamic batching (2 ms, 64 rows) and
   without: p50 / p99 latency, requests per second over ``--seconds`` each, and the
   server's CPU time per request (``cpu_us``, from /proc: steadier than throughput on a
   shared machine). The same
   server with ONNX Runtime running the network (exported by ``lepton_nn.onnx``; skipped
   when onnxruntime is not installed) is the peer; the network alone (forward against
   ``session.run`` on the same rows at batch 1, 8, 64) shows what the two differ in.
   Then ``--rounds`` alternations of batching on and off at 64 clients: the medians and
   their ratios (throughput, server CPU per request).
2. A load test: 64 clients for ``--load-seconds``; failed requests and the server's resident
   memory (VmRSS), sampled every second: start, end, peak, and the second half's peak over
   the first half's.
3. Streaming: per-step latency of a GRU (32 units) on Italy power demand (T = 24, 1 channel)
   and BasicMotions (T = 100, 6 channels) shapes, for 1 and 1,000 live streams:
   ``session.step`` against re-running the whole window with ``predict`` at every step
   (both with NumPy's BLAS on one thread: the session holds it so for large steps, and on
   2 shared cores a split small GEMM stalls for milliseconds).

The load generator is one asyncio loop writing raw HTTP/1.1 requests on keep-alive
connections (lighter than an HTTP client library, so that the client's own cost takes less
of the 2 cores from the server). Client and server share the machine: numbers are for
comparing the rows of one table, not absolute capacity.
``pytest benchmarks`` runs :func:`test_serve_smoke` (a second of each, zero failures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, ROOT)

import lepton_nn as L  # noqa: E402
import lepton_nn.runtime as rt  # noqa: E402
from lepton_nn.backend.threads import blas_held  # noqa: E402
from lepton_nn.bench.lifeline import child_env, wrap  # noqa: E402

_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


# --------------------------------------------------------------------------- the server
def credit_model(folder: str) -> tuple[str, dict]:
    """A credit model file (few epochs: speed, not quality, is measured) and one raw row."""
    from lepton_nn.datasets import load_credit
    from lepton_nn.tabular import TabularModel

    table = load_credit()
    model = TabularModel(hidden=(32, 16), epochs=3, seed=0, positive="bad").fit(table)
    path = os.path.join(folder, "credit.lnn")
    L.save(model, path)
    row = {c: table.data[c][0] for c in table.columns}
    row = {c: (v.item() if hasattr(v, "item") else v) for c, v in row.items()}
    return path, row


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m lepton_nn serve`` in its own process, ready when constructed; with
    ``onnx``, the same server with each batch run by ONNX Runtime on that ONNX file of the
    network (this script's ``--ort-server`` mode)."""

    def __init__(self, path: str, *flags: str, onnx: str | None = None) -> None:
        self.port = _free_port()
        if onnx is None:
            cmd = [sys.executable, "-m", "lepton_nn", "serve", path, "--port", str(self.port)]
        else:
            cmd = [sys.executable, __file__, "--ort-server", path, onnx, str(self.port)]
        self.proc = subprocess.Popen(  # dies with this script, even if it is killed
            wrap([*cmd, *flags]), cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.05)

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


# --------------------------------------------------------------------------- the clients
async def _one_client(port, request, deadline, latencies, failures) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(_LENGTH.search(head).group(1)))
            latencies.append(time.perf_counter() - t0)
            if head[9:12] != b"200":
                failures.append(head[9:12])
    except (OSError, asyncio.IncompleteReadError) as exc:
        failures.append(repr(exc))
    finally:
        writer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    port: int, body: bytes, clients: int, seconds: float, warmup: float = 0.3, pid: int = 0
) -> dict:
    """``clients`` connections POSTing ``body`` back to back for ``seconds``; with the
    server's ``pid``, also its CPU time per request (``cpu_us``: less sensitive than
    throughput to what else the machine runs)."""
    request = (
        f"POST /v1/models/credit:predict HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def run(seconds: float) -> tuple[list, list]:
        lat: list[float] = []
        fail: list = []
        deadline = time.perf_counter() + seconds
        await asyncio.gather(
            *[_one_client(port, request, deadline, lat, fail) for _ in range(clients)]
        )
        return lat, fail

    asyncio.run(run(warmup))
    cpu0 = cpu_seconds(pid) if pid else 0.0
    t0 = time.perf_counter()
    lat, fail = asyncio.run(run(seconds))
    took = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0 if pid else float("nan")
    ms = np.array(lat) * 1e3
    return {
        "clients": clients,
        "requests": len(lat),
        "failed": len(fail),
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
        "per_s": len(lat) / took,
        "cpu_us": cpu / max(1, len(lat)) * 1e6,
    }


def ort_server(path: str, onnx_path: str, port: str, *flags: str) -> None:
    """The serve app with every network call made by ONNX Runtime (one intra-op thread, as
    ours runs small batches on one): what a user would otherwise build, behind the same
    HTTP, JSON, preprocessing and batching."""
    import onnxruntime as ort

    from lepton_nn.serve import models
    from lepton_nn.serve.app import ServeConfig
    from lepton_nn.serve.server import serve

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    read = models.ServedModel.read

    def read_ort(self, previous=None):
        version = read(self, previous)
        version.model.forward = lambda x: session.run(None, {name: x})[0]
        return version

    models.ServedModel.read = read_ort
    config = ServeConfig(models=[("credit", path)], batching="--no-batching" not in flags)
    serve(config, port=int(port), log_level="error")


def onnx_of(path: str) -> str | None:
    """The credit network (without its preprocessing) as ONNX; None without onnxruntime."""
    try:
        import onnxruntime  # noqa: F401

        import lepton_nn.onnx
    except ImportError:
        return None
    out = path.replace(".lnn", "_network.onnx")
    lepton_nn.onnx.export(L.load(path).network, out)
    return out


def network_vs_ort(path: str, row: dict, reps: int = 1000) -> list[dict]:
    """The network alone (what the two servers differ in): lepton_nn's forward against
    ONNX Runtime's session.run (one intra-op thread) on the same preprocessed rows, at the
    batch sizes the servers run, timed alternately; median microseconds per call."""
    import onnxruntime as ort

    onnx = onnx_of(path)
    model = rt.load(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = []
    for n in (1, 8, 64):
        x = model.transform([dict(row) for _ in range(n)])
        ours, peer = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            model.forward(x)
            t1 = time.perf_counter()
            session.run(None, {name: x})
            peer.append(time.perf_counter() - t1)
            ours.append(t1 - t0)
        a, b = float(np.median(ours) * 1e6), float(np.median(peer) * 1e6)
        out.append({"batch": n, "lepton_nn_us": a, "onnxruntime_us": b, "lead": b / a})
    return out


def serving(path: str, row: dict, seconds: float, clients=(1, 8, 64), ort=True) -> list[dict]:
    body = json.dumps({"rows": [row]}).encode()
    out = []
    onnx = onnx_of(path) if ort else None
    variants = [("lepton_nn, batching 2 ms / 64", (), None),
                ("lepton_nn, no batching", ("--no-batching",), None)]  # fmt: skip
    if onnx:
        variants += [("ONNX Runtime, batching 2 ms / 64", (), onnx),
                     ("ONNX Runtime, no batching", ("--no-batching",), onnx)]  # fmt: skip
    for label, flags, onnx_path in variants:
        server = Server(path, *flags, onnx=onnx_path)
        try:
            for c in clients:
                r = load(server.port, body, c, seconds, pid=server.proc.pid)
                out.append({"server": label, **r})
        finally:
            server.stop()
    return out


def batching_rounds(path: str, row: dict, seconds: float, rounds: int, clients: int = 64):
    """Batching on and off, alternated ``rounds`` times at ``clients`` clients (a fresh
    server each time): per mode the median throughput and CPU time per request, so that a
    burst of other load on a shared machine does not decide the ratio."""
    body = json.dumps({"rows": [row]}).encode()
    runs: dict[str, list] = {"batching": [], "no batching": []}
    for _ in range(rounds):
        for mode, flags in (("batching", ()), ("no batching", ("--no-batching",))):
            server = Server(path, *flags)
            try:
                runs[mode].append(load(server.port, body, clients, seconds, pid=server.proc.pid))
            finally:
                server.stop()
    out = {}
    for mode, rs in runs.items():
        out[mode] = {k: float(np.median([r[k] for r in rs])) for k in ("per_s", "cpu_us", "p50_ms")}
        out[mode]["failed"] = sum(r["failed"] for r in rs)
    return out


def load_test(path: str, row: dict, seconds: float, clients: int = 64) -> dict:
    """``clients`` connections for ``seconds`` on a warmed server; its resident memory
    sampled every second: ``rss_growth_mb`` is the second half's peak over the first
    half's (allocator noise is a few MB; a leak grows with the requests)."""
    import threading

    body = json.dumps({"rows": [row]}).encode()
    server = Server(path)
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            samples.append(server.rss_mb())

    try:
        load(server.port, body, clients, 1.0)  # warm: plans for the batch sizes seen
        before = server.rss_mb()
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = load(server.port, body, clients, seconds, warmup=0, pid=server.proc.pid)
        finally:
            done.set()
            sampler.join()
        half = max(1, len(samples) // 2)
        result.update(
            rss_start_mb=before,
            rss_end_mb=server.rss_mb(),
            rss_max_mb=max(samples, default=before),
            rss_growth_mb=max(samples[half:], default=before) - max(samples[:half] or [before]),
            seconds=seconds,
        )
    finally:
        server.stop()
    return result


# --------------------------------------------------------------------------- streaming
def gru_file(folder: str, t: int, f: int, classes: int) -> str:
    from lepton_nn import nn

    L.set_seed(0)
    model = nn.Sequential([nn.GRU(32), nn.Dense(classes, "softmax")])
    model.build((None, t, f))
    model.eval()
    path = os.path.join(folder, f"gru_{t}x{f}.lnn")
    L.save(model, path)
    return path


def _median_us(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6)


def streaming(folder: str, reps: int = 50) -> list[dict]:
    out = []
    for name, t, f, k in (("italy_power (T=24, F=1)", 24, 1, 2), ("basic_motions (T=100, F=6)",
                                                                 100, 6, 4)):  # fmt: skip
        model = rt.load(gru_file(folder, t, f, k))
        for streams in (1, 1000):
            rng = np.random.default_rng(0)
            window = rng.standard_normal((streams, t, f)).astype(np.float32)
            session = model.stream(max_streams=streams)
            keys = list(range(streams))
            for s in range(t):  # every stream live, its state t steps deep
                session.step(window[:, s], keys)
            x = window[:, -1]

            def step(session=session, x=x, keys=keys):
                session.step(x, keys)

            def rerun(model=model, window=window):
                with blas_held():  # as the session holds it: no BLAS thread stalls in either
                    model.predict(window)

            step_us = _median_us(step, reps)
            window_us = _median_us(rerun, max(5, reps // 5))
            out.append({"data": name, "streams": streams, "step_us": step_us,
                        "rerun_window_us": window_us, "speedup": window_us / step_us})  # fmt: skip
    return out


# --------------------------------------------------------------------------- report
def _table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:,.1f}" if isinstance(v, float) else str(v)

    cells = [[fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--ort-server"]:
        ort_server(*argv[1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0, help="per serving configuration")
    p.add_argument("--load-seconds", type=float, default=60.0, help="the 64-client load test")
    p.add_argument("--skip", default="", help="comma list of serving,rounds,load,streaming")
    p.add_argument("--rounds", type=int, default=5, help="batching on/off alternations at 64")
    a = p.parse_args(argv)
    skip = set(a.skip.split(","))
    print(f"lepton_nn {L.__version__}, {os.cpu_count()} CPUs, loopback; client and server on "
          f"this machine; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path, row = credit_model(folder)
        if "serving" not in skip:
            rows = serving(path, row, a.seconds)
            print("\nserving the credit model, one row per request:")
            print(_table(rows, ["server", "clients", "requests", "failed", "p50_ms", "p99_ms",
                                "per_s", "cpu_us"]))  # fmt: skip
            by = {(r["server"], r["clients"]): r["per_s"] for r in rows}
            ratio = by["lepton_nn, batching 2 ms / 64", 64] / by["lepton_nn, no batching", 64]
            print(f"lepton_nn throughput at 64 clients, batching / no batching: {ratio:.2f}x")
            if onnx_of(path):
                print("\nthe network alone, per call (the servers differ only in this):")
                print(_table(network_vs_ort(path, row), ["batch", "lepton_nn_us",
                                                         "onnxruntime_us", "lead"]))  # fmt: skip
            p50 = {(r["server"], r["clients"]): r["p50_ms"] for r in rows}
            for kind in ("batching 2 ms / 64", "no batching"):
                for c in (1, 8, 64):
                    ours, peer = ("lepton_nn, " + kind, c), ("ONNX Runtime, " + kind, c)
                    if peer in by:
                        lead, lat = by[ours] / by[peer], p50[ours] / p50[peer]
                        print(f"{kind}, {c} clients: lepton_nn / ONNX Runtime throughput "
                              f"{lead:.2f}x, p50 latency {lat:.2f}x")  # fmt: skip
        if "rounds" not in skip and a.rounds > 0:
            r = batching_rounds(path, row, a.seconds, a.rounds)
            on, off = r["batching"], r["no batching"]
            print(f"\n64 clients, batching on / off alternated {a.rounds} times, medians: "
                  f"{on['per_s']:,.0f} / {off['per_s']:,.0f} requests/s "
                  f"({on['per_s'] / off['per_s']:.2f}x), server CPU {on['cpu_us']:.0f} / "
                  f"{off['cpu_us']:.0f} us per request ({off['cpu_us'] / on['cpu_us']:.2f}x), "
                  f"p50 {on['p50_ms']:.1f} / {off['p50_ms']:.1f} ms; "
                  f"{on['failed'] + off['failed']} failed")  # fmt: skip
        if "load" not in skip:
            r = load_test(path, row, a.load_seconds)
            print(f"\nload test: {r['clients']} clients for {r['seconds']:.0f} s: "
                  f"{r['requests']:,} requests, {r['failed']} failed, {r['per_s']:,.0f}/s, "
                  f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; server memory "
                  f"{r['rss_start_mb']:.1f} -> {r['rss_end_mb']:.1f} MB (peak "
                  f"{r['rss_max_mb']:.1f}; second half over first "
                  f"{r['rss_growth_mb']:+.1f} MB)")  # fmt: skip
        if "streaming" not in skip:
            print("\nstreaming, GRU 32 units, one new sample per live stream:")
            print(_table(streaming(folder), ["data", "streams", "step_us", "rerun_window_us",
                                             "speedup"]))  # fmt: skip
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    return 0


def test_serve_smoke(tmp_path):
    """A second of each: every request answered, a short load test at 64 clients without a
    failure, streams stepped."""
    import pytest

    pytest.importorskip("uvicorn")
    path, row = credit_model(str(tmp_path))
    for r in serving(path, row, 0.5, clients=(1, 8), ort=False):
        assert r["failed"] == 0 and r["requests"] > 0
    r = load_test(path, row, 3.0)
    assert r["failed"] == 0 and r["requests"] > 0
    assert streaming(str(tmp_path), reps=3)


if __name__ == "__main__":
    sys.exit(main())
