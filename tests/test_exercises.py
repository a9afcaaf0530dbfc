"""The course's exercises (docs/exercises/chNN/) are run as a reader runs them, by pytest in a
fresh process: every test must pass on the reference ``solution.py`` (``--solution``) and fail,
with the stub's NotImplementedError, on the untouched ``exercise.py``, so that no exercise can
pass without the reader's code. The stub and the solution offer the same names and signatures."""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import PKG_PARENT

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "docs" / "exercises"
CHAPTERS = sorted(p.name for p in EXERCISES.glob("ch[0-9][0-9]") if p.is_dir())


def _start(tmp: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """Start pytest on docs/exercises in a fresh process, with a JUnit XML report."""
    report = tmp / "report.xml"
    env = {**os.environ, "PYTHONPATH": str(PKG_PARENT)}  # the package as imported here
    cmd = [sys.executable, "-m", "pytest", str(EXERCISES), "-q", "-p", "no:cacheprovider"]
    proc = subprocess.Popen(
        [*cmd, "--tb=no", f"--junitxml={report}", *extra],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, report


def _outcomes(proc: subprocess.Popen, report: Path) -> dict[str, tuple[str, str]]:
    """Test id (chNN::name) -> (outcome, failure message) of a finished run."""
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1), output[-3000:]  # 2 and up: pytest could not run
    out = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        chapter = case.get("classname").split(".")[-2]  # docs.exercises.ch03.test_ch03
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped") is not None
        outcome = "failed" if bad is not None else "skipped" if skipped else "passed"
        out[f"{chapter}::{case.get('name')}"] = (outcome, "" if bad is None else bad.get("message"))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both runs at once (they are independent): the solutions, and the untouched stubs."""
    started = {
        which: _start(tmp_path_factory.mktemp(which), *flags)
        for which, flags in (("solution", ["--solution"]), ("exercise", []))
    }
    try:
        return {which: _outcomes(*run) for which, run in started.items()}
    finally:
        for proc, _ in started.values():  # the other run, when one failed
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def _load(chapter: str, which: str):
    spec = importlib.util.spec_from_file_location(
        f"{chapter}_{which}_api", EXERCISES / chapter / f"{which}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _api(module) -> dict[str, str]:
    """Public functions and classes defined in the module (with their public methods), as
    name -> signature."""
    api = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            for meth, fn in vars(obj).items():
                if callable(fn) and (not meth.startswith("_") or meth.endswith("__")):
                    api[f"{name}.{meth}"] = str(inspect.signature(fn))
        elif callable(obj):
            api[name] = str(inspect.signature(obj))
    return api


def test_the_course_covers_the_issues_chapters():
    """Every chapter has exercises: the issue's value, broadcasting, Dense, softmax + Adam,
    im2col + LSTM, pruning + int8, and the training loop and the backward walk."""
    chapters = sorted(p.name[:2] for p in (ROOT / "docs" / "course").glob("[0-9][0-9]_*.md"))
    assert CHAPTERS == [f"ch{n}" for n in chapters]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_stub_and_solution_offer_the_same_names(chapter):
    stub, solution = _api(_load(chapter, "exercise")), _api(_load(chapter, "solution"))
    assert stub and stub == solution


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_chapter_ends_by_pointing_at_its_exercises(chapter):
    (page,) = (ROOT / "docs" / "course").glob(f"{chapter[2:]}_*.md")
    text = page.read_text("utf-8")
    assert f"pytest docs/exercises/{chapter}" in text
    tail = text[text.rindex("## ") :]  # the last section
    assert f"docs/exercises/{chapter}" in tail, "the exercises pointer is not the chapter's end"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_solution_passes_every_test(runs, chapter):
    mine = {k: v for k, v in runs["solution"].items() if k.startswith(f"{chapter}::")}
    assert len(mine) >= 4, f"{chapter} has only {len(mine)} tests"
    failed = {k: msg for k, (outcome, msg) in mine.items() if outcome != "passed"}
    assert not failed


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_test_fails_on_the_untouched_stub(runs, chapter):
    mine = {k: v for k, v in runs["exercise"].items() if k.startswith(f"{chapter}::")}
    assert set(mine) == {k for k in runs["solution"] if k.startswith(f"{chapter}::")}
    for test_id, (outcome, msg) in mine.items():
        assert outcome == "failed" and "NotImplementedError" in msg, (test_id, outcome, msg)
