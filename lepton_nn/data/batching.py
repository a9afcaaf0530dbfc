"""Mini-batches over in-memory arrays, copying into buffers allocated once."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from lepton_nn.errors import ShapeError
from lepton_nn.random import rng as _rng
from lepton_nn.random import spawn


class Batches:
    """Iterable of ``(xb, yb)`` (or ``(xb, yb, wb)`` with sample weights) over the first axis.

    ``X`` may be a dict ``{input name: array}`` (a model of several inputs): every input
    needs the same number of rows, each batch takes the same rows of all (one permutation)
    and ``xb`` is a dict with the same keys.

    Each ``iter()`` is one epoch; with ``shuffle`` every epoch draws a new permutation from
    the same generator. Shuffled batches are gathered with ``np.take(..., out=buffer)`` into
    buffers made once, so **a batch is only valid until the next one is requested** (copy it
    to keep it). Unshuffled batches of C-contiguous arrays are views of the inputs. The last
    batch holds the remaining ``N % batch_size`` rows unless ``drop_last``; with
    ``merge_last`` a remainder of one row joins the batch before it (``batch_size + 1`` rows:
    batch normalization cannot train on one row).
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray | None = None,
        batch_size: int = 32,
        shuffle: bool = True,
        rng: np.random.Generator | int | None = None,
        sample_weight: np.ndarray | None = None,
        drop_last: bool = False,
        merge_last: bool = False,
    ) -> None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: need a positive int")
        self.names = list(X) if isinstance(X, Mapping) else None
        if self.names == []:
            raise ShapeError("iterate_batches: X is a dict of no inputs")
        xs = [np.asarray(X[k]) for k in self.names] if self.names else [np.asarray(X)]
        self.X = dict(zip(self.names, xs, strict=True)) if self.names else xs[0]
        labels = [f"input {k!r}" for k in self.names] if self.names else ["X"]
        if xs[0].ndim == 0:
            raise ShapeError(f"iterate_batches: {labels[0]} must have a batch axis, got a scalar")
        self.n = xs[0].shape[0]
        self.y = None if y is None else np.asarray(y)
        self.w = None if sample_weight is None else np.asarray(sample_weight)
        others = [*zip(labels[1:], xs[1:]), ("y", self.y), ("sample_weight", self.w)]
        for name, a in others:
            if a is not None and (a.ndim == 0 or a.shape[0] != self.n):
                raise ShapeError(
                    f"iterate_batches: {labels[0]} has shape {xs[0].shape} but {name} has shape "
                    f"{a.shape}; both need the same number of rows"
                )
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        # rows added to the last full batch: 1 when a final batch of one is merged into it
        self.merged = int(
            bool(merge_last)
            and not drop_last
            and n_batches(self.n, self.batch_size) > 1
            and self.n % self.batch_size == 1
        )
        if isinstance(rng, np.random.Generator):
            self.rng = rng
        else:
            self.rng = spawn() if rng is None else _rng(int(rng))
        self._buffers: list[np.ndarray | None] | None = None

    def __len__(self) -> int:
        return n_batches(self.n, self.batch_size, self.drop_last) - self.merged

    def _arrays(self) -> list[np.ndarray | None]:
        xs = [self.X[k] for k in self.names] if self.names else [self.X]
        return [*xs, self.y, self.w]

    def _alloc(self) -> list[np.ndarray | None]:
        if self._buffers is None:
            bs = min(self.batch_size, self.n) + self.merged
            self._buffers = [
                None if a is None else np.empty((bs,) + a.shape[1:], dtype=a.dtype)
                for a in self._arrays()
            ]
        return self._buffers

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        arrays = self._arrays()
        copy = self.shuffle or not all(a is None or a.flags.c_contiguous for a in arrays)
        order = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        bufs = self._alloc() if copy else None
        last = len(self) - 1
        for b in range(last + 1):
            start = b * self.batch_size
            stop = min(start + self.batch_size, self.n) + (self.merged if b == last else 0)
            if copy:
                idx = order[start:stop]
                out = []
                for a, buf in zip(arrays, bufs, strict=True):
                    if a is None:
                        out.append(None)
                    else:
                        part = buf[: stop - start]
                        # part = a[idx]; 'clip' skips the bounds-check buffering (idx is valid)
                        np.take(a, idx, axis=0, out=part, mode="clip")
                        out.append(part)
            else:
                out = [None if a is None else a[start:stop] for a in arrays]
            *xs, yb, wb = out
            xb = dict(zip(self.names, xs, strict=True)) if self.names else xs[0]
            yield (xb, yb, wb) if self.w is not None else (xb, yb)


def iterate_batches(
    X: np.ndarray,
    y: np.ndarray | None = None,
    batch_size: int = 32,
    shuffle: bool = True,
    rng: np.random.Generator | int | None = None,
    sample_weight: np.ndarray | None = None,
    drop_last: bool = False,
    merge_last: bool = False,
) -> Batches:
    """Mini-batches of ``(X, y[, sample_weight])``; see :class:`Batches` (it has ``len()``).

    ``rng``: a Generator, an int seed, or ``None`` for a child of the library's global stream.
    """
    return Batches(X, y, batch_size, shuffle, rng, sample_weight, drop_last, merge_last)


def n_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches ``n`` rows make."""
    full, rest = divmod(int(n), int(batch_size))
    return full + (1 if rest and not drop_last else 0)
