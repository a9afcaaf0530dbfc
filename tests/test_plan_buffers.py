"""The plan's activation buffers (lepton_nn.runtime.graph.Arena, bound by
plan.Network.plan): over Dense chains, a graph with a skip, a CNN, an LSTM and an int8 chain,
at batches 1, 31 and 64 on 1, 2 and 3 threads, reuse never takes more memory than no reuse,
every plan passes the threaded-aliasing rule, a threaded packed chain's input and outputs are
disjoint (its row split needs it), the result is 1 thread's to the bit, and every buffer
starts on 64 bytes (the padding counted in both sizes)."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
import lepton_nn.runtime as rt
from lepton_nn import nn
from lepton_nn.backend.reference import ReferenceBackend
from lepton_nn.compress import quantize
from lepton_nn.runtime import plan as plan_module
from lepton_nn.runtime.graph import Arena
from lepton_nn.runtime.kernels import kernels

BATCHES, THREADS = (1, 31, 64), (1, 2, 3)


def _mlp(*units: int) -> nn.Sequential:
    return nn.Sequential([nn.Dense(u, "relu") for u in units[:-1]] + [nn.Dense(units[-1])])


def _graph() -> nn.Model:
    """x -> 64 -> 48 -> 32 -> 64, added to the first 64 (held across the chain), -> 2."""
    x = nn.Input((30,), name="x")
    h1 = nn.Dense(64, "relu")(x)
    h4 = nn.Dense(64)(nn.Dense(32, "relu")(nn.Dense(48, "relu")(h1)))
    return nn.Model(x, nn.Dense(2)(nn.Add()([h1, h4])))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> (saved file, per-sample input shape)."""
    ln.set_seed(3)
    d = tmp_path_factory.mktemp("planbuf")
    cnn = [nn.Conv2D(4, 3, padding="same", activation="relu"), nn.MaxPool2D(2), nn.Flatten()]
    models = {
        "mlp 64-32-16-1": (_mlp(64, 32, 16, 1), (30,)),
        "mlp 48-24-1": (_mlp(48, 24, 1), (30,)),
        "mlp 80-40-20-10-2": (_mlp(80, 40, 20, 10, 2), (30,)),
        "mlp 16-96-8-96-3": (_mlp(16, 96, 8, 96, 3), (40,)),
        "cnn + chain": (nn.Sequential([*cnn, nn.Dense(48, "relu"), nn.Dense(10)]), (2, 8, 8)),
        "lstm + chain": (nn.Sequential([nn.LSTM(12), nn.Dense(40, "relu"), nn.Dense(3)]), (5, 4)),
    }
    out = {}
    for i, (name, (model, shape)) in enumerate(models.items()):
        model.build((None, *shape)).eval()
        ln.save(model, d / f"{i}.lnn")
        out[name] = (d / f"{i}.lnn", shape)
    graph = _graph()
    ln.save(graph, d / "graph.lnn")
    out["graph with a skip"] = (d / "graph.lnn", (30,))
    mlp = models["mlp 80-40-20-10-2"][0]
    calib = np.random.default_rng(0).standard_normal((32, 30)).astype(np.float32)
    ln.save(quantize(mlp, calib), d / "int8.lnn")
    out["int8 chain"] = (d / "int8.lnn", (30,))
    return out


def _disjoint(arrays: list[np.ndarray]) -> bool:
    return not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1 :])


@pytest.mark.parametrize("threads", THREADS)
def test_reuse_never_takes_more_than_no_reuse(files, threads, monkeypatch):
    checked = []  # every plan's ops, as check_threaded_aliasing (run on each) saw them
    real = plan_module.check_threaded_aliasing

    def check(ops):
        real(ops)
        checked.append(ops)

    monkeypatch.setattr(plan_module, "check_threaded_aliasing", check)
    rng = np.random.default_rng(threads)
    for name, (path, shape) in files.items():
        served, alone = rt.load(path, threads=threads), rt.load(path, threads=1)
        for n in BATCHES:
            info = served.plan_info(n)
            assert info["peak_bytes"] <= info["requested_bytes"], (name, n, threads, info)
            x = rng.standard_normal((n, *shape)).astype(np.float32)
            np.testing.assert_array_equal(served.predict(x), alone.predict(x), err_msg=name)
            out = served.plan_for(n).out
            assert out.__array_interface__["data"][0] % Arena.ALIGN == 0, (name, n)
    packed = [
        args
        for ops in checked
        for fn, args in ops
        if getattr(fn, "__name__", "").lstrip("_") == "dense_packed_forward" and args[5] > 1
    ]
    for x, _, _, _, outs, _ in packed:  # a threaded chain: the kernel may run its layers at once
        assert _disjoint([x, *outs]), [o.shape for o in outs]
        assert all(o.__array_interface__["data"][0] % Arena.ALIGN == 0 for o in outs)
    compiled = type(kernels()).dense_packed_forward is not ReferenceBackend.dense_packed_forward
    if threads > 1 and compiled:
        assert len({len(args[4]) for args in packed}) >= 3  # chains of several lengths seen


def test_the_arena_aligns_every_buffer_and_counts_its_padding():
    arena = Arena()
    specs = [((3, 5), np.float32), ((7,), np.float64), ((1,), np.uint8), ((64, 48), np.float32),
             ((0, 4), np.float32), ((2, 3), np.int8)]  # fmt: skip
    bufs = [arena.buffer(shape, dtype) for shape, dtype in specs]
    sizes = [int(np.prod(s)) * np.dtype(d).itemsize for s, d in specs]
    for b, (shape, dtype) in zip(bufs, specs):
        assert b.shape == shape and b.dtype == dtype and b.flags.c_contiguous
        # (an empty slice points at its block's first byte: nothing there to align)
        assert b.size == 0 or b.__array_interface__["data"][0] % 64 == 0
    assert arena.requested_bytes == sum(map(Arena.footprint, sizes)) == arena.peak_bytes
    assert len(arena.blocks) == len(specs)
    arena.release(arena.block_of(bufs[3]))  # (64, 48) float32 handed back: 60 rows fit in it
    again = arena.buffer((60, 48), np.float32)
    assert arena.block_of(again) is arena.block_of(bufs[3])
    assert again.__array_interface__["data"][0] % 64 == 0
    assert arena.peak_bytes == sum(map(Arena.footprint, sizes)) < arena.requested_bytes
    bigger = arena.buffer((65, 48), np.float32)  # does not fit what was freed: a new block
    assert arena.block_of(bigger) is not arena.block_of(bufs[3])
