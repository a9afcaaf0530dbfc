"""What watching costs (issue 22's targets): one ``fit`` epoch of a 10-layer Dense network
(16 -> 9 x 32 -> 1, batch 32, 8192 rows) plain and with the studio's ``Studio`` callback (its
server running, statistics at most 25 times a second within a 10 % time budget); and the
studio page's first answer (page, script and graph over HTTP).

    python -m pytest benchmarks/bench_studio.py --benchmark-only     # pytest-benchmark
    python benchmarks/bench_studio.py                                # a table with the ratio
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

import lepton_nn.inspect as I  # noqa: E402
from lepton_nn import nn  # noqa: E402
from lepton_nn.random import set_seed  # noqa: E402
from lepton_nn.train import Trainer  # noqa: E402

N, F, BATCH = 8192, 16, 32


def _data():
    r = np.random.default_rng(0)
    x = r.normal(size=(N, F)).astype(np.float32)
    return x, (x[:, :1] > 0).astype(np.float32)


def _model():
    set_seed(0)
    layers = [nn.Dense(32, "relu", name=f"dense{i}") for i in range(9)]
    return nn.Sequential([*layers, nn.Dense(1, name="out")]).build((None, F))


def epoch(watch: bool):
    """A function running one epoch, plain or watched by a running studio."""
    x, y = _data()
    model = _model()
    trainer = Trainer(model, loss="bce")
    st = I.Studio(sample=(x[:64], y[:64]), model=model).start() if watch else None
    cbs = [st] if st else []

    def run():
        trainer.fit(x, y, epochs=1, batch_size=BATCH, callbacks=cbs, verbose=0, shuffle=False)

    return run, st


@pytest.mark.parametrize("watch", [False, True], ids=["plain", "studio"])
def test_fit_epoch(benchmark, watch):
    run, st = epoch(watch)
    try:
        run()
        benchmark(run)
    finally:
        if st is not None:
            st.close()


def test_page_first_answer(benchmark):
    import urllib.request

    x, y = _data()
    st = I.studio(_model(), (x[:64], y[:64]))
    try:

        def load():
            for path in ("", "static/studio.js", "api/graph"):
                urllib.request.urlopen(st.url + path).read()

        benchmark(load)
    finally:
        st.close()


if __name__ == "__main__":
    runs = {name: epoch(watch) for name, watch in (("plain", False), ("studio", True))}
    res: dict[str, list[float]] = {}
    for _ in range(9):  # interleaved rounds: a busy neighbour hits both alike
        for name, (run, _) in runs.items():
            t0 = time.perf_counter()
            run()
            res.setdefault(name, []).append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in res.items()}
    print(f"one epoch, {N // BATCH} batches, 10 Dense layers (median s)")
    for name, s in med.items():
        print(f"  {name:8s} {s:7.3f} s   x{s / med['plain']:.2f}")
    for _, st in runs.values():
        if st is not None:
            st.close()
