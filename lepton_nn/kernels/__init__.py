"""Floor 1: hot loops only.

Compiled modules ``_<name>`` are built from ``kernels/<name>.pyx`` at install (optional);
``numba_<name>.py`` hold Numba ``@njit(cache=True)`` functions and are imported lazily by the
numba backend. Arrays in, arrays out; nothing here validates its input.
"""

from __future__ import annotations

import contextlib
import functools
import os

_INTERESTING = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "neon",
    "asimd",
    "sve",
)


@functools.lru_cache(maxsize=1)
def cpu_features() -> tuple[str, ...]:
    """SIMD features of this CPU that matter to our kernels (Linux: from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return tuple(f for f in _INTERESTING if f in have)
    except OSError:
        pass
    return ()


def numba_cache_folder() -> str | None:
    """Where Numba should cache our kernels: ``None`` (beside the sources, Numba's default) when
    this package's folder belongs to the current user and is writable; otherwise a per-user
    folder (``$XDG_CACHE_HOME`` or ``~/.cache``, ``%LOCALAPPDATA%`` on Windows, then
    ``lepton_nn/numba``), so a system-wide install is never written to. ``NUMBA_CACHE_DIR``
    in the environment wins (Numba reads it itself)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    getuid = getattr(os, "getuid", None)
    try:
        ours = getuid is None or os.stat(here).st_uid == getuid()
    except OSError:
        ours = False
    if ours and os.access(here, os.W_OK):
        return None
    base = os.environ.get("LOCALAPPDATA") if os.name == "nt" else None
    base = (
        base or os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    )
    return os.path.join(base, "lepton_nn", "numba")


@contextlib.contextmanager
def numba_cache():
    """While our Numba kernels are defined (``cache=True`` picks its folder at decoration):
    use :func:`numba_cache_folder` if it names one, then put Numba's setting back."""
    import numba

    folder = numba_cache_folder()
    before = numba.config.CACHE_DIR
    if folder is not None:
        numba.config.CACHE_DIR = folder
    try:
        yield folder
    finally:
        numba.config.CACHE_DIR = before
