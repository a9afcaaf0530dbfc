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
    """
    if hasattr(config, "workerinput") or not config.pluginmanager.hasplugin("xdist"):
        return
    if config.option.numprocesses is None and not config.getoption("usepdb"):
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if (cpus or 1) > 1:
            config.option.numprocesses = min(MAX_WORKERS, cpus)
