"""Dynamic batching: concurrent requests for one model run as one network call.

A request's rows (already checked and transformed) are queued with a future. The batcher's
task takes the oldest request, waits until ``max_rows`` rows are queued or ``window``
seconds have passed since that request arrived, whichever comes first, and runs every
queued request of the same model version (up to ``max_rows`` rows; a lone larger request
runs alone) as one ``forward`` call on its worker thread::

    out = forward(concatenate([x_1, ..., x_k]))       # (n_1 + ... + n_k, ...)
    x_i's answer = out[n_1 + ... + n_{i-1} : ... + n_i]

Requests that arrive while a batch runs queue for the next one. ``window = 0`` or
``max_rows = 1`` still goes through the queue; ``Direct`` (``--no-batching``) calls
``forward`` once per request on the same kind of worker thread. Rows are independent in
every layer the runtime runs, so a row's output does not depend on its batch companions
beyond float rounding (BLAS may sum in another order at another batch size).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["Batcher", "Direct"]


class Direct:
    """One network call per request, on one worker thread (no batching)."""

    def __init__(self, on_batch: Callable[[int], None]) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="lepton-run")
        self.on_batch = on_batch

    async def run(self, version: Any, x: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self.executor, version.model.forward, x)
        self.on_batch(len(x))
        return out

    async def close(self) -> None:
        self.executor.shutdown(wait=True)


class Batcher(Direct):
    """Gathers requests for ``window`` seconds or ``max_rows`` rows (see the module doc)."""

    def __init__(self, max_rows: int, window: float, on_batch: Callable[[int], None]) -> None:
        super().__init__(on_batch)
        self.max_rows, self.window = max_rows, window
        self.queue: deque[tuple[Any, np.ndarray, asyncio.Future, float]] = deque()
        self.rows = 0  # rows queued
        self.wake = asyncio.Event()  # something queued
        self.full = asyncio.Event()  # max_rows queued
        self.task: asyncio.Task | None = None

    async def run(self, version: Any, x: np.ndarray) -> np.ndarray:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._loop())
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((version, x, fut, time.monotonic()))
        self.rows += len(x)
        self.wake.set()
        if self.rows >= self.max_rows:
            self.full.set()
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            if not self.queue:
                self.wake.clear()
                continue
            wait = self.window - (time.monotonic() - self.queue[0][3])
            if self.rows < self.max_rows and wait > 0:
                try:
                    await asyncio.wait_for(self.full.wait(), wait)
                except asyncio.TimeoutError:
                    pass
            batch = self._take()
            if not self.queue:
                self.wake.clear()
            if self.rows < self.max_rows:
                self.full.clear()
            version = batch[0][0]
            xs = [x for _, x, _, _ in batch]
            try:
                x = xs[0] if len(xs) == 1 else np.concatenate(xs)
                out = await loop.run_in_executor(self.executor, version.model.forward, x)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                for _, _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.on_batch(len(x))
            start = 0
            for _, xi, fut, _ in batch:
                if not fut.done():  # a client that went away cancelled its future
                    fut.set_result(out[start : start + len(xi)])
                start += len(xi)

    def _take(self) -> list:
        """The oldest request and those after it of the same version, up to max_rows rows."""
        first = self.queue.popleft()
        batch, n = [first], len(first[1])
        keep: deque = deque()
        while self.queue:
            item = self.queue.popleft()
            if item[0] is first[0] and n + len(item[1]) <= self.max_rows:
                batch.append(item)
                n += len(item[1])
            else:
                keep.append(item)
                if n >= self.max_rows:
                    break
        keep.extend(self.queue)
        self.queue = keep
        self.rows -= n
        return batch

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        await super().close()
