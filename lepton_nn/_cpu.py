"""The cores this process may run on. Imports only ``os``: process-pool initializers use it
before NumPy loads, and the backend's thread setting defaults to it."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1
