"""Build the optional compiled kernels.

Every ``kernels/<name>.pyx`` becomes the extension module ``lepton_nn.kernels._<name>``.
Hand-written C lives in ``kernels/csrc`` and is included from the ``.pyx`` files;
``kernels/hostprobe.c`` is a plain C module (``_hostprobe``, the benchmark's host probe);
``lepton_nn.kernels._pool`` (``kernels/pool.pyx``) is the one native thread pool the others
bind at import (``kernels/pool_bind.pxi``).
Compilation is best effort: if Cython or a C compiler is missing, or a module fails to
build, the install still succeeds and lepton_nn runs on its NumPy (and Numba) kernels.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent.resolve()
REQUIRED = os.environ.get("LEPTON_REQUIRE_EXT") == "1"


def _extensions():
    if os.environ.get("LEPTON_NO_EXT"):
        return []
    try:
        import numpy as np
        from Cython.Build import cythonize
        from setuptools import Extension
    except Exception as exc:  # no Cython or NumPy at build time: pure-Python install
        print(f"lepton_nn: compiled kernels skipped ({exc})", file=sys.stderr)
        return []
    gnu_x86 = platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32"
    args = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-std=c11"] if gnu_x86 else ["-O2"]
    if sys.platform != "win32" and not gnu_x86:
        args += ["-fno-math-errno", "-std=c11"]
    # Release builds: no debug information (Python's own CFLAGS carry -g, which made the
    # extensions 7.9 MB instead of ~1 MB); LEPTON_DEBUG=1 keeps it for debugging.
    link = []
    if sys.platform != "win32" and not os.environ.get("LEPTON_DEBUG"):
        args.append("-g0")
        if sys.platform.startswith("linux"):
            link.append("-s")  # strip the symbol table too (the dynamic one stays)
    exts = []
    only = {n for n in os.environ.get("LEPTON_EXT_ONLY", "").split(",") if n}
    # the C headers and .pxi files each .pyx includes: an edited one rebuilds the extensions
    headers = sorted(os.path.relpath(h, HERE) for h in (HERE / "kernels" / "csrc").glob("*.h"))
    headers += sorted(os.path.relpath(h, HERE) for h in (HERE / "kernels").glob("*.pxi"))
    for pyx in sorted((HERE / "kernels").glob("*.pyx")):
        if only and pyx.stem not in only:
            continue
        exts.append(
            Extension(
                f"lepton_nn.kernels._{pyx.stem}",
                [os.path.relpath(pyx, HERE)],
                include_dirs=[np.get_include(), "kernels/csrc"],
                depends=headers,
                extra_compile_args=args,
                extra_link_args=link,
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    if not only or "hostprobe" in only:  # plain C, no Cython: lepton_nn.bench's host probe
        exts.append(
            Extension(
                "lepton_nn.kernels._hostprobe",
                ["kernels/hostprobe.c"],
                extra_compile_args=args,
                extra_link_args=link,
            )
        )
    return cythonize(
        exts,
        build_dir="build/cython",
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        quiet=True,
        # the .pyx files translate in parallel too (~20 CPU s in all); not on Windows, where
        # multiprocessing's spawn would import this file again in each worker
        nthreads=0 if sys.platform == "win32" else (os.cpu_count() or 1),
    )


class OptionalBuildExt(build_ext):
    """Build each extension on its own; a failure is reported, and fatal only with
    ``LEPTON_REQUIRE_EXT=1`` (CI sets it: a kernel that stopped compiling must fail the build,
    not leave its tests to the pure-Python fallback). The extensions compile in parallel, one
    per CPU (a serial build of the seven took ~3 CPU minutes, all on one core while the others
    idled); ``-j N`` on the command line still wins."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self):
        try:
            super().run()
        except Exception as exc:
            print(f"lepton_nn: compiled kernels not built ({exc})", file=sys.stderr)
            if REQUIRED:
                raise

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"lepton_nn: extension {ext.name} not built ({exc})", file=sys.stderr)
            if REQUIRED:
                raise


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
