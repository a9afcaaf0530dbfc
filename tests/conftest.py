"""Shared test settings.

``PKG_PARENT`` is the folder holding the *imported* ``lepton_nn`` package: the source tree in
development, ``site-packages`` after ``pip install .``. Subprocesses run there (and put it on
``PYTHONPATH``) so they import the same build as the tests, compiled kernels included, and
never a source checkout that shadows the installed package.

Plain ``pytest`` (the README's command, which CI runs) spreads the suite over the cores with
pytest-xdist (the ``test`` extra) when it is installed: see :func:`pytest_cmdline_main`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import lepton_nn

PKG_PARENT = Path(lepton_nn.__file__).resolve().parents[1]

MAX_WORKERS = 4  # each worker process imports the suite's dependencies: ~1 GB of memory each


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """No ``-n`` given: one xdist worker per CPU this process may use, up to ``MAX_WORKERS``
    (none on one CPU).

    A hook rather than ``-n auto`` in ``addopts``, so that ``-p no:xdist`` and a pytest
    without xdist still run the suite in one process (an unknown ``-n`` is a usage error), and
    ``pytest benchmarks`` (timed, never in parallel) is left alone. ``-n N`` picks N workers,
    ``-n 0`` or ``--pdb`` one process. Not in a worker (``workerinput``): a worker's
    ``numprocesses`` is None too, and setting it there would start workers of workers.

    Whole modules go to one worker (``--dist loadscope`` unless ``--dist`` is given): many
    modules build a costly fixture once for all their tests (a trained model, a cluster, the
    portable build of every extension), which a per-test split would build once per worker.
    """
    if hasattr(config, "workerinput") or not config.pluginmanager.hasplugin("xdist"):
        return
    if config.option.numprocesses is None and not config.getoption("usepdb"):
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if (cpus or 1) > 1:
            config.option.numprocesses = min(MAX_WORKERS, cpus)
            if config.option.dist == "no":
                config.option.dist = "loadscope"


# the modules that take longest (minutes: they compile every extension again), first: a
# worker that took them last would run on alone at the end of the suite
SLOW_FIRST = ("test_portable_build.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Collect :data:`SLOW_FIRST`'s tests first (a stable sort: the rest keep their order)."""
    items.sort(key=lambda item: item.path.name not in SLOW_FIRST)
