"""The int8 recurrent layer's fused sequence kernel (``recurrent_q8_forward``,
kernels/csrc/recurrent_q8.h) against its twin (lepton_nn/backend/recurrent_q8.py), and the
runtime's int8 LSTM / GRU / SimpleRNN on it against the per-step int8 path, the float layer
and PyTorch's dynamic-quantized LSTM."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import lepton_nn as L
import lepton_nn.backend as backend
import lepton_nn.runtime as rt
from lepton_nn import nn
from lepton_nn.backend.recurrent_q8 import pack_recurrent_q8, unpack_recurrent_q8
from lepton_nn.backend.reference import ReferenceBackend
from lepton_nn.compress import quantize
from lepton_nn.runtime import steps_recurrent as steps
from lepton_nn.runtime.kernels import kernels

REF = ReferenceBackend()
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


@pytest.fixture(params=backend.available())
def be(request):
    with backend.use_backend(request.param) as b:
        yield b


def _case(be_, cell, t=7, b=10, f=5, u=21, static=False, seed=0):
    """(xq, xs, xzp, packed): int8 weights with per-column scales, biases (GRU: b_hh too)
    and x (T, B, F) quantized per row (or with a static pair) by ``be_.quantize_rows``.
    u = 21: two blocks of 8 units and a partial one of 5; f = 5: an odd pair of rows."""
    g, rng = GATES[cell], np.random.default_rng(seed)
    q_ih = rng.integers(-127, 128, (g * u, f)).astype(np.int8)
    q_hh = rng.integers(-127, 128, (g * u, u)).astype(np.int8)
    s_ih = (rng.uniform(0.5, 1.5, g * u) / 254).astype(np.float32)
    s_hh = (rng.uniform(0.5, 1.5, g * u) / 127 / np.sqrt(u)).astype(np.float32)
    bias = rng.standard_normal(g * u).astype(np.float32)
    b_hh = rng.standard_normal(g * u).astype(np.float32) if cell == "GRU" else None
    x = rng.standard_normal((t * b, f)).astype(np.float32)
    xq = np.zeros((t * b, f), np.uint8)
    if static:
        xs, xzp = np.array([0.02], np.float32), np.array([120], np.int32)
        be_.quantize_rows(x, xq, xs, xzp, True)
    else:
        xs, xzp = np.zeros(t * b, np.float32), np.zeros(t * b, np.int32)
        be_.quantize_rows(x, xq, xs, xzp)
    packed = REF.pack_recurrent_q8(cell, q_ih, s_ih, bias, q_hh, s_hh, b_hh)
    return xq.reshape(t, b, f), xs, xzp, packed


def _run(kernel, cell, args, hn, mask, ranges, reverse, u=21):
    """``kernel`` over the row ranges given, in turn, from a non-zero state; returns (h, c)."""
    t, b = args[0].shape[:2]
    h = np.zeros((hn, b, u), np.float32)
    c = np.zeros((2, b, u), np.float32) if cell == "LSTM" else None
    h[(t if reverse else 0) % hn] = np.linspace(-0.9, 0.8, b * u).reshape(b, u)
    if c is not None:
        c[(t if reverse else 0) % 2] = -0.5
    for r0, r1 in ranges:
        kernel(cell, *args, h, c, mask, r0, r1, reverse)
    return h, c


def _twin(be_):
    """The twin on ``be_``'s own quantize_rows, qlinear and step kernels."""
    return lambda *a: ReferenceBackend.recurrent_q8_forward(be_, *a)


def _equal(got, want):
    for g, w in zip(got, want, strict=True):
        if w is not None:
            np.testing.assert_array_equal(g, w)


