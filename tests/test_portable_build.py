"""The compiled kernels build on a CPU without AVX2 (ARM, or x86 built without -mavx2).

Each ``kernels/<name>.pyx`` is turned into C by Cython and compiled with gcc to an object twice:
(1) for baseline x86-64 without AVX2 or FMA (``-march=x86-64 -mno-avx2 -mno-fma``): the AVX2
paths there are compiled per function (``target("avx2,fma")``) and chosen at run time;
(2) as on a CPU that is not x86 at all: ``__x86_64__`` undefined, so every ISA guard in
``kernels/csrc`` takes its plain-C branch, as gcc on ARM would. A helper that only exists
inside an ``#if ...AVX2`` block but is called outside it shows up as an implicit declaration
(an error since gcc 14, a missing symbol at import before that); both are checked here.

Mode (2) pretends to be another target with the host's headers, so it is for checking what the
preprocessor leaves, not for running: the object is never loaded (its spin-wait hint, spin_hint.h,
must be the plain compiler barrier there: no ``pause`` instruction). The plain-C loops run on
this machine through each kernel's "portable" switch (``conv2d_direct_portable``,
``LEPTON_ISA=portable``), against their NumPy twins, in the kernels' own tests, and
(3) as a whole: every extension built with ``-DLEPTON_NO_SIMD`` (the portable-only build) holds
no ymm/zmm instruction and, loaded in place of the usual build, passes the kernels' twin tests.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
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

    def cythonize(pyx):
        subprocess.run(
            [sys.executable, "-m", "cython", "-3", "-X", directives, "--module-name",
             f"lepton_nn.kernels._{pyx.stem}", "-o", str(out / f"{pyx.stem}.c"), str(pyx)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip

    _each(cythonize, PYX)
    return out


def _each(fn, items):
    """``[fn(x) for x in items]``, as many at once as there are CPUs (each runs a compiler)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as ex:
        return list(ex.map(fn, items))


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


def _disassembly(obj: Path) -> str:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    return subprocess.run([objdump, "-d", str(obj)], capture_output=True, text=True).stdout


def _not_x86_flags(tmp: Path) -> list[str]:
    if not X86:
        return []  # this machine is the case itself
    # glibc's <gnu/stubs.h> asks for the 32-bit stubs once __x86_64__ is gone: an empty one
    (tmp / "gnu").mkdir(exist_ok=True)
    (tmp / "gnu" / "stubs-32.h").write_text("")
    return ["-U__x86_64__", "-U__amd64__", "-I", str(tmp)]


NO_AVX2 = ["-march=x86-64", "-mtune=generic", "-mno-avx2", "-mno-fma"]


@pytest.fixture(scope="module")
def objects(c_sources, tmp_path_factory):
    """Every extension compiled as on a CPU that is not x86 and (on x86) for x86-64 without
    AVX2, all at once on the CPUs: {(mode, stem): (CompletedProcess, object)}."""
    not_x86 = tmp_path_factory.mktemp("not_x86")
    modes = {"not_x86": _not_x86_flags(not_x86)}
    if X86:
        modes["no_avx2"] = NO_AVX2
    jobs = [(mode, pyx.stem) for mode in modes for pyx in PYX]
    dirs = {mode: tmp_path_factory.mktemp(mode + "_o") for mode in modes}
    done = _each(lambda j: _compile(c_sources / f"{j[1]}.c", modes[j[0]], dirs[j[0]]), jobs)
    return dict(zip(jobs, done))


@pytest.mark.parametrize("pyx", PYX, ids=[p.stem for p in PYX])
def test_builds_as_on_a_cpu_that_is_not_x86(pyx, objects):
    res, obj = objects["not_x86", pyx.stem]
    assert res.returncode == 0, f"{pyx.name} without x86 SIMD:\n{res.stderr[-3000:]}"
    assert _undefined_own(obj) == [], f"{pyx.name}: helpers only defined under an ISA guard"
    if X86:  # spin_hint.h took its plain branch: no x86 pause is left (the x86 build has some)
        assert "pause" not in _disassembly(obj), f"{pyx.name}: an x86 spin hint off x86"


