"""Recurrent networks and embeddings: step-kernel parity on every backend, gradient checks
(masks, reverse, initial states), PyTorch oracle (packed variable-length batches), layers."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
import lepton_nn.backend as backend
from lepton_nn import ShapeError, Tensor, gradcheck
from lepton_nn.backend.reference import ReferenceBackend
from lepton_nn.nn import GRU, LSTM, Dense, Embedding, Sequential, SimpleRNN
from lepton_nn.nn.serialize import layer_from_config, layer_to_config
from lepton_nn.ops.recurrent import embedding, gru, lengths_to_mask, lstm, simple_rnn

REF = ReferenceBackend()
BACKENDS = backend.available()
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=BACKENDS)
def be(request):
    with backend.use_backend(request.param) as b:
        yield b


def tol(dtype):
    return {"rtol": 2e-5, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-13}


def data(shape, dtype, seed=0, scale=1.5):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def mask_for(b, dtype, with_mask):
    if not with_mask:
        return None
    m = np.ones(b, dtype)
    m[1::3] = 0
    return m


def run(be_, name, args, outs):
    """Run kernel ``name`` on copies of ``outs`` (in/out arrays); return the copies."""
    outs = [o.copy() for o in outs]
    getattr(be_, name)(*args(outs))
    return outs


# -- step-kernel parity ------------------------------------------------------------------------

SIZES = [(5, 7), (1, 1), (0, 3), (33, 17)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,u", SIZES)
@pytest.mark.parametrize("with_mask", [False, True])
def test_lstm_step_parity(be, dtype, b, u, with_mask):
    m = mask_for(b, dtype, with_mask)
    xz, hz = data((b, 4 * u), dtype, 1, 3), data((b, 4 * u), dtype, 2, 3)
    cp, hp = data((b, u), dtype, 3), data((b, u), dtype, 4)
    outs = [
        np.full((b, 4 * u), np.nan, dtype),
        np.full((b, u), np.nan, dtype),
        np.full((b, u), np.nan, dtype),
    ]
    fwd = lambda o: (xz, hz, cp, hp, m, *o)  # noqa: E731
    want = run(REF, "lstm_step_forward", fwd, outs)
    got = run(be, "lstm_step_forward", fwd, outs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **tol(dtype))
    gates, c = want[0], want[1]
    for gy in (data((b, u), dtype, 5), None):
        dh_rec = data((b, u), dtype, 6)
        ins = [data((b, u), dtype, 7), data((b, u), dtype, 8), np.full((b, 4 * u), np.nan, dtype)]
        bwd = lambda o, gy=gy, dh_rec=dh_rec: (gy, dh_rec, o[0], o[1], gates, c, cp, m, o[2])  # noqa: E731
        for g, w in zip(
            run(be, "lstm_step_backward", bwd, ins), run(REF, "lstm_step_backward", bwd, ins)
        ):
            np.testing.assert_allclose(g, w, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,u", SIZES)
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gru_step_parity(be, dtype, b, u, with_mask, with_bias):
    m = mask_for(b, dtype, with_mask)
    xz, hz = data((b, 3 * u), dtype, 1, 3), data((b, 3 * u), dtype, 2, 3)
    bhh = data(3 * u, dtype, 9) if with_bias else None
    hp = data((b, u), dtype, 4)
    outs = [np.full((b, 4 * u), np.nan, dtype), np.full((b, u), np.nan, dtype)]
    fwd = lambda o: (xz, hz, bhh, hp, m, *o)  # noqa: E731
    want = run(REF, "gru_step_forward", fwd, outs)
    for g, w in zip(run(be, "gru_step_forward", fwd, outs), want):
        np.testing.assert_allclose(g, w, **tol(dtype))
    gates = want[0]
    for gy in (data((b, u), dtype, 5), None):
        dh_rec = data((b, u), dtype, 6)
        ins = [
            data((b, u), dtype, 7),
            np.full((b, 3 * u), np.nan, dtype),
            np.full((b, 3 * u), np.nan, dtype),
        ]
        bwd = lambda o, gy=gy, dh_rec=dh_rec: (gy, dh_rec, o[0], gates, hp, m, o[1], o[2])  # noqa: E731
        for g, w in zip(
            run(be, "gru_step_backward", bwd, ins), run(REF, "gru_step_backward", bwd, ins)
        ):
            np.testing.assert_allclose(g, w, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,u", SIZES)
@pytest.mark.parametrize("with_mask", [False, True])
def test_rnn_step_parity(be, dtype, b, u, with_mask):
    m = mask_for(b, dtype, with_mask)
    xz, hz, hp = data((b, u), dtype, 1, 3), data((b, u), dtype, 2, 3), data((b, u), dtype, 4)
    fwd = lambda o: (xz, hz, hp, m, *o)  # noqa: E731
    outs = [np.full((b, u), np.nan, dtype)]
    want = run(REF, "rnn_step_forward", fwd, outs)
    np.testing.assert_allclose(run(be, "rnn_step_forward", fwd, outs)[0], want[0], **tol(dtype))
    for gy in (data((b, u), dtype, 5), None):
        dh_rec = data((b, u), dtype, 6)
        ins = [data((b, u), dtype, 7), np.full((b, u), np.nan, dtype)]
        bwd = lambda o, gy=gy, dh_rec=dh_rec: (gy, dh_rec, o[0], want[0], m, o[1])  # noqa: E731
        for g, w in zip(
            run(be, "rnn_step_backward", bwd, ins), run(REF, "rnn_step_backward", bwd, ins)
        ):
            np.testing.assert_allclose(g, w, **tol(dtype))


@pytest.mark.parametrize("b,u", [(5, 7), (3, 17), (2, 24)])
def test_float32_step_kernels_simd_and_plain_loops(b, u):
    """The compiled float32 forward step kernels, with their AVX2 loops (8 lanes, a masked
    rest of u % 8) and with the plain C loops, against the reference, masked rows included."""
    if "cython" not in BACKENDS:
        pytest.skip("no compiled kernels")
    from lepton_nn.kernels import _recurrent as compiled

    dt, m = np.float32, mask_for(b, np.float32, True)
    xz4, hz4, xz3, hz3 = data((b, 4 * u), dt, 1), data((b, 4 * u), dt, 2), data(
        (b, 3 * u), dt, 3), data((b, 3 * u), dt, 4)  # fmt: skip
    cp, hp, bhh = data((b, u), dt, 5), data((b, u), dt, 6), data((3 * u,), dt, 7)
    cases = [
        ("lstm_step_forward", lambda o: (xz4, hz4, cp, hp, m, *o),
         [np.zeros((b, 4 * u), dt), np.zeros((b, u), dt), np.zeros((b, u), dt)]),
        ("gru_step_forward", lambda o: (xz3, hz3, bhh, hp, m, *o),
         [np.zeros((b, 4 * u), dt), np.zeros((b, u), dt)]),
        ("rnn_step_forward", lambda o: (xz4[:, :u].copy(), hz4[:, :u].copy(), hp, m, *o),
         [np.zeros((b, u), dt)]),
    ]  # fmt: skip
    for name, args, outs in cases:
        want = run(REF, name, args, outs)
        for simd in (True, False):
            try:
                compiled.use_simd(simd)
                with backend.use_backend("cython") as cy:
                    got = run(cy, name, args, outs)
            finally:
                compiled.use_simd(True)
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g, w, **tol(dt))


def test_float32_gate_math_is_accurate_at_extremes(be):
    """Saturated and tiny pre-activations: sigmoid/tanh stay within float32 rounding."""
    z = np.array([[-100, -20, -1e-6, 0, 1e-6, 0.3, 20, 100]], np.float32)
    u = z.shape[1]
    xz = np.tile(z, (1, 4))
    gates = np.empty((1, 4 * u), np.float32)
    c, h = np.empty((1, u), np.float32), np.empty((1, u), np.float32)
    zeros = np.zeros((1, u), np.float32)
    be.lstm_step_forward(xz, np.zeros_like(xz), zeros, zeros, None, gates, c, h)
    z64 = z.astype(np.float64)[0]
    np.testing.assert_allclose(gates[0, :u], 1 / (1 + np.exp(-z64)), rtol=3e-7, atol=1e-30)
    np.testing.assert_allclose(gates[0, 2 * u : 3 * u], np.tanh(z64), rtol=3e-7, atol=1e-30)


def test_float32_gate_math_is_accurate_everywhere(be):
    """sigmoid/tanh on a dense grid over [-40, 40] and tiny values of both signs: within
    3e-7 (5 float32 ulps) of float64 math. Guards the compiled kernels' shortened exp (a
    one-step FMA reduction, a degree-5 polynomial: recurrent_simd.h), whose error grows
    with |z| (the reduction) and at |r| = ln2/2 (the polynomial)."""
    tiny = np.geomspace(1e-30, 1, 2001)
    z = np.concatenate([np.linspace(-40, 40, 160001), tiny, -tiny]).astype(np.float32)
    xz = np.tile(z[:, None], (1, 4))
    gates = np.empty((z.size, 4), np.float32)
    c, h, zeros = (np.zeros((z.size, 1), np.float32) for _ in range(3))
    be.lstm_step_forward(xz, np.zeros_like(xz), zeros, zeros, None, gates, c, h)
    z64 = z.astype(np.float64)
    np.testing.assert_allclose(gates[:, 0], 1 / (1 + np.exp(-z64)), rtol=3e-7, atol=1e-37)
    np.testing.assert_allclose(gates[:, 2], np.tanh(z64), rtol=3e-7, atol=1e-37)


# -- gradient checks (float64, tiny sizes) -----------------------------------------------------


def t(shape, seed=0, grad=True, scale=0.7):
    return Tensor(data(shape, np.float64, seed, scale), requires_grad=grad)


B, T_, F, U = 3, 4, 2, 3
MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 0]], bool)  # full, prefix, holes


def _sum3(y, *states):
    out = y.sum(axis=1) * 1.0
    for s in states:
        out = out + s * 2.0
    return out


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask", [None, MASK], ids=["nomask", "mask"])
def test_lstm_gradcheck(be, reverse, mask):
    args = [
        t((B, T_, F)),
        t((F, 4 * U), 1),
        t((U, 4 * U), 2),
        t((4 * U,), 3),
        t((B, U), 4),
        t((B, U), 5),
    ]

    def f(x, wi, wh, b, h0, c0):
        return _sum3(*lstm(x, wi, wh, b, h0, c0, mask=mask, reverse=reverse))

    assert gradcheck(f, *args)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask", [None, MASK], ids=["nomask", "mask"])
def test_gru_gradcheck(be, reverse, mask):
    args = [
        t((B, T_, F)),
        t((F, 3 * U), 1),
        t((U, 3 * U), 2),
        t((3 * U,), 3),
        t((3 * U,), 4),
        t((B, U), 5),
    ]

    def f(x, wi, wh, b, bh, h0):
        return _sum3(*gru(x, wi, wh, b, bh, h0, mask=mask, reverse=reverse))

    assert gradcheck(f, *args)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask", [None, MASK], ids=["nomask", "mask"])
def test_simple_rnn_gradcheck(be, reverse, mask):
    args = [t((B, T_, F)), t((F, U), 1), t((U, U), 2), t((U,), 3), t((B, U), 4)]

    def f(x, wi, wh, b, h0):
        return _sum3(*simple_rnn(x, wi, wh, b, h0, mask=mask, reverse=reverse))

    assert gradcheck(f, *args)


def as_function(model, *inputs, **kwargs):
    """(fn, *tensors): fn(*params) runs the model with those tensors as its parameters."""
    slots = [(m, k) for m in model.modules() for k, _ in m._own_parameters()]
    start = [Tensor(getattr(m, k).data.copy(), requires_grad=True) for m, k in slots]

    def fn(*params):
        for (m, k), p in zip(slots, params):
            setattr(m, k, p)
        return model(*inputs, **kwargs)

    return fn, *start


@pytest.mark.parametrize("cls", [SimpleRNN, LSTM, GRU])
def test_bidirectional_layer_gradcheck_with_lengths(cls):
    ln.set_seed(0)
    layer = cls(2, return_sequences=True, bidirectional=True, dtype="float64")
    x = t((3, 4, 2))
    lengths = np.array([4, 2, 1])
    layer(x, lengths=lengths)
    assert gradcheck(*as_function(layer, x, lengths=lengths))
    # and the input gradient, with the final states as outputs
    layer.return_sequences, layer.return_state = False, True
    assert gradcheck(lambda v: sum((s * 1.0).sum() for s in layer(v, lengths=lengths)), x)


def test_embedding_gradcheck():
    ids = np.array([[0, 2, 2], [4, 0, 1]])
    assert gradcheck(lambda w: embedding(ids, w), t((5, 3)))


# -- masking semantics -------------------------------------------------------------------------


@pytest.mark.parametrize("fn,extra", [(lstm, 4), (gru, 3), (simple_rnn, 1)])
def test_padding_equals_running_each_sequence_alone(fn, extra):
    x, lengths = data((3, 6, 2), np.float64, 0), np.array([6, 3, 0])
    wi, wh, b = (
        data((2, extra * 4), np.float64, 1, 0.5),
        data((4, extra * 4), np.float64, 2, 0.5),
        data(extra * 4, np.float64, 3),
    )
    mask = lengths_to_mask(lengths, 6)
    for reverse in (False, True):
        y, h, *_ = fn(Tensor(x), Tensor(wi), Tensor(wh), Tensor(b), mask=mask, reverse=reverse)
        for i, n in enumerate(lengths):
            yi, hi, *_ = fn(
                Tensor(x[i : i + 1, :n]), Tensor(wi), Tensor(wh), Tensor(b), reverse=reverse
            )
            np.testing.assert_allclose(y.data[i, :n], yi.data[0], rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(y.data[i, n:], 0)
            np.testing.assert_allclose(h.data[i], hi.data[0], rtol=1e-12, atol=1e-12)


# -- PyTorch oracle ----------------------------------------------------------------------------


def _torch_rnn(torch, cls, layer, bidirectional):
    """A torch.nn.{LSTM,GRU,RNN} holding ``layer``'s weights (transposed; GRU blocks reordered)."""
    f, u = layer.input_size, layer.units
    m = getattr(torch.nn, cls)(f, u, batch_first=True, bidirectional=bidirectional).double()
    perm = np.r_[u : 2 * u, 0:u, 2 * u : 3 * u] if cls == "GRU" else slice(None)  # z,r,n -> r,z,n
    with torch.no_grad():
        for d, td in (
            (("", "_l0"), ("_reverse", "_l0_reverse")) if bidirectional else (("", "_l0"),)
        ):
            getattr(m, "weight_ih" + td).copy_(
                torch.tensor(getattr(layer, "weight_ih" + d).data.T[perm])
            )
            getattr(m, "weight_hh" + td).copy_(
                torch.tensor(getattr(layer, "weight_hh" + d).data.T[perm])
            )
            getattr(m, "bias_ih" + td).copy_(torch.tensor(getattr(layer, "bias" + d).data[perm]))
            bhh = (
                getattr(layer, "bias_hh" + d).data[perm]
                if cls == "GRU"
                else 0 * getattr(layer, "bias" + d).data
            )
            getattr(m, "bias_hh" + td).copy_(torch.tensor(bhh))
    return m, perm


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_layers_match_torch_with_variable_lengths(be, cls, bidirectional):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    ln.set_seed(3)
    ours = {"LSTM": LSTM, "GRU": GRU, "RNN": SimpleRNN}[cls]
    layer = ours(
        5, return_sequences=True, return_state=True, bidirectional=bidirectional, dtype="float64"
    )
    layer.bias_initializer = "glorot_uniform"
    x = data((4, 7, 3), np.float64, 1)
    lengths = np.array([7, 5, 1, 3])
    layer.build((None, 7, 3))
    X = Tensor(x, requires_grad=True)
    y, *states = layer(X, lengths=lengths)
    gy = data(y.shape, np.float64, 2) * lengths_to_mask(lengths, 7)[:, :, None]
    loss = (y * Tensor(gy)).sum() + sum((s * (k + 1.0)).sum() for k, s in enumerate(states))
    loss.backward()

    m, perm = _torch_rnn(torch, cls, layer, bidirectional)
    tx = torch.tensor(x, requires_grad=True)
    packed = pack_padded_sequence(tx, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    tout, tst = m(packed)
    ty, _ = pad_packed_sequence(tout, batch_first=True, total_length=7)
    tst = tst if cls == "LSTM" else (tst,)
    # ours: (h_fwd, [c_fwd], h_bwd, [c_bwd]); torch: h_n (dirs, B, U) [, c_n]
    theirs = [s[d] for d in range(2 if bidirectional else 1) for s in tst]
    tloss = (ty * torch.tensor(gy)).sum() + sum((s * (k + 1.0)).sum() for k, s in enumerate(theirs))
    tloss.backward()

    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for s, ts in zip(states, theirs):
        np.testing.assert_allclose(s.data, ts.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(X.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for d, td in (("", "_l0"), ("_reverse", "_l0_reverse")) if bidirectional else (("", "_l0"),):
        inv = np.argsort(perm) if cls == "GRU" else slice(None)
        tw = getattr(m, "weight_ih" + td).grad.numpy()[inv].T
        np.testing.assert_allclose(getattr(layer, "weight_ih" + d).grad, tw, rtol=1e-9, atol=1e-11)
        tw = getattr(m, "weight_hh" + td).grad.numpy()[inv].T
        np.testing.assert_allclose(getattr(layer, "weight_hh" + d).grad, tw, rtol=1e-9, atol=1e-11)
        tb = getattr(m, "bias_ih" + td).grad.numpy()[inv]
        np.testing.assert_allclose(getattr(layer, "bias" + d).grad, tb, rtol=1e-9, atol=1e-11)
        if cls == "GRU":
            tb = getattr(m, "bias_hh" + td).grad.numpy()[inv]
            np.testing.assert_allclose(
                getattr(layer, "bias_hh" + d).grad, tb, rtol=1e-9, atol=1e-11
            )


def test_lstm_float32_matches_torch(be):
    torch = pytest.importorskip("torch")
    ln.set_seed(4)
    layer = LSTM(16, return_sequences=True)
    x = data((8, 12, 5), np.float32, 3)
    X = Tensor(x, requires_grad=True)
    y = layer(X)
    (y * y).sum().backward()
    m, _ = _torch_rnn(torch, "LSTM", layer, False)
    m = m.float()
    tx = torch.tensor(x, requires_grad=True)
    ty, _ = m(tx)
    (ty * ty).sum().backward()
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(X.grad, tx.grad.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(
        layer.weight_hh.grad, m.weight_hh_l0.grad.numpy().T, rtol=1e-3, atol=1e-4
    )


def test_embedding_matches_torch():
    torch = pytest.importorskip("torch")
    ln.set_seed(0)
    emb = Embedding(6, 4, dtype="float64")
    ids = np.array([[1, 5, 1], [0, 3, 1]])
    y = emb(ids)
    gy = data(y.shape, np.float64, 1)
    y.backward(gy)
    te = torch.nn.Embedding(6, 4).double()
    with torch.no_grad():
        te.weight.copy_(torch.tensor(emb.weight.data))
    te(torch.tensor(ids)).backward(torch.tensor(gy))
    np.testing.assert_allclose(emb.weight.grad, te.weight.grad.numpy(), rtol=1e-12)


# -- layers ------------------------------------------------------------------------------------


def test_layer_outputs_and_weight_shapes():
    x = np.zeros((2, 5, 3), np.float32)
    lstm_ = LSTM(4)
    assert lstm_(x).shape == (2, 4)
    assert lstm_.weight_ih.shape == (3, 16) and lstm_.weight_hh.shape == (4, 16)
    assert lstm_.bias.shape == (16,) and np.all(lstm_.bias.data[4:8] == 1)  # unit forget bias
    g = GRU(4, return_sequences=True, bidirectional=True)
    assert g(x).shape == (2, 5, 8)
    assert [n for n, _ in g.named_parameters()] == [
        "weight_ih", "weight_hh", "bias", "bias_hh",
        "weight_ih_reverse", "weight_hh_reverse", "bias_reverse", "bias_hh_reverse",
    ]  # fmt: skip
    out, h_f, c_f, h_b, c_b = LSTM(4, return_state=True, bidirectional=True)(x)
    assert out.shape == (2, 8) and h_f.shape == c_b.shape == (2, 4)
    assert SimpleRNN(4, input_size=3).num_parameters() == 3 * 4 + 4 * 4 + 4
    y = Embedding(10, 3)(np.array([[1, 2], [3, 9]]))
    assert y.shape == (2, 2, 3) and y.dtype == np.float32


def test_initial_state_and_stacking():
    ln.set_seed(0)
    x = data((2, 6, 3), np.float32)
    enc = LSTM(4, return_state=True)
    _, h, c = enc(x)
    dec = LSTM(4, return_sequences=True)
    y = dec(x, initial_state=[h, c])
    assert y.shape == (2, 6, 4)
    model = Sequential([GRU(5, return_sequences=True), GRU(5), Dense(2)])
    out = model(x)
    (out * out).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_lengths_and_mask_agree():
    ln.set_seed(0)
    layer = GRU(3, return_sequences=True)
    x = data((3, 5, 2), np.float32)
    lengths = np.array([5, 2, 3])
    a = layer(x, lengths=lengths).data
    b = layer(x, mask=lengths_to_mask(lengths, 5)).data
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[1, 2:], 0)


def test_recurrent_errors():
    layer = LSTM(4, name="enc")
    with pytest.raises(ShapeError, match=r"'enc'.*\(batch, time, features\).*\(None, 3\)"):
        layer(np.zeros((2, 3), np.float32))
    layer(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ShapeError, match=r"'enc'.*\(batch, time, 3\).*\(2, 5, 4\)"):
        layer(np.zeros((2, 5, 4), np.float32))
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match="lengths must lie"):
        layer(x, lengths=np.array([6, 1]))
    with pytest.raises(ShapeError, match="mask of shape"):
        layer(x, mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="not both"):
        layer(x, lengths=np.array([1, 1]), mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="initial_state needs 2"):
        layer(x, initial_state=[np.zeros((2, 4), np.float32)])
    with pytest.raises(ShapeError, match="initial state"):
        layer(x, initial_state=[np.zeros((2, 3), np.float32)] * 2)
    with pytest.raises(ValueError, match="ids must lie"):
        Embedding(3, 2)(np.array([3]))


def test_recurrent_configs_round_trip():
    for layer in (
        LSTM(4, return_sequences=True, bidirectional=True, input_size=3, unit_forget_bias=False),
        GRU(2, return_state=True),
        SimpleRNN(3, use_bias=False),
        Embedding(7, 2),
    ):
        again = layer_from_config(layer_to_config(layer))
        assert layer_to_config(again) == layer_to_config(layer)


# -- a layer's whole sequence for a range of batch rows (the runtime's recurrent_rows_forward) --


def _rows_case(cell, dtype, b, t=7, f=5, u=21, seed=0):
    """Weights, b_hh, input (T, B, F) and states for recurrent_rows_forward: u = 21 is two
    blocks of 8 units and a partial one of 5."""
    g = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[cell]
    rng = np.random.default_rng(seed)
    w_ih = (rng.standard_normal((f, g * u)) / 2).astype(dtype)
    w_hh = (rng.standard_normal((u, g * u)) / np.sqrt(u)).astype(dtype)
    bias, b_hh = (rng.standard_normal(g * u).astype(dtype) for _ in range(2))
    x = rng.standard_normal((t, b, f)).astype(dtype)
    return w_ih, bias, w_hh, b_hh if cell == "GRU" else None, x


def _rows_run(be_, cell, x, wp, hn, mask, ranges, reverse, u=21):
    """recurrent_rows_forward over the row ranges given, in turn; returns (h, c)."""
    t, b = x.shape[:2]
    h = np.zeros((hn, b, u), x.dtype)
    c = np.zeros((2, b, u), x.dtype) if cell == "LSTM" else None
    h[(t if reverse else 0) % hn] = 0.25  # a non-zero initial state
    if c is not None:
        c[(t if reverse else 0) % 2] = -0.5
    for r0, r1 in ranges:
        be_.recurrent_rows_forward(cell, x, wp, h, c, mask, r0, r1, reverse)
    return h, c


def test_pack_recurrent_layout():
    """Block j, row k, gate g, lane l holds column g U + 8 j + l of [bias; W_ih; W_hh]
    (zero past U); GRU's bias row adds b_hh to z and r, and its last row starts n's
    recurrent sum at b_hh_n. The compiled backends use the reference's packing."""
    for cell in ("LSTM", "GRU", "SimpleRNN"):
        w_ih, bias, w_hh, b_hh, _ = _rows_case(cell, np.float32, 2)
        g, (f, gu), u = len(w_ih[0]) // 21, w_ih.shape, 21
        wp = REF.pack_recurrent(cell, w_ih, bias, w_hh, b_hh)
        extra = cell == "GRU"
        assert wp.shape == (3, 1 + f + u + extra, g * 8) and wp.dtype == np.float32
        rows = np.concatenate([bias[None], w_ih, w_hh])
        if extra:
            rows[0, : 2 * u] += b_hh[: 2 * u]
        for j, k, gate, lane in [(0, 0, 0, 0), (1, 3, g - 1, 7), (2, 1 + f, 0, 4), (2, 2, 0, 5)]:
            col = gate * u + 8 * j + lane
            want = rows[k, col] if 8 * j + lane < u else 0
            assert wp[j, k, gate * 8 + lane] == want
        if extra:
            np.testing.assert_array_equal(wp[:, -1, :16], 0)
            assert wp[1, -1, 16 + 3] == b_hh[2 * u + 8 + 3]
        got = REF._unpack_recurrent(cell, wp, f, u)
        for w, want in zip(got[1:3], (w_ih, w_hh), strict=True):
            np.testing.assert_array_equal(w, want)
        assert gu == g * u


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b", [1, 3, 9])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(("with_mask", "keep_all"), [(False, False), (True, False), (True, True)])
def test_recurrent_rows_forward_parity(be, cell, dtype, b, reverse, with_mask, keep_all):
    """Every backend writes what the reference's loop of products and step kernels writes
    (states in 2 slots or all T + 1, with and without the (T, B) mask and GRU's b_hh; the
    compiled backend with its AVX2 kernel (float32) and with its twin where that is off),
    and the reference itself agrees with the per-step kernels called one by one."""
    compiled = None
    if be.name == "cython":
        from lepton_nn.kernels import _recurrent as compiled
    t = 7
    w_ih, bias, w_hh, b_hh, x = _rows_case(cell, dtype, b, t=t)
    wp = be.pack_recurrent(cell, w_ih, bias, w_hh, b_hh)
    np.testing.assert_array_equal(wp, REF.pack_recurrent(cell, w_ih, bias, w_hh, b_hh))
    hn = t + 1 if keep_all else 2
    mask = None
    if with_mask:
        mask = np.ones((t, b), dtype)
        mask[3, ::2] = 0
        mask[5:, -1] = 0
    want = _rows_run(REF, cell, x, wp, hn, mask, [(0, b)], reverse)
    for simd in (True, False) if compiled is not None else (True,):
        try:
            if compiled is not None:
                compiled.use_simd(simd)
            got = _rows_run(be, cell, x, wp, hn, mask, [(0, b)], reverse)
        finally:
            if compiled is not None:
                compiled.use_simd(True)
        for w, g in zip(want, got, strict=True):
            if w is not None:
                np.testing.assert_allclose(g, w, **tol(dtype))
    # the reference loop, step by step by hand: the last state written
    u, r = 21, int(reverse)
    hs = np.zeros((hn, b, u), dtype)
    cs = np.zeros((2, b, u), dtype)
    hs[(t if reverse else 0) % hn], cs[(t if reverse else 0) % 2] = 0.25, -0.5
    for s in range(t - 1, -1, -1) if reverse else range(t):
        p, q = s + r, s + 1 - r
        xz, hz = x[s] @ w_ih + bias, hs[p % hn] @ w_hh
        m = None if mask is None else mask[s]
        gates = np.zeros((b, 4 * u), dtype)
        if cell == "LSTM":
            REF.lstm_step_forward(xz, hz, cs[p % 2], hs[p % hn], m, gates, cs[q % 2], hs[q % hn])
        elif cell == "GRU":
            REF.gru_step_forward(xz, hz, b_hh, hs[p % hn], m, gates, hs[q % hn])
        else:
            REF.rnn_step_forward(xz, hz, hs[p % hn], m, hs[q % hn])
    np.testing.assert_allclose(want[0], hs, **tol(dtype))
    if cell == "LSTM":
        np.testing.assert_allclose(want[1], cs, **tol(dtype))


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("b", [2, 7, 13])
def test_recurrent_rows_forward_any_split_same_bits(be, cell, b):
    """Rows are independent through the sequence: any split of the batch into ranges (odd
    sizes, single rows, the row tiles of the compiled loop cut anywhere) gives the bits of
    one call over all rows in the compiled kernel, as threads running the ranges need (the
    reference's np.matmul may round another way at another row count: there, to float
    rounding; the runtime splits rows over threads only where recurrent_rows_exact)."""
    same = (
        np.testing.assert_array_equal
        if be.recurrent_rows_exact(np.float32)
        else lambda g, w: np.testing.assert_allclose(g, w, **tol(np.float32))
    )
    if be.name == "cython":  # on an AVX2 machine: the compiled kernel
        from lepton_nn.kernels import _recurrent

        assert be.recurrent_rows_exact(np.float32) == _recurrent.rows_available()
        assert not be.recurrent_rows_exact(np.float64)
    w_ih, bias, w_hh, b_hh, x = _rows_case(cell, np.float32, b, seed=b)
    wp = be.pack_recurrent(cell, w_ih, bias, w_hh, b_hh)
    mask = np.ones((7, b), np.float32)
    mask[4:, 1::3] = 0
    whole = _rows_run(be, cell, x, wp, 2, mask, [(0, b)], False)
    for ranges in ([(0, 1), (1, b)], [(0, b // 2), (b // 2, b)], [(i, i + 1) for i in range(b)],
                   [(0, 3), (3, b)] if b > 3 else [(0, b)]):  # fmt: skip
        got = _rows_run(be, cell, x, wp, 2, mask, ranges[::-1], False)
        for w, g in zip(whole, got, strict=True):
            if w is not None:
                same(g, w)


def test_recurrent_rows_float32_gates_accurate_over_range(be):
    """The fused kernel's sigmoid and tanh (a polynomial exp, vectorized) over pre-activations
    from -100 to 100, tiny ones included: within a few float32 ulps of float64 math."""
    z = np.concatenate([np.linspace(-100, 100, 4001), [-1e-6, 1e-6, 0.0, -1e-30, 1e-30]])
    z = z.astype(np.float32)
    n, u = z.size, 1
    for cell in ("SimpleRNN", "LSTM"):
        g = 4 if cell == "LSTM" else 1
        w_ih = np.ones((1, g * u), np.float32)  # x @ W_ih = z in every gate
        wp = be.pack_recurrent(cell, w_ih, None, np.zeros((u, g * u), np.float32), None)
        x = z.reshape(1, n, 1)
        h, c = np.zeros((2, n, u), np.float32), np.zeros((2, n, u), np.float32)
        be.recurrent_rows_forward(cell, x, wp, h, c if cell == "LSTM" else None, None, 0, n,
                                  False)  # fmt: skip
        z64 = z.astype(np.float64)
        if cell == "SimpleRNN":
            want = np.tanh(z64)
        else:  # c = i g (c' = 0), h = o tanh(c), i = o = sigmoid(z), g = tanh(z)
            sig = 1 / (1 + np.exp(-z64))
            cw = sig * np.tanh(z64)
            np.testing.assert_allclose(c[1, :, 0], cw, rtol=1e-6, atol=1e-37)
            want = sig * np.tanh(cw)
        np.testing.assert_allclose(h[1, :, 0], want, rtol=1e-6, atol=1e-37)