def test_pack_recurrent_q8_layout():
    """wq[j, p, 16 g + 2 l + e] is row 2 p + e, column g U + 8 j + l of [q_ih^T; q_hh^T] (each
    padded to an even count of rows), wf[j] the scales and biases of those columns; zeros
    past U; unpack inverts it."""
    f, u = 5, 21
    for cell, g in GATES.items():
        rng = np.random.default_rng(1)
        q_ih = rng.integers(-127, 128, (g * u, f)).astype(np.int8)
        q_hh = rng.integers(-127, 128, (g * u, u)).astype(np.int8)
        s_ih, s_hh, b, b_hh = (rng.uniform(0.1, 1, g * u).astype(np.float32) for _ in range(4))
        wq, wf = pack_recurrent_q8(cell, q_ih, s_ih, b, q_hh, s_hh, b_hh)
        assert wq.shape == (3, 3 + 11, g * 16) and wq.dtype == np.int16
        assert wf.shape == (3, 4, g * 8) and wf.dtype == np.float32
        rows = np.zeros((6 + 22, g * u), np.int16)
        rows[:f], rows[6 : 6 + u] = q_ih.T, q_hh.T
        for j, p, gate, lane, e in [(0, 0, 0, 0, 1), (1, 2, g - 1, 7, 0), (2, 3, 0, 4, 1),
                                    (2, 13, g - 1, 5, 0), (0, 7, 0, 3, 1)]:  # fmt: skip
            col = gate * u + 8 * j + lane
            want = rows[2 * p + e, col] if 8 * j + lane < u else 0
            assert wq[j, p, 16 * gate + 2 * lane + e] == want
        assert wf[1, 1, 8 * (g - 1) + 2] == s_hh[(g - 1) * u + 10]
        np.testing.assert_array_equal(wf[2, :, 5:8], 0)  # lanes past U
        got = unpack_recurrent_q8(cell, (wq, wf), f, u)
        for a, w in zip(got, (q_ih, s_ih, b, q_hh, s_hh, b_hh), strict=True):
            np.testing.assert_array_equal(a, w)
        none = unpack_recurrent_q8(cell, pack_recurrent_q8(cell, q_ih, s_ih, None, q_hh, s_hh,
                                                           None), f, u)  # fmt: skip
        np.testing.assert_array_equal(none[2], 0)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize(("f", "u", "b"), [(5, 21, 10), (8, 64, 4), (1, 3, 1), (6, 16, 7)])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_recurrent_q8_forward_parity(be, cell, f, u, b, static, reverse):
    """Every backend's kernel writes the bits its twin writes on that backend's own
    quantize_rows, qlinear and step kernels (the compiled one with its AVX2 kernel and,
    with SIMD off, the twin), with and without the mask, in 2 or T + 1 state slots; all
    agree with the pure-NumPy twin to float rounding. Tails: U not a multiple of 8, odd F
    and U, batches not a multiple of the row tile."""
    compiled = None
    if be.name == "cython":
        from lepton_nn.kernels import _recurrent as compiled
    t = 7
    args = _case(be, cell, t=t, b=b, f=f, u=u, static=static)
    mask = np.ones((t, b), np.float32)
    mask[3, ::2] = 0
    mask[5:, -1] = 0
    for hn, m in ((2, None), (t + 1, mask)):
        pure = _run(_twin(REF), cell, args, hn, m, [(0, b)], reverse, u)
        for simd in (True, False) if compiled is not None else (True,):
            try:
                if compiled is not None:
                    compiled.use_simd(simd)
                got = _run(be.recurrent_q8_forward, cell, args, hn, m, [(0, b)], reverse, u)
                want = _run(_twin(be), cell, args, hn, m, [(0, b)], reverse, u)
            finally:
                if compiled is not None:
                    compiled.use_simd(True)
            _equal(got, want)
            for g, w in zip(got, pure, strict=True):
                if w is not None:
                    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        if m is not None:  # a masked step keeps the row's state
            p, q = (4, 3) if reverse else (3, 4)  # the slots before / after step 3
            np.testing.assert_array_equal(got[0][q, ::2], got[0][p, ::2])


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("b", [2, 7, 13])
def test_recurrent_q8_forward_any_split_same_bits(be, cell, b):
    """Rows are independent through the sequence: any split into ranges (single rows, odd
    sizes, the kernel's row tiles cut anywhere) gives the bits of one call over all rows,
    as the runtime's threads need, on every backend."""
    args = _case(be, cell, b=b)
    whole = _run(be.recurrent_q8_forward, cell, args, 2, None, [(0, b)], False)
    cuts = [(0, b // 2), (b // 2, b)] if b > 1 else [(0, b)]
    singles = [(i, i + 1) for i in range(b)]
    thirds = [(0, b // 3), (b // 3, 2 * b // 3), (2 * b // 3, b)]
    for ranges in (cuts, singles, thirds):
        _equal(_run(be.recurrent_q8_forward, cell, args, 2, None, ranges, False), whole)


# -- the runtime -------------------------------------------------------------------------------


def _model(cell, units=20, bidirectional=False, sequences=False, t=11, f=5, seed=0):
    L.set_seed(seed)
    layer = getattr(nn, cell)(units, bidirectional=bidirectional, return_sequences=sequences)
    model = nn.Sequential([layer, nn.Flatten(), nn.Dense(3)])
    model.build((None, t, f))
    return model.eval()


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize(("bidirectional", "sequences"), [(False, False), (True, True)])
@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_runtime_int8_fused_equals_per_step(tmp_path, monkeypatch, cell, bidirectional,
                                            sequences, mode):  # fmt: skip
    """A saved-and-loaded int8 file: the fused plan (one kernel call per direction and range
    of rows) has the bits of the per-step plan (quantize_rows, qlinear and the step kernel
    each step), with and without lengths, at 1, 2 and 3 threads; and is near the float
    layer."""
    model = _model(cell, bidirectional=bidirectional, sequences=sequences)
    x = np.random.default_rng(1).standard_normal((23, 11, 5)).astype(np.float32)
    lengths = np.random.default_rng(2).integers(0, 12, 23)
    L.save(quantize(model, x, mode), tmp_path / "q.lnn")
    served = rt.load(tmp_path / "q.lnn", threads=1)
    rec = served.network.steps[0]
    assert isinstance(rec, steps.RecurrentStep) and all(q is not None for q in rec.q8)
    fused = served.predict(x)
    ops = served.plan_for(23).head + served.plan_for(23).tail
    assert any(fn == served_kernel() for fn, args, *_ in ops)  # threads=1: one call
    # the per-step path's input product 3 steps of 11 ahead: a partial last chunk, met first
    # by the reverse direction
    monkeypatch.setattr(steps, "XZ_CHUNK_BYTES", 3 * 23 * 4 * 20 * GATES[cell])
    slow = rt.load(tmp_path / "q.lnn", threads=1)
    for s in slow.network.steps:
        if isinstance(s, steps.RecurrentStep):
            s.q8 = [None] * len(s.q8)
    np.testing.assert_array_equal(fused, slow.predict(x))
    np.testing.assert_array_equal(served.predict(x, lengths=lengths),
                                  slow.predict(x, lengths=lengths))  # fmt: skip
    for threads in (2, 3):
        more = rt.load(tmp_path / "q.lnn", threads=threads)
        np.testing.assert_array_equal(more.predict(x), fused)
        np.testing.assert_array_equal(more.predict(x, lengths=lengths),
                                      served.predict(x, lengths=lengths))  # fmt: skip
    want = model(x).data
    assert np.linalg.norm(fused - want) < 0.03 * np.linalg.norm(want)


def served_kernel():
    return kernels().recurrent_q8_forward


def test_runtime_int8_rows_split_over_threads(tmp_path):
    """At 2 threads a batch of 67 rows is split into several ranges, each running the whole
    sequence in the fused int8 kernel: the bits of 1 thread."""
    model = _model("LSTM", units=24, bidirectional=True, t=40, f=6)
    x = np.random.default_rng(0).standard_normal((67, 40, 6)).astype(np.float32)
    L.save(quantize(model, x[:20]), tmp_path / "q.lnn")
    one, two = rt.load(tmp_path / "q.lnn", threads=1), rt.load(tmp_path / "q.lnn", threads=2)
    ops = two.plan_for(67).head + two.plan_for(67).tail
    # per direction one job of the native pool: its row ranges (bounds) and 2 threads
    split = [args for fn, args, *_ in ops if fn == kernels().recurrent_q8_threads]
    assert len(split) == 2 and all(args[-1] == 2 and len(args[-3]) > 3 for args in split)
    assert all(args[-3][0] == 0 and args[-3][-1] == 67 for args in split)
    np.testing.assert_array_equal(two.predict(x), one.predict(x))


def test_runtime_int8_float64_plan_takes_the_per_step_path(tmp_path):
    """A float64 model's int8 file runs the per-step path (the fused kernel is float32)."""
    L.set_seed(0)
    model = nn.Sequential([nn.LSTM(16, dtype="float64"), nn.Dense(3, dtype="float64")])
    model.build((None, 7, 5))
    x = np.random.default_rng(4).standard_normal((9, 7, 5))
    qm = quantize(model.eval(), x)
    L.save(qm, tmp_path / "q.lnn")
    served = rt.load(tmp_path / "q.lnn")
    got = served.predict(x)
    want = model(x).data
    assert np.linalg.norm(got - want) < 0.03 * np.linalg.norm(want)


def test_int8_lstm_accuracy_against_torch_quantized():
    """On the same weights, our int8 LSTM's largest distance from the float LSTM is no more
    than PyTorch's dynamic-quantized LSTM's (both quantize the weights per output channel to
    int8; PyTorch quantizes x and h per tensor, we per row)."""
    torch = pytest.importorskip("torch")
    t, f, u = 30, 8, 32
    model = _model("LSTM", units=u, t=t, f=f, seed=3)
    layer = model.layers[0]
    rng = np.random.default_rng(5)
    for p in layer.parameters():
        p.data[...] = rng.uniform(-0.5, 0.5, p.data.shape).astype(np.float32)
    ref = torch.nn.LSTM(f, u, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.from_numpy(layer.weight_ih.data.T.copy()))
        ref.weight_hh_l0.copy_(torch.from_numpy(layer.weight_hh.data.T.copy()))
        ref.bias_ih_l0.copy_(torch.from_numpy(layer.bias.data.copy()))
        ref.bias_hh_l0.zero_()
    x = rng.standard_normal((64, t, f)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wrapped = torch.nn.Sequential(ref)  # quantize_dynamic swaps children only
            qref = torch.ao.quantization.quantize_dynamic(wrapped, {torch.nn.LSTM}, torch.qint8)[0]
            with torch.inference_mode():
                theirs = qref(torch.from_numpy(x))[0][:, -1].numpy()
        except (RuntimeError, AttributeError):
            pytest.skip("this torch has no quantized engine")
    assert type(qref) is not torch.nn.LSTM
    with torch.inference_mode():
        exact = ref(torch.from_numpy(x))[0][:, -1].numpy()
    only = nn.Sequential([layer])
    only.build((None, t, f))
    qm = quantize(only.eval(), x, "dynamic")
    ours = qm.predict(x)
    np.testing.assert_allclose(only(x).data, exact, atol=1e-5)
    err_ours, err_theirs = np.abs(ours - exact).max(), np.abs(theirs - exact).max()
    assert err_ours < 0.02 and err_ours <= err_theirs, (err_ours, err_theirs)  # 0.007, 0.029