@pytest.mark.skipif(not X86, reason="an x86-64 build option")
@pytest.mark.parametrize("pyx", PYX, ids=[p.stem for p in PYX])
def test_builds_for_x86_64_without_avx2(pyx, objects):
    res, obj = objects["no_avx2", pyx.stem]
    assert res.returncode == 0, f"{pyx.name} without -mavx2:\n{res.stderr[-3000:]}"
    assert _undefined_own(obj) == []
    if pyx.stem == "pool" and shutil.which("objdump"):  # its idle workers' spin: LNN_SPIN_HINT
        assert "pause" in _disassembly(obj)


SPIN = '#include "spin_hint.h"\nvoid spin(volatile int *f) { while (!*f) LNN_SPIN_HINT(); }\n'


@pytest.mark.parametrize(
    "target, flags, hint",
    [("x86", [], "pause"), ("aarch64", ["-D__aarch64__"], "yield"), ("other", [], None)],
)
def test_spin_hint_per_cpu(target, flags, hint, tmp_path):
    """LNN_SPIN_HINT() is x86's pause, ARM's yield, elsewhere a compiler barrier alone (gcc
    to assembly only, so the ARM case compiles here too)."""
    if target == "x86" and not X86:
        pytest.skip("an x86 compiler")
    if target != "x86":  # whatever this machine is, the target is named alone
        arch = ("__x86_64__", "__amd64__", "__i386__", "__aarch64__", "__arm__")
        flags = [*(f"-U{m}" for m in arch), *flags]
    src = tmp_path / "spin.c"
    src.write_text(SPIN)
    asm = tmp_path / "spin.s"
    cmd = [GCC, "-S", "-O2", "-I", str(ROOT / "kernels" / "csrc"), *flags, "-o", str(asm), str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    text = re.sub(r"\brep\s+nop\b", "pause", asm.read_text())  # gcc's spelling of pause
    words = set(re.findall(r"\b(pause|yield)\b", text))
    assert words == ({hint} if hint else set()), words


def test_one_spin_hint_in_the_kernels():
    """Spin-wait hints are written once, in spin_hint.h: nowhere else an x86-only pause."""
    sources = [*(ROOT / "kernels" / "csrc").glob("*.h"), *(ROOT / "kernels").glob("*.p*x*")]
    found = [
        f"{src.name}:{i}"
        for src in sources
        if src.name != "spin_hint.h"
        for i, line in enumerate(src.read_text().splitlines(), 1)
        if re.search(r"ia32_pause|_mm_pause|\byield\b\s*\\?\"|__yield\(", line)
    ]
    assert found == []


# Each extension's twin tests, run on the portable-only build (-DLEPTON_NO_SIMD) of every
# extension at once; ``-k`` leaves out the Numba backend's cases (and its JIT compiles). The
# pool has no SIMD: every threaded test here runs on it. In one process (``no:xdist``): the
# modules it imported are listed after the run.
TWIN_TESTS = {
    "conv": ("test_conv_direct.py", "test_conv_winograd.py"),
    "dense": ("test_kernels_parity.py", "test_dense_packed.py", "test_dense_chain.py"),
    "gemm": ("test_gemm_train.py",),
    "qgemm": ("test_qgemm.py", "test_qgemm_tails.py", "test_qgemv.py"),
    "recurrent": ("test_recurrent.py", "test_recurrent_rows.py", "test_recurrent_q8.py"),
    "sparse": ("test_sparse_kernels.py", "test_sparse_chain.py", "test_act_special_values.py"),
}
# not a twin test: the compiled step's Numba replay (its JIT compile is ~20 s of CI)
NOT_TWINS = ("test_compiled_adam_runs_the_eager_kernel_on_the_pool",)
SELECT = " and ".join(f"not {name}" for name in ("numba", *NOT_TWINS))
RUN_TWINS = """
import sys
import pytest
code = pytest.main(
    ["-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist", "-k", sys.argv[1], *sys.argv[2:]]
)
for name in sorted(n for n in sys.modules if n.startswith("lepton_nn.kernels._")):
    mod = sys.modules[name]
    isas = list(mod.supported_isas()) if hasattr(mod, "supported_isas") else None
    print("ran on", mod.__name__, mod.__file__, isas)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def no_simd_build(c_sources, tmp_path_factory):
    """Every extension compiled with ``-DLEPTON_NO_SIMD`` (the portable-only build, as on a
    CPU without AVX2), in a copy of the imported package (so that the tests' own
    subprocesses import that build too): {stem: path of the module}."""
    out = tmp_path_factory.mktemp("no_simd")
    shutil.copytree(
        PKG_PARENT / "lepton_nn", out / "lepton_nn", ignore=shutil.ignore_patterns("__pycache__")
    )
    kernels = out / "lepton_nn" / "kernels"

    def build(pyx):
        res, obj = _compile(c_sources / f"{pyx.stem}.c", ["-DLEPTON_NO_SIMD", "-O2", "-fPIC"], out)
        assert res.returncode == 0, f"{pyx.name} with -DLEPTON_NO_SIMD:\n{res.stderr[-3000:]}"
        so = kernels / f"_{pyx.stem}{sysconfig.get_config_var('EXT_SUFFIX')}"
        link = [GCC, "-shared", "-o", str(so), str(obj)]
        res = subprocess.run(link, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        return pyx.stem, so

    return dict(_each(build, PYX))


def test_every_extension_has_its_twin_tests_on_the_portable_build():
    assert {p.stem for p in PYX} == {*TWIN_TESTS, "pool"}


@pytest.mark.skipif(not X86, reason="here the usual build is already the portable one")
@pytest.mark.parametrize("pyx", PYX, ids=[p.stem for p in PYX])
def test_built_without_simd_has_no_avx(pyx, no_simd_build):
    """``-DLEPTON_NO_SIMD`` leaves no AVX2/AVX-512 code: no ymm or zmm register in the
    module's machine code (every ISA guard in kernels/csrc honours it)."""
    asm = _disassembly(no_simd_build[pyx.stem])
    assert "<PyInit__" in asm  # the disassembly is there
    wide = [ln for ln in asm.splitlines() if "%ymm" in ln or "%zmm" in ln]
    assert wide == [], f"{pyx.name}: {len(wide)} AVX instructions left, first: {wide[0]}"


@pytest.fixture(scope="module")
def twin_runs(no_simd_build):
    """Each group's twin tests on the portable-only build, in its own subprocess, as many at
    once as there are CPUs (the groups are independent): {group: CompletedProcess}."""
    pkg_parent = next(iter(no_simd_build.values())).parents[2]
    env = {**os.environ, "PYTHONPATH": str(pkg_parent)}
    env.pop("LEPTON_ISA", None)

    def run(ext):
        tests = [str(ROOT / "tests" / f) for f in TWIN_TESTS[ext]]
        return ext, subprocess.run(
            [sys.executable, "-c", RUN_TWINS, SELECT, *tests],
            cwd=pkg_parent, env=env, capture_output=True, text=True,
        )  # fmt: skip

    # the longest groups first, so that the last ones to start are short
    order = sorted(TWIN_TESTS, key=lambda e: e not in ("dense", "gemm"))
    with ThreadPoolExecutor(max_workers=max(1, min(len(order), os.cpu_count() or 1))) as ex:
        return dict(ex.map(run, order))


@pytest.mark.skipif(not X86, reason="here the usual build is already the portable one")
@pytest.mark.parametrize("ext", sorted(TWIN_TESTS))
def test_built_without_simd_passes_its_twin_tests(ext, no_simd_build, twin_runs):
    """That build of every extension, imported in place of the usual one (by the tests' own
    subprocesses too), passes each kernel's tests against its NumPy twin (every backend's
    cases but Numba's), and offers no ISA path but the portable one."""
    run = twin_runs[ext]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
    ran = {
        ln.split()[2]: ln.split(None, 4)[3:]
        for ln in run.stdout.splitlines()
        if ln.startswith("ran on ")
    }
    assert f"lepton_nn.kernels._{ext}" in ran
    for stem, so in no_simd_build.items():
        if f"lepton_nn.kernels._{stem}" in ran:
            path, isas = ran[f"lepton_nn.kernels._{stem}"]
            assert path == str(so), (stem, path)
            assert isas in ("None", "['portable']"), (stem, isas)
