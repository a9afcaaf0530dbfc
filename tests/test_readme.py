"""The README cannot rot: its blocks run as a new user pastes them, in order, in one empty
folder (Python blocks in one namespace, shell blocks with ``lepton-nn`` on the PATH); only the
set-up block, which installs the package, is not run here (CI runs it verbatim)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from conftest import PKG_PARENT

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
# the README's first block, exactly
SETUP = 'pip install . && lepton-nn demo\npip install ".[fast,test]" && pytest\n'


def blocks() -> list[tuple[str, str, int]]:
    text = README.read_text(encoding="utf-8")
    return [(m[1], m[2], text.count("\n", 0, m.start()) + 2) for m in FENCE.finditer(text)]


def test_the_readme_opens_with_the_two_set_up_commands():
    text = README.read_text(encoding="utf-8")
    assert text.startswith("# lepton_nn\n\n```bash\n" + SETUP + "```\n")


def _shim(folder: Path) -> dict:
    """A ``lepton-nn`` command running the package these tests import, with this interpreter."""
    tool = folder / "lepton-nn"
    tool.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lepton_nn "$@"\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ)
    env["PATH"] = f"{folder}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PKG_PARENT), env.get("PYTHONPATH")]))
    return env


def test_every_readme_block_runs_in_order_in_an_empty_folder(tmp_path, monkeypatch):
    work, tools = tmp_path / "work", tmp_path / "bin"
    work.mkdir()
    tools.mkdir()
    env = _shim(tools)
    monkeypatch.chdir(work)
    ns: dict = {"__name__": "readme"}
    ran = {"python": 0, "bash": 0}
    for i, (lang, code, line) in enumerate(blocks()):
        if i == 0:
            assert code == SETUP  # installs: CI runs it as it is
            continue
        if lang == "python":
            exec(compile(code, f"{README}:{line}", "exec"), ns)
        elif lang in ("bash", "sh", "shell"):
            r = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert r.returncode == 0, f"README.md:{line}: exit {r.returncode}\n{r.stderr[-3000:]}"
        else:
            continue
        ran[lang] += 1
    assert ran["python"] >= 3 and ran["bash"] >= 2
    assert (work / "credit_small.lnn").exists() and (work / "model_int8.lnn").exists()
