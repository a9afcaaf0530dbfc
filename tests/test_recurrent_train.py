"""The LSTM's training recurrence as two backend calls over ranges of batch rows: the forward
(``recurrent_rows_forward`` keeping every state and each step's gates) and the backward
(``lstm_rows_backward``, kernels/csrc/recurrent_back.h): each compiled kernel against its
NumPy twin, the twin against the step kernels called one by one, the same bits for any split
of the rows and at 1, 2 and 3 threads, and the whole op against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn.backend as backend
from lepton_nn import Tensor
from lepton_nn.backend import threads as threads_mod
from lepton_nn.backend.recurrent_train import pack_lstm_back, unpack_lstm_back
from lepton_nn.backend.reference import ReferenceBackend
from lepton_nn.backend.threads import row_ranges, set_num_threads
from lepton_nn.ops.recurrent import lstm

REF = ReferenceBackend()
TOL32 = {"rtol": 2e-5, "atol": 2e-6}


@pytest.fixture(params=backend.available())
def be(request):
    with backend.use_backend(request.param) as b:
        yield b


def _compiled(be_):
    """The compiled module where ``be_`` runs the AVX2 kernels, else None."""
    if be_.name != "cython":
        return None
    from lepton_nn.kernels import _recurrent

    return _recurrent if _recurrent.back_available() else None


def _case(b, t=6, f=5, u=21, seed=0, dtype=np.float32):
    """x (T, B, F), the packed weights, h0, c0, a mask (T, B), gy (T, B, U) and the final
    states' gradients: u = 21 is two blocks of 8 units and a partial one of 5."""
    rng = np.random.default_rng(seed)
    w_ih = (rng.standard_normal((f, 4 * u)) / 2).astype(dtype)
    w_hh = (rng.standard_normal((u, 4 * u)) / np.sqrt(u)).astype(dtype)
    bias = rng.standard_normal(4 * u).astype(dtype)
    x = rng.standard_normal((t, b, f)).astype(dtype)
    h0, c0 = (rng.standard_normal((b, u)).astype(dtype) for _ in range(2))
    mask = np.ones((t, b), dtype)
    mask[2, ::2] = 0
    mask[4:, -1] = 0
    gy = rng.standard_normal((t, b, u)).astype(dtype)
    dh, dc = (rng.standard_normal((b, u)).astype(dtype) for _ in range(2))
    return w_ih, bias, w_hh, x, h0, c0, mask, gy, dh, dc


def _forward(be_, x, wp, h0, c0, mask, reverse, ranges):
    """Every state and each step's gates, the rows taken in the ranges given."""
    t, b, u = x.shape[0], x.shape[1], h0.shape[1]
    h, c = np.zeros((t + 1, b, u), x.dtype), np.zeros((t + 1, b, u), x.dtype)
    g = np.zeros((t, b, 4 * u), x.dtype)
    h[t if reverse else 0], c[t if reverse else 0] = h0, c0
    for r0, r1 in ranges:
        be_.recurrent_rows_forward("LSTM", x, wp, h, c, mask, r0, r1, reverse, g)
    return h, c, g


def _backward(be_, gy, g, c, w_back, mask, dh, dc, reverse, ranges):
    dh, dc = dh.copy(), dc.copy()
    dz = np.full(g.shape, np.nan, g.dtype)  # every element must be written
    for r0, r1 in ranges:
        be_.lstm_rows_backward(gy, g, c, w_back, mask, dh, dc, dz, r0, r1, reverse)
    return dz, dh, dc


def test_pack_lstm_back_layout():
    """Block j, row k, lane l holds W_hh[8 j + l, k], zero past U; unpacking gives W_hh^T."""
    w = np.arange(21 * 84, dtype=np.float32).reshape(21, 84)
    wb = pack_lstm_back(w)
    assert wb.shape == (3, 84, 8) and wb.flags.c_contiguous
    for j, k, lane in [(0, 0, 0), (1, 83, 7), (2, 10, 4), (2, 5, 5)]:
        assert wb[j, k, lane] == (w[8 * j + lane, k] if 8 * j + lane < 21 else 0)
    np.testing.assert_array_equal(unpack_lstm_back(wb, 21), w.T)


