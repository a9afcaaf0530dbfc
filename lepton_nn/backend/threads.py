"""Intra-op threads: how many, and a parallel loop over independent tasks.

One budget: ``set_num_threads(n)``, else ``LEPTON_NUM_THREADS``, else the cores this process
may run on. Two ways to use it:

- The inference runtime (``lepton_nn.runtime``; a model loaded with ``threads=None``
  follows the budget: :func:`follow` has set_num_threads tell it, and it re-plans at its
  next call; ``threads=n`` pins n) runs its parallel regions on the compiled kernels' one
  native pool (``kernels/csrc/pool.h``, ``lepton_nn.kernels._pool``): the split happens in
  C, with no Python per share and no GIL; its workers spin ``LEPTON_POOL_SPIN_US`` (default
  5000 us) for the next job before they sleep, so a burst of calls never lets their cores
  halt.
- The training ops (autograd's convolution) still use :func:`parallel_for` below: plain
  Python threads, as the compiled kernels and NumPy's matmul release the GIL.

Ops ask :func:`threads_for` with their amount of work, so small work stays on the calling
thread (a hand-off to a worker costs ~10-50 us, more on a busy shared machine).

Each task runs on whichever thread takes it: scratch memory must be per thread (the ops'
``workspace`` is), and results must not depend on the thread (each task writes its own slice
of the output), so one thread or several give bit-identical results.
"""

from __future__ import annotations

import numbers
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .._cpu import usable_cores

if TYPE_CHECKING:  # the pool is made at the first parallel region (imports stay light)
    from concurrent.futures import ThreadPoolExecutor

__all__ = [
    "get_num_threads",
    "set_num_threads",
    "check_threads",
    "threads_for",
    "row_ranges",
    "thread_ranges",
    "parallel_for",
    "blas_single",
    "blas_held",
    "blas_threads_controlled",
    "blas_gemm",
    "native_pool_wake",
    "PARALLEL_MIN_FLOPS",
    "follow",
]

# Below this many floating-point operations an op runs on one thread: ~50-100 us of work on
# one core, a few hand-offs' worth.
PARALLEL_MIN_FLOPS = 4_000_000
# OpenBLAS splits a GEMM over its threads from 65536 x 4 multiply-adds. Between that and
# PARALLEL_MIN_FLOPS the split gains nothing, and the woken BLAS workers then spin for a while
# on the cores the next parallel region needs (W3 at 2 threads: 10.4 ms a step with its small
# Dense layer on two BLAS threads, 6.8 ms with it on one).
BLAS_SPLIT_MIN_FLOPS = 2 * 65536 * 4

_lock = threading.Lock()
_local = threading.local()  # .inside: this thread is running a share of a parallel_for
_setting: int | None = None
# objects told by set_num_threads (their .threads_changed()), while they live: see follow()
_followers: weakref.WeakSet = weakref.WeakSet()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_warned_env: set[str] = set()  # LEPTON_NUM_THREADS values already warned about


