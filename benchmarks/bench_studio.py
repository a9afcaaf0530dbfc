"""What watching costs (issue 22's targets), on a 10-layer Dense network (16 -> 9 x 32 -> 1,
batch 32, 8192 rows: 256 batches an epoch):

- ``fit`` slowdown: the same epochs plain, with the ``Studio`` callback (server running), and
  with a page connected (a client in its own process reading the event stream); target <= 10 %;
- updates per second the connected client received: batch events (statistics and histograms
  of every layer, within the time budget) and loss-curve updates (batch and losses events);
  target >= 20;
- page load: the page, its scripts and style sheet and the graph over HTTP
  (pytest-benchmark), and with ``python benchmarks/bench_studio.py`` also in headless
  Chromium when installed: navigation start to the graph drawn; target < 1 s.

    python -m pytest benchmarks/bench_studio.py --benchmark-only     # pytest-benchmark
    python benchmarks/bench_studio.py                                # the table of figures
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

import lepton_nn.inspect as I  # noqa: E402
from lepton_nn import nn  # noqa: E402
from lepton_nn.bench.lifeline import child_env, wrap  # noqa: E402
from lepton_nn.random import set_seed  # noqa: E402
from lepton_nn.train import Trainer  # noqa: E402

N, F, BATCH, EPOCHS = 8192, 16, 32, 3
ASSETS = (
    "",
    "static/studio.css",
    "static/charts.js",
    "static/detail.js",
    "static/graph.js",
    "static/studio.js",
)


def _data():
    r = np.random.default_rng(0)
    x = r.normal(size=(N, F)).astype(np.float32)
    return x, (x[:, :1] > 0).astype(np.float32)


def _model():
    set_seed(0)
    layers = [nn.Dense(32, "relu", name=f"dense{i}") for i in range(9)]
    return nn.Sequential([*layers, nn.Dense(1, name="out")]).build((None, F))


READER = """
import json, os, struct, sys, urllib.request
n = {"batch": 0, "losses": 0}
fd = os.open(sys.argv[2], os.O_WRONLY)
with urllib.request.urlopen(sys.argv[1] + "api/events") as r:
    for line in r:
        if line.startswith(b"data: "):
            kind = json.loads(line[6:])["type"]
            if kind in n:
                n[kind] += 1
                os.pwrite(fd, struct.pack("<qq", n["batch"], n["losses"]), 0)
