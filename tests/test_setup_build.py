"""setup.py's build command: the extensions compile in parallel, one per CPU, unless told."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build_ext(monkeypatch):
    setuptools = pytest.importorskip("setuptools")
    from setuptools.dist import Distribution

    seen = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: seen.update(kw))
    monkeypatch.setenv("LEPTON_NO_EXT", "1")  # no cythonize: only the command class is wanted
    runpy.run_path(str(ROOT / "setup.py"))
    cmd = seen["cmdclass"]["build_ext"](Distribution())
    cmd.initialize_options()
    return cmd


def test_extensions_build_in_parallel(monkeypatch):
    cmd = _build_ext(monkeypatch)
    cmd.finalize_options()
    assert cmd.parallel == (os.cpu_count() or 1)


def test_an_explicit_job_count_wins(monkeypatch):
    cmd = _build_ext(monkeypatch)
    cmd.parallel = "1"
    cmd.finalize_options()
    assert cmd.parallel == 1