def get_num_threads() -> int:
    """Threads an op may use: set_num_threads(), else LEPTON_NUM_THREADS, else the cores
    this process may run on."""
    if _setting is not None:
        return _setting
    env = os.environ.get("LEPTON_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if env and env not in _warned_env:  # "2.0", "two", "0": said once, not silently ignored
        _warned_env.add(env)
        import warnings

        warnings.warn(
            f"LEPTON_NUM_THREADS={env!r} is not a positive int; using the {usable_cores()} "
            "usable core(s)",
            RuntimeWarning,
            stacklevel=2,
        )
    return usable_cores()


def check_threads(value: object, name: str = "threads") -> int | None:
    """The one rule for a thread or worker count (``set_num_threads``, ``runtime.load(...,
    threads=)``, ``model.threads``, the tuning's ``n_jobs``): None (the caller's default:
    follow the setting, one worker per core), or an int >= 1, a NumPy integer included.
    Refused with a ValueError naming ``name`` and the value: a bool, a float even when
    integral (2.0: a computed count is rounded on purpose, not by us), a string, and 0 or
    negatives (-1 is not "all cores": that is None)."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    why = ""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        why = " (a float: pass an int, e.g. int(n))"
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        why = " (None: the default count)"
    raise ValueError(f"{name} must be a positive int or None, got {value!r}{why}")


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads (1: everything on the calling thread); None: back to the default.
    ``n`` as :func:`check_threads` takes it (2.0, True, "2" and 0 are refused). Inference
    models loaded with ``threads=None`` follow it from their next call."""
    global _setting
    n = check_threads(n)
    with _lock:
        _setting = n
        told = list(_followers)
    for obj in told:  # after the new value is stored: what they re-plan with reads it
        obj.threads_changed()


def follow(obj: object, on: bool = True) -> None:
    """``obj.threads_changed()`` is called after every :func:`set_num_threads` while ``obj``
    lives (held weakly; ``on=False`` stops it). It runs on the thread that called
    set_num_threads, so it should only mark ``obj`` stale: an inference model that follows
    the setting drops its batch-1 runner and re-plans at its next call, which keeps the
    check off its calls' path."""
    with _lock:
        if on:
            _followers.add(obj)
        else:
            _followers.discard(obj)


def native_pool_wake() -> Callable[[], None] | None:
    """``wake()`` of the compiled kernels' native pool (``lepton_nn.kernels._pool``): wakes
    its sleeping workers ahead of a parallel region; None where the pool is not built."""
    try:
        from ..kernels._pool import wake
    except ImportError:
        return None
    return wake


def threads_for(flops: float, tasks: int) -> int:
    """Threads worth using for ``tasks`` independent tasks totalling ``flops`` operations."""
    if tasks < 2 or flops < PARALLEL_MIN_FLOPS:
        return 1
    return min(get_num_threads(), tasks)


def row_ranges(n: int, threads: int) -> list[int]:
    """Bounds of the ranges of batch rows that the threads of a recurrent kernel run as
    tasks (the int8 forward, the LSTM training backward): one range on one thread, else a
    few per thread (handed out as they finish, so a thread slowed by a busy neighbour takes
    fewer), starting at multiples of the compiled kernels' row tile (3 rows), so that one
    tile in all is short. (The float32 forward's threads share one range a thread step by
    step instead: kernels/csrc/rows_share.h, :func:`thread_ranges`.)"""
    if threads <= 1:
        return [0, n]
    tasks = max(threads, min(4 * threads, n // 16))
    return sorted({3 * (i * n // (3 * tasks)) for i in range(tasks)} | {n})


def thread_ranges(n: int, threads: int) -> list[int]:
    """Bounds of ``threads`` equal ranges of n batch rows, one a thread: the float32
    recurrent forward's threads share them step by step (kernels/csrc/rows_share.h)."""
    return [i * n // threads for i in range(threads + 1)]


def _workers(n: int) -> ThreadPoolExecutor:
    from concurrent.futures import ThreadPoolExecutor

    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="lepton")
            _pool_size = n
        return _pool


class _Blas:
    """NumPy's OpenBLAS thread count, where it can be found (Linux: the library mapped into
    this process exports openblas_{get,set}_num_threads, maybe with a prefix or suffix).

    parallel_for runs its shares with BLAS on one thread: each share already has a core, and
    OpenBLAS's own workers would spin on the cores the shares need. Elsewhere (another BLAS,
    another OS) nothing is changed.
    """

    def __init__(self):
        self.get = self.set = None
        self.gemm = None  # (cblas_sgemm address, cblas_dgemm address, 64-bit integers?)
        self.depth = 0  # parallel regions running now (several user threads may run one)
        self.saved = 1
        try:
            import ctypes

            with open("/proc/self/maps") as f:
                paths = {ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln}
            for path in sorted(paths, key=lambda p: ("numpy" not in p, p)):  # NumPy's first
                lib = ctypes.CDLL(path)
                # plain, or NumPy's wheels' ILP64 build (scipy_ prefix, 64_ suffix)
                for pre, suf in (("", ""), ("scipy_", "64_"), ("", "64_"), ("scipy_", "")):
                    get = getattr(lib, f"{pre}openblas_get_num_threads{suf}", None)
                    put = getattr(lib, f"{pre}openblas_set_num_threads{suf}", None)
                    if get is not None and put is not None:
                        get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                        self.get, self.set = get, put
                        s = getattr(lib, f"{pre}cblas_sgemm{suf}", None)
                        d = getattr(lib, f"{pre}cblas_dgemm{suf}", None)
                        if s is not None and d is not None:
                            addr = ctypes.cast(s, ctypes.c_void_p).value
                            self.gemm = addr, ctypes.cast(d, ctypes.c_void_p).value, "64" in suf
                        return
        except (OSError, ValueError):  # no /proc, or a library that will not load
            pass

    def enter(self) -> None:
        if self.get is None:
            return
        with _lock:
            if self.depth == 0:
                self.saved = self.get()
                if self.saved > 1:
                    self.set(1)
            self.depth += 1

    def leave(self) -> None:
        if self.get is None:
            return
        with _lock:
            self.depth -= 1
            if self.depth == 0 and self.saved > 1:
                self.set(self.saved)


_blas: _Blas | None = None


def _the_blas() -> _Blas:
    global _blas
    if _blas is None:
        _blas = _Blas()
    return _blas


def blas_gemm() -> tuple[int, int, bool] | None:
    """(cblas_sgemm, cblas_dgemm, ilp64): the addresses of the GEMMs in the OpenBLAS NumPy
    uses, for compiled loops that call them without the GIL, and whether their integer
    arguments are 64-bit; None where they were not found (another BLAS, another OS)."""
    return _the_blas().gemm


def blas_threads_controlled() -> bool:
    """Whether NumPy's BLAS thread count was found and can be held to one (OpenBLAS)."""
    return _the_blas().get is not None


class blas_held:
    """``with blas_held():`` NumPy's BLAS on one thread for the whole block, for callers that
    run parallel regions of their own in it (a no-op where the count cannot be set). OpenBLAS
    workers woken by a GEMM in between keep spinning on the cores those regions need: an
    inference plan of W3's CNN at batch 256 on 2 threads ran 10.3 ms a batch with them free
    and 5.9 ms held."""

    __slots__ = ()

    def __enter__(self):
        _the_blas().enter()

    def __exit__(self, *exc):
        _the_blas().leave()


class blas_single:
    """``with blas_single(flops):`` BLAS on one thread for a GEMM of ``flops`` operations
    that OpenBLAS would split although it is too small to gain from it (see
    BLAS_SPLIT_MIN_FLOPS), or ``thin``; any other size, or another BLAS, is left alone."""

    __slots__ = ("on",)

    def __init__(self, flops: float, thin: bool = False):
        # thin (a side under 32): little to gain at any size, and a split OpenBLAS waits
        # on stalled W4's step on a busy machine (three 6.5 MFLOP products with F = 8)
        self.on = BLAS_SPLIT_MIN_FLOPS <= flops and (flops < PARALLEL_MIN_FLOPS or thin)

    def __enter__(self):
        if self.on:
            _the_blas().enter()

    def __exit__(self, *exc):
        if self.on:
            _the_blas().leave()


class _Tasks:
    """range(n) handed out one index at a time to whichever thread asks next."""

    def __init__(self, n: int):
        self.n, self.i, self.lock = n, 0, threading.Lock()

    def __iter__(self):
        return self

    def __next__(self) -> int:
        with self.lock:
            i = self.i
            if i >= self.n:
                raise StopIteration
            self.i = i + 1
            return i


def parallel_for(tasks: int, fn: Callable[[Iterable[int]], None], threads: int) -> None:
    """Run tasks 0 .. tasks-1 on ``threads`` threads: each thread calls ``fn(indices)`` once
    and takes task indices from the shared iterable until none are left (a thread slowed by a
    busy neighbour simply takes fewer). BLAS runs on one thread meanwhile.

    The calling thread works too; returns when every task is done, raising the first error a
    thread raised. ``threads`` <= 1, or a call from inside another parallel_for (whose
    workers may all be busy), runs ``fn(range(tasks))`` on the calling thread.
    """
    if tasks <= 0:
        return
    blas = _the_blas()
    blas.enter()
    try:
        if threads <= 1 or tasks < 2 or getattr(_local, "inside", False):
            fn(range(tasks))
            return
        threads = min(threads, tasks)
        shared = _Tasks(tasks)
        pool = _workers(threads - 1)
        futures = [pool.submit(_share, fn, shared) for _ in range(threads - 1)]
        try:
            _share(fn, shared)
        finally:
            for f in futures:  # wait for every thread, even when this one failed
                f.exception()
    finally:
        blas.leave()
    for f in futures:
        f.result()


def _share(fn: Callable[[Iterable[int]], None], shared: _Tasks) -> None:
    _local.inside = True
    try:
        fn(shared)
    finally:
        _local.inside = False


def _forget_after_fork() -> None:
    """In a forked child: the pool's threads and any lock holder did not come along."""
    global _lock, _local, _pool, _pool_size, _blas
    _lock, _local = threading.Lock(), threading.local()
    _pool, _pool_size, _blas = None, 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
