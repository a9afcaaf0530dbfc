"""The rule for a plan's threaded ops (lepton_nn.runtime.aliasing): no buffer a job's threads
write may share memory with another one they use at the same time. Fabricated ops for each
threaded kernel (a conflict raises, naming both buffers; the same op on one thread, or a dead
buffer reused across a barrier, passes), and the plans of real models pass it."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import lepton_nn as L
import lepton_nn.backend as backend
import lepton_nn.runtime as rt
from lepton_nn import nn
from lepton_nn.compress import quantize
from lepton_nn.errors import LeptonError
from lepton_nn.runtime import aliasing
from lepton_nn.runtime.aliasing import check_threaded_aliasing
from lepton_nn.runtime.kernels import kernels

THREADED = (
    "dense_packed_forward", "qdense_chain_forward", "qlinear", "conv_chunks_threads",
    "conv_direct_chain_threads", "recurrent_rows_threads", "recurrent_q8_threads",
)  # fmt: skip


def _views(*specs):
    """Arrays on one block: (offset in floats, shape) each, float32."""
    block = np.zeros(4096, np.float32)
    return [block[o : o + int(np.prod(s))].reshape(s) for o, s in specs]


@pytest.mark.parametrize("name", backend.available())
def test_every_threaded_kernel_of_every_backend_is_known(name):
    with backend.use_backend(name):
        k = kernels()
        for kernel in THREADED:
            assert getattr(k, kernel).__name__.lstrip("_") in aliasing._KERNELS, (name, kernel)


def test_a_chain_layer_writing_over_its_own_input_is_refused():
    k = kernels()
    x = np.zeros((8, 16), np.float32)
    block = np.zeros(2048, np.float32)
    o0, o1 = block[:256].reshape(8, 32), block[512:768].reshape(8, 32)
    o2_on_o0 = block[8:264].reshape(8, 32)  # layer 0's output is dead by layer 2: allowed
    ok = (k.dense_packed_forward, (x, (None,) * 3, (None,) * 3, (0,) * 3, (o0, o1, o2_on_o0), 2))
    check_threaded_aliasing([ok])
    o2_on_o1 = block[520:776].reshape(8, 32)  # over layer 1's output, which layer 2 reads
    bad = (k.dense_packed_forward, (x, (None,) * 3, (None,) * 3, (0,) * 3, (o0, o1, o2_on_o1), 2))
    with pytest.raises(LeptonError, match=r"internal error.*layer 2's output.*layer 1's output"):
        check_threaded_aliasing([ok, bad])
    check_threaded_aliasing([(bad[0], (*bad[1][:5], 1))])  # one thread: layer after layer


def test_qdense_chain_is_checked_layer_by_layer():
    class Chain:
        threads = 2

    x, o0 = _views((0, (2, 8)), (4, (2, 8)))  # o0 overlaps x, which layer 0 reads
    with pytest.raises(LeptonError, match="layer 0's output.*the input"):
        check_threaded_aliasing([(kernels().qdense_chain_forward, (x, Chain(), (o0,)))])
    Chain.threads = 1
    check_threaded_aliasing([(kernels().qdense_chain_forward, (x, Chain(), (o0,)))])


def test_one_stage_kernels_refuse_any_overlap_with_what_they_write():
    k = kernels()
    x, y, cols0, cols1 = _views(
        (0, (2, 3, 4, 4)), (200, (2, 5, 16)), (400, (27, 16)), (390, (27, 16))
    )
    head = (np.zeros((5, 27), np.float32), None, 0, (3, 3, 1, 1, 1, 1, 1, 1), 4, 4)
    op = (
        k.conv_chunks_threads,
        ("conv2d_forward_chunks", x, head, ((cols0,), (cols1,)), (y, y), 2),
    )
    with pytest.raises(LeptonError, match=r"scratch set 0 .*scratch set 1"):
        check_threaded_aliasing([op])
    (cols1,) = _views((900, (27, 16)))
    check_threaded_aliasing([(op[0], (*op[1][:3], ((cols0,), (cols1,)), (y, y), 2))])

    xq = np.zeros((4, 8), np.uint8)
    out = xq.view(np.float32)  # (4, 2) on the activations' bytes
    args = (xq, np.float32(0.1), 3, np.zeros((1, 2, 64), np.int8), np.ones(2, np.float32),
            np.zeros(2, np.int32), None, 0, out)  # fmt: skip
    with pytest.raises(LeptonError, match="out .*x_q"):
        check_threaded_aliasing([(k.qlinear, (*args, 2))])
    check_threaded_aliasing([(k.qlinear, args)])

    xt, h, c = _views((0, (5, 4, 3)), (100, (2, 4, 6)), (200, (2, 4, 6)))
    bounds = np.array([0, 2, 4], np.int64)
    head = ("LSTM", xt, (np.zeros((3, 24), np.float32),), h, c, None, bounds, False, 2)
    check_threaded_aliasing([(k.recurrent_rows_threads, head)])
    h_on_x = xt.base[40:88].reshape(2, 4, 6)
    with pytest.raises(LeptonError, match="writes h .*the input"):
        check_threaded_aliasing([(k.recurrent_rows_threads, (*head[:3], h_on_x, *head[4:]))])
    c_on_h = xt.base[120:168].reshape(2, 4, 6)
    q8 = ("GRU", np.zeros((5, 4, 3), np.uint8), np.zeros(20, np.float32), np.zeros(20, np.int32),
          (np.zeros((1, 8), np.int16),), h, c_on_h, None, bounds, False, 2)  # fmt: skip
    with pytest.raises(LeptonError, match="writes h .*c "):
        check_threaded_aliasing([(k.recurrent_q8_threads, q8)])

    a, b = _views((0, (64,)), (32, (64,)))
    chain = (x, ((np.zeros(3, np.float32),),), ((a,), (b,)), y, 2)
    with pytest.raises(LeptonError, match="scratch set 0 .*scratch set 1"):
        check_threaded_aliasing([(k.conv_direct_chain_threads, chain)])


def _checked_plans(monkeypatch):
    """Every plan built from now on goes through the check first; returns the list of the
    threaded ops' kernels it saw (so a test knows it checked something)."""
    seen = []
    from lepton_nn.runtime.plan import Network

    module = importlib.import_module(Network.__module__)
    plan_cls = module.Plan

    def checked(n, ops, *rest):
        check_threaded_aliasing(ops)
        for fn, args in ops:
            spec = aliasing._KERNELS.get(getattr(fn, "__name__", "").lstrip("_"))
            if spec is not None and spec[0](args) > 1:
                seen.append(fn.__name__.lstrip("_"))
        return plan_cls(n, ops, *rest)

    monkeypatch.setattr(module, "Plan", checked)
    return seen


