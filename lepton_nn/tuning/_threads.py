"""Worker-process setup: cap the BLAS/OpenMP threads of each worker.

This module imports nothing heavy, so a freshly spawned worker runs it before NumPy loads
(the environment variables then take effect); in a forked worker, where the BLAS library is
already loaded, ``threadpoolctl`` (when installed) changes its thread count at run time.
"""

from __future__ import annotations

import os
import sys

_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "LEPTON_NUM_THREADS",
)


def limit_threads(n: int) -> None:
    """Use at most ``n`` threads in BLAS/OpenMP (a process-pool initializer)."""
    n = max(int(n), 1)
    for var in _VARS:
        os.environ[var] = str(n)
    if "numba" not in sys.modules:  # numba refuses a change once its threads exist
        os.environ["NUMBA_NUM_THREADS"] = str(n)
    threads = sys.modules.get("lepton_nn.backend.threads")
    if threads is not None:  # forked from a parent that may have set its own count
        threads.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=n)
