"""One rule for a plan's threaded ops, checked once when the plan is built: no buffer a
thread of a job writes may share memory with another buffer that a thread of the same job
may read or write at the same time.

The plan's arena hands a buffer's block on once its last reader is bound, and joined calls
(a chain of Dense layers in one call) carry several layers' buffers: an output may land on
the block of an input that is dead for a layer-by-layer run but still being read by another
thread of a job without barriers (once a row split of a Dense chain overwrote rows of layer 1's
output, still being read, with layer 3's). A plan that breaks the rule is a bug of the
runtime, not of the model file: :func:`check_threaded_aliasing` raises ``LeptonError`` naming
the op and both buffers, at plan time, before any run.

What runs "at the same time" is per kernel (:func:`_stages`): a job's stages follow one another
(a barrier between them), the buffers of one stage are all live together.

- ``dense_packed_forward`` (csrc/dense_packed.h): by columns a layer is a phase; by rows there
  is no barrier, but the kernel splits by rows only when every output is disjoint from the
  input and the other outputs (``lnn_pk_disjoint``): a stage per layer, its input and output.
- ``qdense_chain_forward`` (csrc/qgemv.h): a layer's units start once the layer before is
  done: a stage per layer. (A thread late to a layer may still quantize that layer's input
  while another, done with it, writes a later layer's output over a dead buffer; the late
  thread then finds no unit of the layer left and its reading is never used.)
- ``sparse_chain_forward`` (csrc/sparse_chain.h): a barrier between layers: a stage per layer.
- ``qlinear``, the chunk and direct-chain convolutions, the recurrent row ranges: one stage.

Ops on one thread are not checked: they run layer after layer, which is what the arena's
reuse assumes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lepton_nn.errors import LeptonError

__all__ = ["check_threaded_aliasing"]

Named = list[tuple[str, np.ndarray]]  # (what the buffer is, the array)


def _arrays(obj: Any, depth: int = 0) -> Iterator[np.ndarray]:
    """The arrays in ``obj`` (an array, or tuples and lists of them, nested)."""
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (tuple, list)) and depth < 4:
        for item in obj:
            yield from _arrays(item, depth + 1)


def _named(what: str, obj: Any) -> Named:
    found = list(_arrays(obj))
    if len(found) == 1:
        return [(what, found[0])]
    return [(f"{what}[{i}]", a) for i, a in enumerate(found)]


def _layers(x: np.ndarray, outs: tuple) -> list[tuple[Named, Named]]:
    """A stage per layer of a chain: layer l reads x (l = 0) or outs[l - 1], writes outs[l]."""
    stages = []
    for i, out in enumerate(outs):
        src = ("the input", x) if i == 0 else (f"layer {i - 1}'s output", outs[i - 1])
        stages.append(([src], [(f"layer {i}'s output", out)]))
    return stages


def _threads(args: tuple, i: int) -> int:
    return args[i] if len(args) > i and isinstance(args[i], int) else 1


def _sets(sets: Any) -> Named:
    """Each task's scratch set (a task writes its own)."""
    return [n for t, s in enumerate(sets) for n in _named(f"scratch set {t}", s)]


def _qlinear(a: tuple) -> list:
    # qlinear(x_q, x_scale, x_zero_point, w_packed, w_scale, w_col_sums, bias, act, out, t)
    reads = _named("x_q", a[0]) + _named("x_scale", a[1]) + _named("x_zp", a[2])
    return [(reads + _named("weights", a[3:7]), _named("out", a[8]))]


def _chunks(a: tuple) -> list:
    # conv_chunks_threads(name, x, head, scratch sets, tail, threads)
    return [
        (_named("the input", a[1]) + _named("weights", a[2]), _named("output", a[4]) + _sets(a[3]))
    ]


def _direct_chain(a: tuple) -> list:
    # conv_direct_chain_threads(x, layers, scratch sets, y, threads)
    return [
        (_named("the input", a[0]) + _named("weights", a[1]), _named("output", a[3]) + _sets(a[2]))
    ]


def _rows(a: tuple) -> list:
    # recurrent_rows_threads(cell, x, w_packed, h, c, mask, bounds, reverse, threads[, gates])
    reads = _named("the input", a[1]) + _named("weights", a[2]) + _named("mask", a[5])
    writes = _named("h", a[3]) + _named("c", a[4]) + _named("gates", a[9:])
    return [(reads + _named("row ranges", a[6]), writes)]


def _rows_q8(a: tuple) -> list:
    # recurrent_q8_threads(cell, xq, xs, xzp, packed, h, c, mask, bounds, reverse, threads)
    reads = _named("the input", a[1:4]) + _named("weights", a[4]) + _named("mask", a[7])
    return [(reads + _named("row ranges", a[8]), _named("h", a[5]) + _named("c", a[6]))]


# kernel name -> (its thread count, its stages of (read, written) buffers), from its arguments
_KERNELS: dict[str, tuple[Callable[[tuple], int], Callable[[tuple], list]]] = {
    "dense_packed_forward": (lambda a: _threads(a, 5), lambda a: _layers(a[0], a[4])),
    "qdense_chain_forward": (lambda a: getattr(a[1], "threads", 1), lambda a: _layers(a[0], a[2])),
    "sparse_chain_forward": (lambda a: getattr(a[1], "threads", 1), lambda a: _layers(a[0], a[2])),
    "qlinear": (lambda a: _threads(a, 9), _qlinear),
    "conv_chunks_threads": (lambda a: _threads(a, 5), _chunks),
    "conv_direct_chain_threads": (lambda a: _threads(a, 4), _direct_chain),
    "recurrent_rows_threads": (lambda a: _threads(a, 8), _rows),
    "recurrent_q8_threads": (lambda a: _threads(a, 10), _rows_q8),
}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays are the same buffer (one array given twice, or two equal views)."""
    return a is b or (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
    )


def _conflict(stage: tuple[Named, Named]) -> tuple[tuple[str, np.ndarray], ...] | None:
    """The first (written, other) pair of a stage sharing memory, else None."""
    reads, writes = stage
    for i, (wname, w) in enumerate(writes):
        for name, a in reads + writes[i + 1 :]:
            if not _same(w, a) and np.may_share_memory(w, a):
                return (wname, w), (name, a)
    return None


def check_threaded_aliasing(ops: list[tuple[Callable, tuple]]) -> None:
    """Raise ``LeptonError`` if a threaded op of ``ops`` (a plan's ``(function, args)``
    list) writes a buffer that shares memory with another one its job uses at the same time
    (see the module docstring); ops on one thread and other kernels pass."""
    for k, (fn, args) in enumerate(ops):
        name = getattr(fn, "__name__", "").lstrip("_")  # the compiled backend's _wrappers too
        spec = _KERNELS.get(name)
        if spec is None or spec[0](args) < 2:
            continue
        for stage in spec[1](args):
            bad = _conflict(stage)
            if bad is not None:
                (wname, w), (oname, o) = bad
                raise LeptonError(
                    f"internal error in the plan: op {k} ({name}, {spec[0](args)} threads) "
                    f"writes {wname} {w.dtype} {w.shape}, which shares memory with {oname} "
                    f"{o.dtype} {o.shape} that its threads use at the same time; please "
                    "report this with the model file"
                )
