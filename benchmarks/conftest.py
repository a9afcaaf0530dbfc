"""Collect the ``bench_*.py`` suites when pytest is pointed at this folder.

``pytest benchmarks --benchmark-disable`` then runs every benchmark once, as a smoke test.
"""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        if not parent.session.isinitpath(file_path):  # named on the command line: already taken
            return pytest.Module.from_parent(parent, path=file_path)
    return None
