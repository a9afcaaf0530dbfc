"""The exercises' one fixture: ``ex``, the module under test for the chapter being run.

By default it is the reader's ``exercise.py`` of the test file's folder; ``--solution`` runs the
same tests against the reference ``solution.py`` next to it (CI does both: the solutions must
pass, and every test must fail on the untouched stubs). Each module is loaded by path under a
name of its own (``ch03_exercise``), so the chapters' files may share their names.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--solution",
        action="store_true",
        help="test the reference solution.py of each chapter instead of your exercise.py",
    )


def load(folder: Path, which: str):
    """Import ``folder/<which>.py`` (which: "exercise" or "solution") as ``<folder>_<which>``."""
    name = f"{folder.name}_{which}"
    spec = importlib.util.spec_from_file_location(name, folder / f"{which}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ex(request):
    which = "solution" if request.config.getoption("--solution") else "exercise"
    return load(request.path.parent, which)