@pytest.mark.parametrize("b", [1, 4, 9])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("with_gy", [False, True])
def test_lstm_rows_backward_twin_is_the_step_loop(b, reverse, with_mask, with_gy):
    """The twin is the per-step BPTT loop of the step kernels (float64, the reference), as
    the op ran it before: dh_rec = dz[next] W_hh^T, one step kernel per step, then the
    gradient reaching h0."""
    w_ih, bias, w_hh, x, h0, c0, mask, gy, dh, dc = _case(b, dtype=np.float64)
    mask, gy = (mask if with_mask else None), (gy if with_gy else None)
    wp = REF.pack_recurrent("LSTM", w_ih, bias, w_hh, None)
    _, c, g = _forward(REF, x, wp, h0, c0, mask, reverse, [(0, b)])
    got = _backward(REF, gy, g, c, pack_lstm_back(w_hh), mask, dh, dc, reverse, [(0, b)])
    t, r = x.shape[0], int(reverse)
    dz, dhw, dcw = np.zeros_like(g), dh.copy(), dc.copy()
    dh_rec, nxt = np.zeros_like(dh), None
    for s in range(t) if reverse else range(t - 1, -1, -1):
        if nxt is not None:
            dh_rec = dz[nxt] @ w_hh.T
        REF.lstm_step_backward(None if gy is None else gy[s], dh_rec, dhw, dcw, g[s],
                               c[s + 1 - r], c[s + r], None if mask is None else mask[s],
                               dz[s])  # fmt: skip
        nxt = s
    dhw += dz[nxt] @ w_hh.T
    for a, w in zip(got, (dz, dhw, dcw), strict=True):
        np.testing.assert_allclose(a, w, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("b", [1, 3, 7, 13])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
def test_compiled_training_kernels_match_their_twins(be, b, reverse, with_mask):
    """Every backend's forward (gates and all T + 1 states) and backward (dz, and the
    gradients reaching h0 and c0) match the NumPy twins in float32; the compiled backend
    with its AVX2 kernels and with its twins where they are off (use_simd(False))."""
    w_ih, bias, w_hh, x, h0, c0, mask, gy, dh, dc = _case(b, seed=b)
    mask = mask if with_mask else None
    wp, wb = be.pack_recurrent("LSTM", w_ih, bias, w_hh, None), be.pack_lstm_back(w_hh)
    np.testing.assert_array_equal(wb, pack_lstm_back(w_hh))
    fw = _forward(REF, x, wp, h0, c0, mask, reverse, [(0, b)])
    bw = _backward(REF, gy, fw[2], fw[1], wb, mask, dh, dc, reverse, [(0, b)])
    compiled = _compiled(be)
    for simd in (True, False) if compiled is not None else (True,):
        try:
            if compiled is not None:
                compiled.use_simd(simd)
            got_f = _forward(be, x, wp, h0, c0, mask, reverse, [(0, b)])
            # the backward from the twin's saved values: each kernel judged alone
            got_b = _backward(be, gy, fw[2], fw[1], wb, mask, dh, dc, reverse, [(0, b)])
        finally:
            if compiled is not None:
                compiled.use_simd(True)
        for got, want in zip(got_f + got_b, fw + bw, strict=True):
            np.testing.assert_allclose(got, want, **TOL32)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("b", [1, 2, 70])
def test_forward_gates_every_path_match_the_twin(be, cell, b):
    """The gates each step saves (LSTM [i, f, g, o], GRU [z, r, n, a_n]) and every state, on
    each path of the compiled kernel (a row alone, 2-row tiles, chunks of 64 rows and the
    rest; a partial unit block), match the twin's, and asking for them leaves the states'
    bits as the inference call (2 state slots, no gates) gives them."""
    rng = np.random.default_rng(b)
    t, f, u = 5, 4, 21
    g = 4 if cell == "LSTM" else 3
    w_ih = (rng.standard_normal((f, g * u)) / 2).astype(np.float32)
    w_hh = (rng.standard_normal((u, g * u)) / np.sqrt(u)).astype(np.float32)
    bias, b_hh = (rng.standard_normal(g * u).astype(np.float32) for _ in range(2))
    x = rng.standard_normal((t, b, f)).astype(np.float32)
    mask = (rng.random((t, b)) > 0.3).astype(np.float32)
    wp = be.pack_recurrent(cell, w_ih, bias, w_hh, b_hh if cell == "GRU" else None)

    def run(be_, slots, keep_gates):
        h = np.zeros((slots, b, u), np.float32)
        h[0] = rng_h0
        c = None
        if cell == "LSTM":
            c = np.zeros((slots, b, u), np.float32)
            c[0] = rng_c0
        gates = np.full((t, b, 4 * u), np.nan, np.float32) if keep_gates else None
        be_.recurrent_rows_forward(cell, x, wp, h, c, mask, 0, b, False, gates)
        return h, c, gates

    rng_h0, rng_c0 = (rng.standard_normal((b, u)).astype(np.float32) for _ in range(2))
    h, c, gates = run(be, t + 1, True)
    hw, cw, gw = run(REF, t + 1, True)
    assert not np.isnan(gates).any()
    np.testing.assert_allclose(gates, gw, **TOL32)
    np.testing.assert_allclose(h, hw, **TOL32)
    if cell == "LSTM":
        np.testing.assert_allclose(c, cw, **TOL32)
    h2, c2, _ = run(be, 2, False)
    np.testing.assert_array_equal(h2[t % 2], h[t])
    if cell == "LSTM":
        np.testing.assert_array_equal(c2[t % 2], c[t])


@pytest.mark.parametrize("b", [2, 7, 13])
def test_training_kernels_any_split_same_bits(be, b):
    """Rows are independent through the sequence: any split of the batch into ranges (odd
    sizes, single rows, the 3-row tiles cut anywhere, in any order) gives the bits of one
    call over all rows, forward and backward, in the compiled kernels (the twin's np.matmul
    may round another way at another row count: there, to float rounding)."""
    same = (
        np.testing.assert_array_equal
        if be.recurrent_rows_exact(np.float32)
        else lambda g, w: np.testing.assert_allclose(g, w, **TOL32)
    )
    w_ih, bias, w_hh, x, h0, c0, mask, gy, dh, dc = _case(b, seed=10 + b)
    wp, wb = be.pack_recurrent("LSTM", w_ih, bias, w_hh, None), be.pack_lstm_back(w_hh)
    whole_f = _forward(be, x, wp, h0, c0, mask, False, [(0, b)])
    whole_b = _backward(be, gy, whole_f[2], whole_f[1], wb, mask, dh, dc, False, [(0, b)])
    for ranges in ([(0, 1), (1, b)], [(0, b // 2), (b // 2, b)], [(i, i + 1) for i in range(b)],
                   [(0, 3), (3, b)] if b > 3 else [(0, b)]):  # fmt: skip
        got_f = _forward(be, x, wp, h0, c0, mask, False, ranges[::-1])
        got_b = _backward(be, gy, got_f[2], got_f[1], wb, mask, dh, dc, False, ranges[::-1])
        for got, want in zip(got_f + got_b, whole_f + whole_b, strict=True):
            same(got, want)


def _lstm_grads(x, w_ih, w_hh, bias, h0, c0, mask, reverse):
    args = [Tensor(a, requires_grad=True) for a in (x, w_ih, w_hh, bias, h0, c0)]
    ys, hn, cn = lstm(*args, mask=mask, reverse=reverse)
    ((ys * ys).sum() + (hn * 2.0).sum() + (cn * cn).sum()).backward()
    return [ys.data, hn.data, cn.data] + [a.grad for a in args]


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_op_same_bits_at_1_2_3_threads(be, reverse):
    """The op's outputs and every gradient are bit for bit the same at 1, 2 and 3 threads
    (the compiled kernels split the rows over the native pool; the weight gradients are the
    training GEMM's, the same bits at any thread count)."""
    rng = np.random.default_rng(5)
    b, t, f, u = 40, 30, 5, 24  # enough work to be split (threads_for)
    x = rng.standard_normal((b, t, f)).astype(np.float32)
    w_ih = (rng.standard_normal((f, 4 * u)) / 2).astype(np.float32)
    w_hh = (rng.standard_normal((u, 4 * u)) / 5).astype(np.float32)
    bias, h0, c0 = (rng.standard_normal(s).astype(np.float32) for s in (4 * u, (b, u), (b, u)))
    mask = np.arange(t)[None, :] < rng.integers(1, t + 1, b)[:, None]
    assert len(row_ranges(b, 3)) == 4
    saved = threads_mod._setting  # None (the default) stays None: not pinned after
    try:
        runs = []
        for n in (1, 2, 3):
            set_num_threads(n)
            runs.append(_lstm_grads(x, w_ih, w_hh, bias, h0, c0, mask, reverse))
    finally:
        set_num_threads(saved)
    for other in runs[1:]:
        for got, want in zip(other, runs[0], strict=True):
            if be.recurrent_rows_exact(np.float32):
                np.testing.assert_array_equal(got, want)
            else:
                np.testing.assert_allclose(got, want, **TOL32)


@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_op_float32_matches_torch_with_lengths_and_threads(be, reverse):
    """W4's shape class (batch 32, 40 steps, 64 units) in float32 with ragged lengths, at 2
    threads, against torch's LSTM run in float64 on each sequence alone (its own length;
    reversed within its length for ``reverse``): outputs, final states and every gradient."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    b, t, f, u = 32, 40, 8, 64
    x = rng.standard_normal((b, t, f)).astype(np.float32)
    w_ih = (rng.standard_normal((f, 4 * u)) / 3).astype(np.float32)
    w_hh = (rng.standard_normal((u, 4 * u)) / 8).astype(np.float32)
    bias = (rng.standard_normal(4 * u) / 4).astype(np.float32)
    h0, c0 = np.zeros((b, u), np.float32), np.zeros((b, u), np.float32)
    lengths = rng.integers(1, t + 1, b)
    lengths[0] = t
    mask = np.arange(t)[None, :] < lengths[:, None]
    saved = threads_mod._setting  # None (the default) stays None: not pinned after
    try:
        set_num_threads(2)
        got = _lstm_grads(x, w_ih, w_hh, bias, h0, c0, mask, reverse)
    finally:
        set_num_threads(saved)
    m = torch.nn.LSTM(f, u, batch_first=True).double()
    with torch.no_grad():  # torch: (4U, F) weights, gates i, f, g, o as ours
        m.weight_ih_l0.copy_(torch.from_numpy(w_ih.T.astype(np.float64)))
        m.weight_hh_l0.copy_(torch.from_numpy(w_hh.T.astype(np.float64)))
        m.bias_ih_l0.copy_(torch.from_numpy(bias.astype(np.float64)))
        m.bias_hh_l0.zero_()
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    total, ys = 0, torch.zeros((b, t, u), dtype=torch.float64)
    for i in range(b):
        n = int(lengths[i])
        xi = tx[i : i + 1, :n].flip(1) if reverse else tx[i : i + 1, :n]
        yi, (hi, ci) = m(xi)
        yi = yi.flip(1) if reverse else yi
        total = total + (yi * yi).sum() + (hi * 2.0).sum() + (ci * ci).sum()
        ys[i, :n] = yi[0].detach()
    total.backward()
    np.testing.assert_allclose(got[0], ys.numpy(), rtol=1e-4, atol=2e-5)
    tol = {"rtol": 2e-3, "atol": 2e-4}
    np.testing.assert_allclose(got[3], tx.grad.numpy(), **tol)
    np.testing.assert_allclose(got[4], m.weight_ih_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(got[5], m.weight_hh_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(got[6], m.bias_ih_l0.grad.numpy(), **tol)


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
@pytest.mark.parametrize("reverse", [False, True])
def test_last_state_only_same_states_and_grads(be, cell, reverse):
    """``sequences=False`` (a layer without ``return_sequences``) packs the final states
    alone and its backward reads no output gradient (gy None): the same final states and
    the same gradients of every input as the full op whose outputs the loss ignores."""
    from lepton_nn.ops import recurrent as rec

    rng = np.random.default_rng(11)
    b, t, f, u = 5, 7, 4, 19
    g = {"lstm": 4, "gru": 3, "simple_rnn": 1}[cell]
    arrays = [
        rng.standard_normal((b, t, f)),
        rng.standard_normal((f, g * u)) / 2,
        rng.standard_normal((u, g * u)) / 5,
        *[rng.standard_normal(g * u) for _ in range(2 if cell == "gru" else 1)],
        *[rng.standard_normal((b, u)) for _ in range(2 if cell == "lstm" else 1)],
    ]
    mask = np.arange(t)[None, :] < np.array([7, 3, 0, 5, 6])[:, None]
    runs = []
    for sequences in (True, False):
        args = [Tensor(a.astype(np.float32), requires_grad=True) for a in arrays]
        ys, *finals = getattr(rec, cell)(*args, mask=mask, reverse=reverse, sequences=sequences)
        assert (ys is None) == (not sequences)
        sum((s * float(k + 2)).sum() for k, s in enumerate(finals)).backward()
        runs.append([s.data for s in finals] + [a.grad for a in args])
    for got, want in zip(runs[1], runs[0], strict=True):
        np.testing.assert_array_equal(got, want)


def test_warm_lstm_step_allocates_no_big_array():
    """A training step of W4's shape (batch 32, 50 steps, 64 units) takes its states, gates
    and output from ``recycled()`` once warm: nothing of their size (the gates: 1.6 MB) is
    allocated afresh (each step faulted in ~3.4 MB of new pages, 842 of them, a third of its
    CPU time; what is left is the weight packing and gradients, ~0.3 MB)."""
    import tracemalloc

    from lepton_nn import nn

    rng = np.random.default_rng(3)
    layer = nn.LSTM(64, input_size=8)
    x = Tensor(rng.standard_normal((32, 50, 8)).astype(np.float32))

    def step():
        layer.zero_grad()
        (layer(x) * 1.5).sum().backward()

    for _ in range(3):
        step()
    tracemalloc.start()
    try:
        step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"a warm step allocated up to {peak} bytes at once"
