"""lepton_nn.distributed.ray_executor on a local Ray (2 CPUs, started here): a search on Ray
equals the serial one with the same seed."""

from __future__ import annotations

import os
import sys

import pytest

ray = pytest.importorskip("ray")

from test_tuning import build, data  # noqa: E402

from lepton_nn.distributed import ray_executor  # noqa: E402
from lepton_nn.tuning import GridSearch  # noqa: E402


def test_grid_search_on_ray_equals_serial():
    X, y = data(120)
    grid = {"lr": [0.01, 0.05], "epochs": [2]}
    serial = GridSearch(build, grid, cv=2, executor="serial", refit=False)
    serial.fit(X, y)
    # the workers import lepton_nn and this test module from the paths this process uses
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    ex = ray_executor(num_cpus=2, runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        on_ray = GridSearch(build, grid, cv=2, executor=ex, refit=False)
        on_ray.fit(X, y)
    finally:
        ex.shutdown()
    strip = lambda t: [{k: v for k, v in r.items() if k != "fit_time"} for r in t]  # noqa: E731
    assert strip(on_ray.results_) == strip(serial.results_)
