"""The compiled kernels build on a CPU without AVX2 (ARM, or x86 built without -mavx2).

Each ``kernels/<name>.pyx`` is turned into C by Cython and compiled with gcc to an object twice:
(1) for baseline x86-64 without AVX2 or FMA (``-march=x86-64 -mno-avx2 -mno-fma``): the AVX2
paths there are compiled per function (``target("avx2,fma")``) and chosen at run time;
(2) as on a CPU that is not x86 at all: ``__x86_64__`` undefined, so every ISA guard in
``kernels/csrc`` takes its plain-C branch, as gcc on ARM would. A helper that only exists
inside an ``#if ...AVX2`` block but is called outside it shows up as an implicit declaration
(an error since gcc 14, a missing symbol at import before that); both are checked here.

Mode (2) pretends to be another target with the host's headers, so it is for checking what the
preprocessor leaves, not for running: the object is never loaded. The plain-C loops themselves
run on this machine through each kernel's "portable" switch (``conv2d_direct_portable``,
``LEPTON_ISA=portable``), against their NumPy twins, in the kernels' own tests.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from conftest import PKG_PARENT

ROOT = Path(__file__).resolve().parents[1]
PYX = sorted((ROOT / "kernels").glob("*.pyx"))
GCC = shutil.which("gcc")
X86 = platform.machine().lower() in ("x86_64", "amd64")
# functions the kernel headers define (every one is static): none may stay undefined
OWN = re.compile(r"^(lnn|qg|qv|qc|qcd|la|sp|lepton)_\w+$")

pytestmark = pytest.mark.skipif(GCC is None, reason="gcc is not installed (needed to compile)")


@pytest.fixture(scope="module")
def c_sources(tmp_path_factory):
    """Each extension's Cython output, with the directives setup.py uses."""
    pytest.importorskip("Cython", reason="Cython (the `test` extra) turns the .pyx into C")
    out = tmp_path_factory.mktemp("portable_c")
    directives = "boundscheck=False,wraparound=False,cdivision=True,initializedcheck=False"
    for pyx in PYX:
        subprocess.run(
            [sys.executable, "-m", "cython", "-3", "-X", directives, "--module-name",
             f"lepton_nn.kernels._{pyx.stem}", "-o", str(out / f"{pyx.stem}.c"), str(pyx)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    return out


def _compile(src: Path, flags: list[str], tmp: Path) -> tuple[subprocess.CompletedProcess, Path]:
    obj = tmp / (src.stem + ".o")
    cmd = [
        GCC, "-c", "-O0", "-std=c11", "-Werror=implicit-function-declaration",
        "-fno-math-errno", "-DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION",
        "-I", sysconfig.get_paths()["include"], "-I", np.get_include(),
        "-I", str(ROOT / "kernels" / "csrc"), *flags, "-o", str(obj), str(src),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True), obj


def _undefined_own(obj: Path) -> list[str]:
    nm = shutil.which("nm")
    if nm is None:
        return []
    out = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[-1] for line in out.splitlines() if OWN.match(line.split()[-1]))


def _not_x86_flags(tmp: Path) -> list[str]:
    if not X86:
        return []  # this machine is the case itself
    # glibc's <gnu/stubs.h> asks for the 32-bit stubs once __x86_64__ is gone: an empty one
    (tmp / "gnu").mkdir(exist_ok=True)
    (tmp / "gnu" / "stubs-32.h").write_text("")
    return ["-U__x86_64__", "-U__amd64__", "-I", str(tmp)]


@pytest.mark.parametrize("pyx", PYX, ids=[p.stem for p in PYX])
def test_builds_as_on_a_cpu_that_is_not_x86(pyx, c_sources, tmp_path):
    res, obj = _compile(c_sources / f"{pyx.stem}.c", _not_x86_flags(tmp_path), tmp_path)
    assert res.returncode == 0, f"{pyx.name} without x86 SIMD:\n{res.stderr[-3000:]}"
    assert _undefined_own(obj) == [], f"{pyx.name}: helpers only defined under an ISA guard"


@pytest.mark.skipif(not X86, reason="an x86-64 build option")
@pytest.mark.parametrize("pyx", PYX, ids=[p.stem for p in PYX])
def test_builds_for_x86_64_without_avx2(pyx, c_sources, tmp_path):
    flags = ["-march=x86-64", "-mtune=generic", "-mno-avx2", "-mno-fma"]
    res, obj = _compile(c_sources / f"{pyx.stem}.c", flags, tmp_path)
    assert res.returncode == 0, f"{pyx.name} without -mavx2:\n{res.stderr[-3000:]}"
    assert _undefined_own(obj) == []


RUN_TWINS = """
import importlib.util, sys
import lepton_nn.kernels as pkg
spec = importlib.util.spec_from_file_location("lepton_nn.kernels._conv", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
pkg._conv = mod
import pytest
code = pytest.main(["-q", "-x", "-p", "no:cacheprovider", *sys.argv[2:]])
print("ran on", sys.modules["lepton_nn.kernels._conv"].__file__)
sys.exit(code)
"""


@pytest.mark.skipif(not X86, reason="here the usual build is already the portable one")
def test_conv_built_without_simd_passes_its_twin_tests(c_sources, tmp_path):
    """``-DLEPTON_NO_SIMD`` (the portable-only build, as on a CPU without AVX2) leaves no
    AVX2/AVX-512 code in ``_conv`` (no ymm or zmm register in its machine code), and that build,
    loaded in place of the usual one, passes the direct and Winograd convolutions' tests
    against their NumPy twins."""
    so = tmp_path / ("_conv" + sysconfig.get_config_var("EXT_SUFFIX"))
    res, _ = _compile(c_sources / "conv.c", ["-DLEPTON_NO_SIMD", "-O2", "-fPIC"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    link = subprocess.run(
        [GCC, "-shared", "-o", str(so), str(tmp_path / "conv.o")], capture_output=True, text=True
    )
    assert link.returncode == 0, link.stderr[-3000:]
    objdump = shutil.which("objdump")
    if objdump is not None:
        asm = subprocess.run([objdump, "-d", str(so)], capture_output=True, text=True).stdout
        wide = [ln for ln in asm.splitlines() if "%ymm" in ln or "%zmm" in ln]
        assert wide == [], f"{len(wide)} AVX instructions left, first: {wide[0]}"
    # run where the imported package lives (the source tree in development, site-packages
    # after pip install): a checkout without compiled kernels would offer no cython backend
    tests = [str(ROOT / "tests" / f) for f in ("test_conv_direct.py", "test_conv_winograd.py")]
    env = {**os.environ, "PYTHONPATH": str(PKG_PARENT)}
    run = subprocess.run(
        [sys.executable, "-c", RUN_TWINS, str(so), *tests, "-k", "cython"],
        cwd=PKG_PARENT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and f"ran on {so}" in run.stdout
