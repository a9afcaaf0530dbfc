"""Dynamic batching: concurrent requests for one model run as one batch.

A request's rows (for ``:step``, its streams' samples) are queued with a future. The
batcher's task takes the oldest request and waits, for at most ``window`` seconds from its
arrival, while other requests for the model are still being read (``arriving``) and fewer
than ``max_rows`` rows are queued; then every
queued request of the same model version (up to ``max_rows`` rows; a lone larger request
runs alone) goes to ``work`` on the worker thread as one batch::

    work(version, [rows_1, ..., rows_k]) -> [answer_1 | error_1, ..., answer_k | error_k]

(:func:`.models.run_batch`: the rows of all k requests preprocessed and run through the
network together, the answers split back; :func:`.models.step_batch`: one session step for
the streams of several requests). Requests arriving while a batch runs queue for
the next one, so under load batches form by themselves, and a lone request is not kept
waiting for company that is not coming. ``Direct`` (``--no-batching``) calls ``work`` once
per request, on the same kind of worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["Batcher", "Direct"]

Work = Callable[[Any, list], list]


class Direct:
    """One ``work`` call per request, on one worker thread (no batching)."""

    def __init__(self, work: Work, on_batch: Callable[[int], None]) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="lepton-run")
        self.work, self.on_batch = work, on_batch
        self.arriving = 0  # requests being read that will come here (see Batcher)

    def expect(self) -> None:
        """A request for this model is being read."""
        self.arriving += 1

    def arrived(self) -> None:
        """A request counted by :meth:`expect` was queued or turned away."""
        self.arriving -= 1

    async def run(self, version: Any, payload: Any, n: int) -> Any:
        """The answer to one request: ``payload`` (its rows) of ``n`` rows."""
        self.arrived()
        loop = asyncio.get_running_loop()
        (answer,) = await loop.run_in_executor(self.executor, self.work, version, [payload])
        self.on_batch(n)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        self.executor.shutdown(wait=True)


class Batcher(Direct):
    """Gathers requests for at most ``window`` seconds or ``max_rows`` rows (module doc)."""

    def __init__(self, work: Work, max_rows: int, window: float, on_batch) -> None:
        super().__init__(work, on_batch)
        self.max_rows, self.window = max_rows, window
        self.queue: deque[tuple[Any, Any, int, asyncio.Future, float]] = deque()
        self.rows = 0  # rows queued
        self.wake = asyncio.Event()  # something queued
        self.settled = asyncio.Event()  # nothing more arriving, or max_rows queued
        self.task: asyncio.Task | None = None

    def arrived(self) -> None:
        super().arrived()
        if self.arriving <= 0:
            self.settled.set()

    async def run(self, version: Any, payload: Any, n: int) -> Any:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._loop())
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((version, payload, n, fut, time.monotonic()))
        self.rows += n
        self.wake.set()
        if self.rows >= self.max_rows:
            self.settled.set()
        self.arrived()
        return await fut

    async def _gather(self) -> None:
        """Wait while more requests are arriving, up to the window and max_rows."""
        deadline = self.queue[0][4] + self.window
        while self.rows < self.max_rows and self.arriving > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.settled.clear()
            try:
                await asyncio.wait_for(self.settled.wait(), left)
            except asyncio.TimeoutError:
                return

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            if not self.queue:
                self.wake.clear()
                continue
            await self._gather()
            batch = self._take()
            if not self.queue:
                self.wake.clear()
            version = batch[0][0]
            try:
                answers = await loop.run_in_executor(
                    self.executor, self.work, version, [item[1] for item in batch]
                )
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                answers = [exc] * len(batch)
            self.on_batch(sum(item[2] for item in batch))
            for (_, _, _, fut, _), answer in zip(batch, answers):
                if fut.done():  # a client that went away cancelled its future
                    continue
                if isinstance(answer, Exception):
                    fut.set_exception(answer)
                else:
                    fut.set_result(answer)

    def _take(self) -> list:
        """The oldest request and those after it of the same version, up to max_rows rows."""
        first = self.queue.popleft()
        batch, n = [first], first[2]
        keep: deque = deque()
        while self.queue and n < self.max_rows:
            item = self.queue.popleft()
            if item[0] is first[0] and n + item[2] <= self.max_rows:
                batch.append(item)
                n += item[2]
            else:
                keep.append(item)
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
