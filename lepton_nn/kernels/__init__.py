"""Floor 1: hot loops only.

Compiled modules ``_<name>`` are built from ``kernels/<name>.pyx`` at install (optional);
``numba_<name>.py`` hold Numba ``@njit(cache=True)`` functions and are imported lazily by the
numba backend. Arrays in, arrays out; nothing here validates its input.
"""
