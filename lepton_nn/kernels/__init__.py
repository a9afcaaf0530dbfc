"""Floor 1: hot loops only.

Compiled modules ``_<name>`` are built from ``kernels/<name>.pyx`` at install (optional);
``numba_<name>.py`` hold Numba ``@njit(cache=True)`` functions and are imported lazily by the
numba backend. Arrays in, arrays out; nothing here validates its input.
"""

from __future__ import annotations

import functools

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
