"""Executors that run :mod:`lepton_nn.tuning` trials on a Dask or a Ray cluster.

Both are ``concurrent.futures.Executor`` s, so ``GridSearch`` / ``RandomSearch`` /
``cross_validate`` take them as ``executor=``, and both add the tuning hook
``share(obj) -> handle``: the search's ``(X, y)`` goes to the cluster once (Dask: scattered
to every worker; Ray: one object in the object store), each task carries only the handle
and cuts its fold on the worker. Results equal a serial run with the same seed: every
(trial, fold) seeds itself, wherever it runs.

Lost data on Dask: scattered data has no task to recompute it, and Dask's active memory
manager (``ReduceReplicas``) drops the broadcast copies no waiting task needs, so one worker
may hold the only copy. When that worker dies the scheduler forgets the data and cancels the
tasks that read it ("already forgotten"). The executor keeps the object on the client while
its handle lives: a task cancelled because its shared data is gone gets the data scattered
again (once per loss) and runs again, up to ``_RETRIES`` times.

BLAS threads: on Dask, a task first sets its worker's BLAS/OpenMP threads to the cores of
its host divided by the task slots (``nthreads``) of all the workers on that host; on Ray,
each task holds one CPU and runs one BLAS thread.

``dask`` / ``distributed`` / ``ray`` are imported here, lazily, and nowhere else.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from concurrent.futures import CancelledError, Executor, Future
from typing import Any

from .._cpu import usable_cores
from ..errors import LeptonError
from ..tuning._threads import limit_threads

__all__ = ["DaskExecutor", "RayExecutor", "dask_executor", "ray_executor", "connect"]

_threads_set: int | None = None  # BLAS threads this worker process runs with (per process)
_RETRIES = 3  # times a task runs again after its shared data was lost


def _set_threads(n: int) -> None:
    global _threads_set
    if _threads_set != n:
        limit_threads(n)
        _threads_set = n


def _get_threads() -> int | None:
    return _threads_set


def _threads_for(slots: int) -> int:
    """BLAS threads of one task slot when ``slots`` slots share this host's cores."""
    return max(1, usable_cores() // max(1, int(slots)))


def _run_on_dask(slots_by_worker: dict[str, int], fn: Any, *args: Any) -> Any:
    """On a Dask worker: set the BLAS threads (once per process), then ``fn(*args)``."""
    from distributed import get_worker

    worker = get_worker()
    slots = slots_by_worker.get(worker.address, worker.state.nthreads)  # a worker started later
    _set_threads(_threads_for(slots))
    return fn(*args)


def _run_on_ray(fn: Any, *args: Any) -> Any:
    """On a Ray worker: one CPU per task, so one BLAS thread."""
    _set_threads(1)
    return fn(*args)


def _need(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise LeptonError(
            f"{module} is not installed: pip install 'lepton-nn[{extra}]' ({e})"
        ) from None


class _Shared:
    """One ``share``: the object (kept on the client to send again) and its latest copy on
    the cluster (None: still the future ``share`` returned)."""

    def __init__(self, obj: Any) -> None:
        self.obj, self.copy = obj, None


class _Task:
    """One submitted task: ``outer`` (what ``submit`` returned), the arguments, the shares
    among them (argument index -> :class:`_Shared`) and the Dask future of the latest run."""

    def __init__(self, fn: Any, args: tuple, kwargs: dict, shares: dict) -> None:
        self.fn, self.args, self.kwargs, self.shares = fn, args, kwargs, shares
        self.outer: Future = Future()
        self.sent: list = []  # the arguments of the latest run
        self.future: Any = None
        self.runs = 0


class DaskExecutor(Executor):
    """Tasks on a ``distributed.Client``; ``share`` scatters to every worker (see module)."""

    def __init__(self, client: Any, *, owns: tuple = ()):
        self.client = client
        self._owns = owns  # the client / cluster this executor started (closed on shutdown)
        self._slots = self._slots_by_worker()
        self._shares: dict[Any, _Shared] = {}  # key of a live share's handle -> its object
        self._running: set[_Task] = set()  # keeps the Dask futures alive until resolved
        self._lock = threading.Lock()

    def _slots_by_worker(self) -> dict[str, int]:
        """``{worker address: task slots of every worker on its host}``."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        per_host: Counter = Counter()
        for w in workers.values():
            per_host[w["host"]] += int(w["nthreads"])
        return {a: per_host[w["host"]] for a, w in workers.items()}

    def threads_by_worker(self) -> dict[str, int]:
        """The BLAS threads each worker's tasks run with (computed on the worker)."""
        return self.client.run(_get_threads)

    def _scatter(self, obj: Any) -> Any:
        self._slots = self._slots_by_worker()  # workers may have come or gone
        [future] = self.client.scatter([obj], broadcast=True, hash=False)
        return future

    def share(self, obj: Any) -> Any:
        """A future of ``obj``, sent once to every worker (again only if lost; see module).
        ``obj`` stays referenced here while the returned handle lives."""
        future = self._scatter(obj)
        self._shares[future.key] = _Shared(obj)
        weakref.finalize(future, self._shares.pop, future.key, None)
        return future

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        """``fn(*args)`` on a worker; futures among ``args`` arrive as their values. A
        ``concurrent.futures.Future``, resolved when the task succeeds or fails for good."""
        from distributed import Future as DaskFuture

        keys = {i: a.key for i, a in enumerate(args) if isinstance(a, DaskFuture)}
        shares = {i: self._shares[k] for i, k in keys.items() if k in self._shares}
        task = _Task(fn, args, kwargs, shares)
        with self._lock:
            self._running.add(task)
        self._run(task)
        return task.outer

    def _run(self, task: _Task) -> None:
        task.runs += 1
        task.sent = list(task.args)
        for i, shared in task.shares.items():
            if shared.copy is not None:  # the data went again after a loss
                task.sent[i] = shared.copy
        task.future = self.client.submit(
            _run_on_dask, self._slots, task.fn, *task.sent, pure=False, **task.kwargs
        )
        task.future.add_done_callback(lambda f, t=task: self._done(t, f))

    def _done(self, task: _Task, future: Any) -> None:
        """On Dask's callback thread: resolve ``task.outer``, or run again on lost data."""
        try:
            value = future.result()
        except CancelledError as exc:
            try:
                again = task.runs <= _RETRIES and self._renew(task)
                if again:
                    self._run(task)
                    return
            except Exception:  # noqa: BLE001 - e.g. the client closed: report the cancel
                pass
            self._resolve(task, exc, failed=True)
        except Exception as exc:  # noqa: BLE001 - the task's own error, for the caller
            self._resolve(task, exc, failed=True)
        else:
            self._resolve(task, value, failed=False)

    def _resolve(self, task: _Task, value: Any, failed: bool) -> None:
        with self._lock:
            self._running.discard(task)
        if task.outer.cancelled():
            return
        if failed:
            task.outer.set_exception(value)
        else:
            task.outer.set_result(value)

    def _renew(self, task: _Task) -> bool:
        """Whether shared data ``task`` read is lost; if so it is scattered again (once per
        loss, whichever of its tasks notices first)."""
        lost = False
        for i, shared in task.shares.items():
            used = task.sent[i]
            if used.status != "cancelled" and self.client.who_has([used]).get(used.key):
                continue  # still in a worker's memory
            lost = True
            with self._lock:
                if shared.copy is None or shared.copy.key == used.key:
                    shared.copy = self._scatter(shared.obj)
        return lost

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for thing in self._owns:
            thing.close()
        self._owns = ()


def dask_executor(target: Any = None, **cluster_kwargs: Any) -> DaskExecutor:
    """A :class:`DaskExecutor` on ``target``.

    ``target``: a ``distributed.Client``; an address (``"tcp://host:8786"``); ``"local:N"``
    for a ``LocalCluster`` of N single-thread worker processes started here (closed with the
    executor; ``cluster_kwargs`` go to ``LocalCluster``); ``None`` for the current client.
    """
    distributed = _need("distributed", "distributed")
    if target is None:
        return DaskExecutor(distributed.get_client())
    if isinstance(target, str) and target.startswith("local"):
        n = target.partition(":")[2]
        if n and not (n.isdigit() and int(n) > 0):
            raise LeptonError(f"--dask local:N needs a positive number of workers, got {target!r}")
        kw = {"n_workers": int(n or usable_cores()), "threads_per_worker": 1, "processes": True}
        kw.update({"dashboard_address": None, **cluster_kwargs})
        cluster = distributed.LocalCluster(**kw)
        client = distributed.Client(cluster)
        return DaskExecutor(client, owns=(client, cluster))
    if isinstance(target, str):
        try:
            client = distributed.Client(target, timeout=30)
        except OSError as e:
            raise LeptonError(f"cannot reach the Dask scheduler at {target!r}: {e}") from None
        return DaskExecutor(client, owns=(client,))
    return DaskExecutor(target)


class RayExecutor(Executor):
    """Tasks as Ray remote functions (one CPU each); ``share`` puts the object once."""

    def __init__(self, **ray_init_kwargs: Any):
        ray = self._ray = _need("ray", "ray")
        self._owns = not ray.is_initialized()
        if self._owns:
            ray.init(**{"include_dashboard": False, **ray_init_kwargs})
        self._remote = ray.remote(_run_on_ray)

    def share(self, obj: Any) -> Any:
        """An object reference; Ray resolves it as a top-level task argument."""
        return self._ray.put(obj)

    def submit(self, fn: Any, /, *args: Any) -> Future:
        return self._remote.remote(fn, *args).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._owns:
            self._ray.shutdown()
            self._owns = False


def ray_executor(**ray_init_kwargs: Any) -> RayExecutor:
    """A :class:`RayExecutor`; starts Ray with ``ray.init(**ray_init_kwargs)`` unless it runs
    already (``address="auto"`` joins a running cluster; no address starts a local one)."""
    return RayExecutor(**ray_init_kwargs)


def connect(dask: str | None = None, ray: str | None = None) -> Executor:
    """The executor for the CLI's ``--dask ADDRESS|local:N`` or ``--ray auto|local|ADDRESS``."""
    if dask and ray:
        raise LeptonError("choose one of --dask and --ray")
    if dask:
        return dask_executor(dask)
    if ray == "local":
        return ray_executor()
    return ray_executor(address=ray)
