"""W1 training step compiled (``lepton_nn.compile``) beside the eager step, hand-written NumPy
and PyTorch, with the ratios measured in one run (issue 23: compiled W1 >= 2x hand-written
NumPy and >= 10x PyTorch).

    python -m pytest benchmarks/bench_compiled.py --benchmark-only

``test_w1_step`` times each engine's step alone (pytest-benchmark); ``test_w1_ratios`` runs
the engines in interleaved rounds in this process and stores the medians (us per step) and
the compiled step's speed-up over each in ``extra_info``. One thread for every engine
(``LEPTON_BENCH_THREADS``). On a shared machine, read the load average beside the numbers.
"""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
import pytest
from workloads import benchmark_training, case, lepton_backends

pytest.importorskip("pytest_benchmark")
pytest.importorskip("numba")
OURS = f"lepton:{lepton_backends()[0]}"
VARIANTS = [
    (OURS, "compiled step"),
    (OURS, "step loop"),
    ("numpy", "hand-written"),
    ("torch", "standard loop"),
]


@pytest.mark.parametrize(("engine", "variant"), VARIANTS, ids=[f"{e}-{v}" for e, v in VARIANTS])
def test_w1_step(benchmark, engine, variant):
    benchmark_training(benchmark, case(engine, "W1", variant), "W1 training step (compiled)")


def _median_us(step, steps: int) -> float:
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    return (time.perf_counter() - t) / steps * 1e6


def test_w1_ratios(benchmark):
    """Interleaved rounds: each round times every engine once, for ``steps`` steps."""
    found = {}
    for engine, variant in VARIANTS:
        try:
            found[variant] = case(engine, "W1", variant)
        except pytest.skip.Exception:
            continue
    if "compiled step" not in found:
        pytest.skip("no compiled case (lepton_nn:reference backend?)")
    rounds, steps = (2, 5) if benchmark.disabled else (15, 300)
    per = {v: [] for v in found}
    for _ in range(rounds):
        for v, c in found.items():
            c.step(0)  # back in cache after the others ran
            per[v].append(_median_us(c.step, steps if v != "standard loop" else steps // 4))
    med = {v: float(np.median(t)) for v, t in per.items()}
    ours = med["compiled step"]
    info = {f"us/step {v}": round(m, 2) for v, m in med.items()}
    info |= {f"x faster than {v}": round(m / ours, 2) for v, m in med.items() if v != "compiled"
             " step"}  # fmt: skip
    info["load average"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    benchmark.group = "W1 compiled: ratios in one run"
    benchmark.extra_info.update(info)
    counter = itertools.count()
    c = found["compiled step"]
    benchmark(lambda: c.step(next(counter)))
    print("\n" + "\n".join(f"  {k}: {v}" for k, v in info.items()))