def test_the_plans_of_real_models_pass(tmp_path, monkeypatch):
    """An MLP (a joined Dense chain whose third output reuses the first's block) and its
    int8 twin, a CNN and an LSTM at 2 threads, batches 1 to 64: every plan passes, and gives
    1 thread's result."""
    seen = _checked_plans(monkeypatch)
    rng = np.random.default_rng(0)
    L.set_seed(0)
    models = {
        "mlp": (nn.Sequential([nn.Dense(512, "relu"), nn.Dense(256, "relu"), nn.Dense(10)]),
                (784,)),
        "cnn": (nn.Sequential([nn.Conv2D(8, 3, padding="same", activation="relu"), nn.MaxPool2D(2),
                               nn.Conv2D(16, 3, padding="same", activation="relu"), nn.Flatten(),
                               nn.Dense(10)]), (3, 12, 12)),
        "lstm": (nn.Sequential([nn.LSTM(24), nn.Dense(3)]), (9, 5)),
    }  # fmt: skip
    for name, (model, shape) in models.items():
        model.build((None, *shape))
        path = tmp_path / f"{name}.lnn"
        L.save(model.eval(), path)
        if name == "mlp":  # and its int8 twin: a joined int8 chain, qlinear at batch 64
            calib = rng.standard_normal((32, *shape)).astype(np.float32)
            L.save(quantize(model, calib), tmp_path / "int8.lnn")
            models_int8 = tmp_path / "int8.lnn"
        one, two = rt.load(path, threads=1), rt.load(path, threads=2)
        for n in (1, 8, 64):
            x = rng.standard_normal((n, *shape)).astype(np.float32)
            np.testing.assert_allclose(two.predict(x), one.predict(x), rtol=1e-5, atol=1e-5)
    one, two = rt.load(models_int8, threads=1), rt.load(models_int8, threads=2)
    for n in (1, 3, 64):
        x = rng.standard_normal((n, 784)).astype(np.float32)
        np.testing.assert_array_equal(two.predict(x), one.predict(x))
    assert len(set(seen)) >= 3, seen  # threaded ops of several kernels were checked