"""


class Reader:
    """A page stand-in in its own process, as a browser is: reads the event stream (parsing
    each event) and counts the events received so far: ``batch`` (statistics of every layer
    and the losses) and ``losses`` (the loss curve only, when the budget held statistics
    back). It writes its counts into a small file that :attr:`seen` reads: nothing in the
    training process wakes per event but the studio itself."""

    def __init__(self, url: str) -> None:
        fd, self.path = tempfile.mkstemp(prefix="bench-studio-")
        os.write(fd, bytes(16))
        self.fd = fd
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(  # dies with this process, even if it is killed
            wrap([sys.executable, "-c", READER, url, self.path]), cwd=root, env=child_env()
        )

    @property
    def seen(self) -> tuple[int, int]:
        b, loss = struct.unpack("<qq", os.pread(self.fd, 16, 0))
        return b, loss

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.fd)
        os.unlink(self.path)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def fit_run(mode: str):
    """A function running ``EPOCHS`` epochs plain, watched ("studio") or watched with a page
    reading the events ("page"; "page-25/s": with no time budget, only the rate limit); it
    returns the (batch, losses) events the page received, the CPU seconds the training
    process spent in ``fit`` (all its threads) and those of the studio's server process
    (None without one). "page-all": every batch recorded and sent (no rate limit, no
    budget), the load-robust measure of what one update costs."""
    x, y = _data()
    model = _model()
    trainer = Trainer(model, loss="bce")
    budget = {"overhead": None} if mode == "page-25/s" else {}
    if mode == "page-all":
        budget = {"overhead": None, "max_rate": None}
    st = None
    if mode != "plain":
        st = I.Studio(sample=(x[:64], y[:64]), model=model, **budget).start()
    reader = Reader(st.url) if mode.startswith("page") else None
    cbs = [st] if st else []

    def server_cpu() -> float | None:
        proc = getattr(st.server, "proc", None) if st is not None else None
        return None if proc is None else cpu_seconds(proc.pid)

    def run() -> tuple[int, int, float, float | None]:
        seen = reader.seen if reader else (0, 0)
        s0, c0 = server_cpu(), time.process_time()
        trainer.fit(x, y, epochs=EPOCHS, batch_size=BATCH, callbacks=cbs, verbose=0, shuffle=False)
        cpu = time.process_time() - c0
        if reader is None:
            return 0, 0, cpu, None
        time.sleep(0.2)  # the last events in flight
        s1 = server_cpu()
        s = None if s0 is None or s1 is None else s1 - s0
        return reader.seen[0] - seen[0], reader.seen[1] - seen[1], cpu, s

    def close() -> None:
        if reader is not None:
            reader.close()
        if st is not None:
            st.close()

    return run, close


@pytest.mark.parametrize("mode", ["plain", "studio", "page"])
def test_fit_epochs(benchmark, mode):
    run, close = fit_run(mode)
    try:
        run()
        benchmark(run)
    finally:
        close()


def _page_load(url: str) -> None:
    with httpx.Client() as c:
        for path in (*ASSETS, "api/graph"):
            c.get(url + path).raise_for_status()


def test_page_first_answer(benchmark):
    x, y = _data()
    st = I.studio(_model(), (x[:64], y[:64]))
    try:
        benchmark(_page_load, st.url)
    finally:
        st.close()


def browser_load_seconds(rounds: int = 5) -> list[float] | None:
    """Navigation start to the graph drawn (``body[data-ready-ms]``) in headless Chromium."""
    if not os.path.exists("/usr/bin/chromium"):
        return None
    try:
        from selenium import webdriver
    except ImportError:
        return None
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for f in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(f)
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService("/usr/bin/chromedriver"))
    x, y = _data()
    st = I.studio(_model(), (x[:64], y[:64]))
    out = []
    try:
        for _ in range(rounds):
            drv.get("about:blank")
            drv.get(st.url)
            end = time.monotonic() + 10
            ms = None
            while ms is None and time.monotonic() < end:
                ms = drv.execute_script("return document.body && document.body.dataset.readyMs")
                time.sleep(0.01)
            n = len(drv.find_elements("css selector", '#graph [data-testid^="node-"]'))
            assert n == 10, n
            out.append(float(ms) / 1000)
    finally:
        st.close()
        drv.quit()
    return out


def _load() -> str:
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "load average unknown"


def fit_table(rounds: int = 7) -> None:
    """The targets' figures: wall-clock medians of interleaved rounds (a busy neighbour hits
    every mode alike), and the load-robust ones: the training process's CPU time (all its
    threads: the fit thread's statistics, the hand-off to the server process, anything else
    the studio runs there) as a ratio to plain ``fit``'s and per update; updates per second
    of that CPU time (on a quiet machine, where wall time is CPU time, the updates/s a page
    gets, up to ``max_rate``); and one update's CPU cost with every batch recorded."""
    modes = ("plain", "studio", "page", "page-25/s", "page-all")
    runs = {mode: fit_run(mode) for mode in modes}
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    got: dict[str, list[tuple[int, int]]] = {m: [] for m in modes}
    server: dict[str, list[float]] = {m: [] for m in modes}
    print(f"before: {_load()} ({os.cpu_count()} CPUs)")
    for _ in range(rounds):
        for mode, (run, _) in runs.items():
            t0 = time.perf_counter()
            b, loss, c, s = run()
            wall[mode].append(time.perf_counter() - t0 - (0.2 if mode.startswith("page") else 0))
            cpu[mode].append(c)
            got[mode].append((b, loss))
            if s is not None:
                server[mode].append(s)
    for _, close in runs.values():
        close()
    print(f"after:  {_load()}")
    med = {m: float(np.median(v)) for m, v in wall.items()}
    mcpu = {m: float(np.median(v)) for m, v in cpu.items()}
    print(f"{EPOCHS} epochs of {N // BATCH} batches, 10 Dense layers (median of {rounds})")
    print("  mode        wall s   x plain | CPU s (training process)   x plain")
    for m in modes:
        print(
            f"  {m:10s} {med[m]:7.3f}  x{med[m] / med['plain']:.3f} | "
            f"{mcpu[m]:7.3f}                  x{mcpu[m] / mcpu['plain']:.3f}"
        )
    for m in ("page", "page-25/s", "page-all"):
        stats = np.array([b for b, _ in got[m]], float)
        curve = np.array([b + loss for b, loss in got[m]], float)
        w = np.array(wall[m])
        extra = np.array(cpu[m]) - mcpu["plain"]
        per = float(np.median(extra / np.maximum(stats, 1))) * 1e3
        c = np.array(cpu[m])
        line = (
            f"{m}: {np.median(stats / w):.1f} updates/s with every layer's statistics "
            f"({np.median(stats):.0f} a run; {np.median(stats / c):.1f} per second of the "
            f"training process's CPU time), {np.median(curve / w):.1f} of the loss curve; "
            f"training-process CPU per statistics update {per:.2f} ms"
        )
        if server[m]:
            line += f"; server process {sum(server[m]) / max(stats.sum(), 1) * 1e3:.2f} ms"
        print(line)
    batches = EPOCHS * (N // BATCH)
    each = (mcpu["page-all"] - mcpu["plain"]) / batches  # CPU s per update, training process
    print(
        f"every batch recorded and sent (page-all): {each * 1e3:.2f} ms of training-process "
        f"CPU per update (plain fit: {mcpu['plain'] / batches * 1e3:.3f} ms a batch); at 20 "
        f"updates/s that is {each * 20 * 100:.1f} % of a second of training"
    )
    print(
        "targets (page): fit slowdown <= 10 %: wall x"
        f"{med['page'] / med['plain']:.3f}, CPU x{mcpu['page'] / mcpu['plain']:.3f}; "
        f">= 20 updates/s with every layer's statistics: "
        f"{np.median(np.array([b for b, _ in got['page']]) / np.array(wall['page'])):.1f}"
    )


def _timed(fn, into: list[float]):
    def run(*args, **kwargs):
        t = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append(time.thread_time() - t)

    return run


def cost_breakdown(epochs: int = 2) -> None:
    """Where an update's CPU time goes in the training process (fit thread CPU time, every
    batch recorded and sent to a connected page): the hooks keeping each layer's output (a
    sampled copy, the dead share), the statistics of every layer at the batch's end
    (:mod:`lepton_nn.inspect.studio.live_stats`), the weights' copy before the step, and the
    hand-off (the event's dict, ``marshal`` and the pipe write); the rest of the recorded batch
    (gradient hooks, hooked layer calls) is the measured total minus these."""
    x, y = _data()
    out: dict[str, list[float]] = {"hooks": [], "stats": [], "before": [], "publish": []}
    tot: dict[str, list[float]] = {"plain": [], "all": []}
    runs = {}
    for mode in ("plain", "all"):
        model = _model()
        st = None
        if mode == "all":
            st = I.Studio(sample=(x[:64], y[:64]), model=model, max_rate=None, overhead=None)
            st.start()
            st.prepare()
            st._layer_output = _timed(st._layer_output, out["hooks"])
            st._layer_rows = _timed(st._layer_rows, out["stats"])
            st._norms.before = _timed(st._norms.before, out["before"])
            st.publish = _timed(st.publish, out["publish"])
        runs[mode] = (Trainer(model, loss="bce"), st, Reader(st.url) if st else None)
    for _ in range(epochs + 1):  # the first round warms up
        for k in out.values():
            k.clear()
        for mode, (trainer, st, _) in runs.items():
            c = time.thread_time()
            trainer.fit(x, y, epochs=1, batch_size=BATCH, callbacks=[st] if st else [], verbose=0)
            tot[mode].append(time.thread_time() - c)
    n = N // BATCH
    each = (min(tot["all"][1:]) - min(tot["plain"][1:])) / n
    parts = {k: sum(v) / n for k, v in out.items()}
    names = {
        "hooks": "forward hooks (sampled copy of y, dead share)",
        "stats": "statistics of every layer at the batch end",
        "before": "weights' packed copy before the step",
        "publish": "hand-off: event dict, marshal, pipe write",
    }
    print(f"CPU per update in the training process, every batch recorded: {each * 1e3:.3f} ms")
    for k, label in names.items():
        print(f"  {label:48s} {parts[k] * 1e3:.3f} ms")
    rest = each - sum(parts.values())
    print(f"  {'the rest (gradient hooks, hooked layer calls)':48s} {rest * 1e3:.3f} ms")
    for _, st, reader in runs.values():
        if reader is not None:
            reader.close()
        if st is not None:
            st.close()


if __name__ == "__main__":
    fit_table()
    cost_breakdown()
    x, y = _data()
    st = I.studio(_model(), (x[:64], y[:64]))
    t = []
    for _ in range(20):
        t0 = time.perf_counter()
        _page_load(st.url)
        t.append(time.perf_counter() - t0)
    st.close()
    print(f"page, scripts, style and graph over HTTP: {np.median(t) * 1e3:.1f} ms (median of 20)")
    load = browser_load_seconds()
    if load is not None:
        print(f"headless Chromium, navigation to graph drawn: {np.median(load) * 1e3:.0f} ms")
