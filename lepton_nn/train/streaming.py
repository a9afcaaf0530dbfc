"""``Trainer.fit`` on a stream: data read chunk by chunk, every epoch again.

The source is a :class:`~lepton_nn.data.stream.ChunkSource`: a
:func:`~lepton_nn.data.stream` of numeric tables (features and target), or one mapped to
``(X, y)`` / ``(X, y, w)`` arrays (``stream.map(fn)``, as ``TabularModel`` does). An epoch:

1. the chunks in a new random order (``shuffle``), read one at a time;
2. rows pooled until the pool holds ``shuffle_buffer`` rows, the pool permuted and cut into
   mini-batches; the rows short of a full batch stay in the pool for the next window, so
   every batch but the epoch's last holds ``batch_size`` rows.

Memory: the pool (``shuffle_buffer`` rows plus one chunk), never the file. With one chunk
and ``shuffle_buffer`` >= its rows, the batches are exactly those of an in-memory ``fit``
with the same seed. Validation data may be a stream too (``validation_split`` holds out a
seeded share of the chunks): its outputs are gathered (``n_val x outputs`` numbers) to
compute the loss and metrics as in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..autograd import Tensor, no_grad
from ..data.table import Table
from ..errors import DataError
from ..random import set_seed, spawn
from ..runtime.preprocess import NUMERIC

SHUFFLE_BUFFER = 65536  # rows


class StreamBatches:
    """Mini-batches over a chunked source, re-read every epoch (see the module docstring)."""

    def __init__(
        self,
        source: Any,
        prepare: Callable[[Any], tuple],
        batch_size: int,
        shuffle: bool,
        buffer_rows: int,
        rng: np.random.Generator,
    ):
        self.source, self.prepare = source, prepare
        self.batch_size, self.shuffle = int(batch_size), bool(shuffle)
        self.buffer_rows = max(int(buffer_rows), 1)
        self.rng = rng  # rows (drawn as an in-memory fit draws its permutations)
        self.order_rng = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])
        self.n_rows = source.n_rows
        self.merged = 0

    def __len__(self) -> int:
        return -(-self.n_rows // self.batch_size)

    def __iter__(self):
        n = self.source.n_chunks
        order = self.order_rng.permutation(n) if self.shuffle else np.arange(n)
        pool: list[tuple] = []
        rows = 0
        for i in order:
            part = self.prepare(self.source.read_chunk(int(i)))
            pool.append(part)
            rows += len(part[0])
            if rows >= self.buffer_rows:
                pool = yield from self._drain(pool, last=False)
                rows = len(pool[0][0]) if pool else 0
        yield from self._drain(pool, last=True)

    def _drain(self, pool: list[tuple], last: bool):
        """Yield the pool's rows (permuted) in full batches; return the rest (or, if
        ``last``, yield it as the final batch)."""
        if not pool:
            return []
        window = tuple(np.concatenate(a) if len(pool) > 1 else a[0] for a in zip(*pool))
        m = len(window[0])
        order = self.rng.permutation(m) if self.shuffle else np.arange(m)
        bs = self.batch_size
        full = m if last else m - m % bs
        for start in range(0, full, bs):
            idx = order[start : min(start + bs, full)]
            yield tuple(a[idx] for a in window)
        if full == m:
            return []
        rest = order[full:]
        return [tuple(a[rest] for a in window)]


def table_arrays(trainer: Any) -> Callable[[Any], tuple]:
    """Chunk -> ``(X, y[, w])`` checked and converted as ``Trainer.fit`` converts arrays: a
    tuple as it is, a :class:`Table` of numeric columns as ``(columns, target)``."""

    def prepare(chunk: Any) -> tuple:
        if isinstance(chunk, Table):
            cat = [c for c, k in chunk.kinds.items() if k != NUMERIC]
            if cat:
                raise DataError(
                    f"{chunk.source}: column(s) {cat} are not numbers; encode them first "
                    f"(stream.map(...) with a fitted Preprocessor, or TabularModel.fit)"
                )
            if chunk.target is None:
                raise DataError(f"{chunk.source}: the stream has no target (stream(target=...))")
            chunk = (np.column_stack(list(chunk.data.values())), chunk.target)
        if not isinstance(chunk, tuple) or len(chunk) not in (2, 3):
            raise DataError("a stream chunk must be a Table or a tuple (X, y) or (X, y, w)")
        X, y = trainer._x(chunk[0]), trainer._y(chunk[1])
        out = (X, y) if len(chunk) == 2 else (X, y, np.asarray(chunk[2], X.dtype).reshape(-1))
        trainer._check_rows(X, *zip(("y", "sample_weight"), out[1:], strict=False))
        return out

    return prepare


def _weighted(source: Any, prepare: Callable) -> bool:
    return len(prepare(source.read_chunk(0))) == 3


def evaluate_stream(trainer: Any, source: Any, prepare: Callable, metrics: list) -> dict:
    """Loss and metrics over every chunk of ``source`` (outputs gathered, then scored)."""
    outs, ys, ws = [], [], []
    for i in range(source.n_chunks):
        part = prepare(source.read_chunk(i))
        outs.append(trainer._forward(part[0], 4096))
        ys.append(part[1])
        if len(part) == 3:
            ws.append(part[2])
    out, y = np.concatenate(outs), np.concatenate(ys)
    with no_grad():
        t = Tensor(out)
        loss = trainer.loss_fn(t, y) if not ws else trainer.loss_fn(t, y, np.concatenate(ws))
    result = {"loss": float(loss.data)}
    result.update(trainer._score(y, out, metrics))
    return result


def fit_stream(
    trainer: Any,
    source: Any,
    *,
    epochs: int,
    batch_size: int,
    validation_data: Any,
    validation_split: float,
    callbacks: Any,
    class_weight: Any,
    sample_weight: Any,
    shuffle: bool,
    verbose: int,
    seed: int | None,
    divergence: float | None,
    privacy: Any,
    shuffle_buffer: int | None,
) -> Any:
    """``Trainer.fit(stream, ...)`` (see :meth:`Trainer.fit` and the module docstring)."""
    from ..data.stream import is_chunked

    if privacy is not None:
        raise ValueError("fit: privacy (DP-SGD) needs the rows in memory, not a stream")
    if sample_weight is not None or class_weight is not None:
        raise ValueError(
            "fit: with a stream, give weights as the third array of its chunks "
            "(stream.map(lambda t: (X, y, w)))"
        )
    if seed is not None:
        set_seed(seed)
    prepare = table_arrays(trainer)
    if validation_data is None and validation_split > 0:
        source, validation_data = source.split(validation_split, 0 if seed is None else seed)
        if validation_data.n_chunks == 0:
            raise DataError(
                f"validation_split={validation_split}: the stream has {source.n_chunks} "
                f"chunk(s); hold out chunks needs two or more (smaller block_rows)"
            )
    if source.n_rows == 0:
        raise DataError("fit: no training rows")
    first = prepare(source.read_chunk(0))
    trainer._prepare(first[0])
    evaluate_val = None
    if is_chunked(validation_data):
        val = validation_data

        def evaluate_val() -> dict:
            return evaluate_stream(trainer, val, prepare, trainer.metrics)

    elif validation_data is not None:
        Xv, yv = trainer._x(validation_data[0]), trainer._y(validation_data[1])
        wv = validation_data[2] if len(validation_data) == 3 else None

        def evaluate_val() -> dict:
            return trainer._evaluate_arrays(Xv, yv, wv, trainer.metrics)

    buffer = shuffle_buffer or getattr(source, "shuffle_buffer", None) or SHUFFLE_BUFFER
    batches = StreamBatches(source, prepare, batch_size, shuffle, buffer, spawn())
    return trainer._run(
        batches, batches.n_rows, evaluate_val, epochs, batch_size, callbacks, verbose,
        divergence, len(first) == 3,
    )  # fmt: skip
