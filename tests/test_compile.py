"""lepton_nn.compile: the captured step replays the eager step exactly (the NumPy twin and the
Numba replay bit for bit, exp-based ops included), and refuses what it cannot."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as L
from lepton_nn import losses, nn, optim
from lepton_nn.errors import (
    ControlFlowError,
    LeptonError,
    SignatureError,
    UnsupportedOpError,
)

OPTIMIZERS = {
    "sgd_momentum": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
    "sgd_nesterov_wd": lambda ps: optim.SGD(
        ps, lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3
    ),  # fmt: skip
    "sgd_plain": lambda ps: optim.SGD(ps, lr=0.05),
    "adam": lambda ps: optim.Adam(ps, lr=1e-2),
    "adam_l2": lambda ps: optim.Adam(ps, lr=1e-2, weight_decay=1e-2),
    "adamw": lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
}


def _data(n=32, d=6, classes=None, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((5, n, d), dtype=np.float32)
    w = rng.standard_normal((d, classes or 1), dtype=np.float32)
    s = x @ w
    if classes:
        return x, s.argmax(-1).astype(np.int64)
    return x, (s > 0).astype(np.float32)


def _model(acts=("relu", "relu"), out=1, d=6, seed=3):
    L.set_seed(seed)
    layers = [nn.Dense(16, acts[0], in_features=d), nn.Dense(8, acts[1], in_features=16)]
    return nn.Sequential([*layers, nn.Dense(out, in_features=8)])


def _step(model, opt, loss_fn):
    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def _pair(opt_name="adam", acts=("relu", "relu"), loss="bce", out=1, backend="numpy"):
    """(eager model, eager optimizer, eager step), (the same for the compiled one)."""
    loss_fn = {"bce": losses.binary_cross_entropy_with_logits, "mse": losses.mse,
               "ce": losses.cross_entropy}[loss]  # fmt: skip
    runs = []
    for _ in range(2):
        m = _model(acts, out)
        o = OPTIMIZERS[opt_name](m.parameters())
        runs.append((m, o, _step(m, o, loss_fn)))
    compiled = L.compile(runs[1][2], backend=backend)
    return runs[0], runs[1][:2] + (compiled,)


def _state(model, opt):
    arrays = [p.data for p in model.parameters()] + [p.grad for p in model.parameters()]
    for p in model.parameters():
        st = opt.state.get(id(p), {})
        arrays += [st[k] for k in sorted(st) if isinstance(st[k], np.ndarray)]
        arrays += [np.asarray(st[k]) for k in sorted(st) if not isinstance(st[k], np.ndarray)]
    return arrays + [np.asarray(opt.steps)]


def _assert_same(a, b, exact=True):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        if exact:
            np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_allclose(u, v, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_numpy_replay_is_bit_identical_to_eager(opt_name):
    x, y = _data()
    (m1, o1, eager), (m2, o2, comp) = _pair(opt_name)
    for i in range(7):  # calls 1-2 capture, 3-7 replay
        a, b = eager(x[i % 5], y[i % 5]), comp(x[i % 5], y[i % 5])
        assert a.item() == b.item()
        _assert_same(_state(m1, o1), _state(m2, o2))
    assert not b.requires_grad


@pytest.mark.parametrize(
    ("acts", "loss", "out"),
    [(("tanh", "sigmoid"), "mse", 1), (("gelu", "relu"), "ce", 4), (("relu", "tanh"), "bce", 1)],
)
def test_numpy_replay_other_layers_and_losses(acts, loss, out):
    x, y = _data(classes=out if loss == "ce" else None)
    (m1, o1, eager), (m2, o2, comp) = _pair("adam", acts, loss, out)
    for i in range(6):
        assert eager(x[i % 5], y[i % 5]).item() == comp(x[i % 5], y[i % 5]).item()
    _assert_same(_state(m1, o1), _state(m2, o2))


def test_standalone_activation_layers_and_explicit_ops():
    """ReLU/Tanh/Sigmoid layers (separate ops) and a loss written with Tensor ops."""
    x, y = _data()

    def build():
        L.set_seed(1)
        model = nn.Sequential([nn.Dense(8, in_features=6), nn.ReLU(), nn.Dense(8, in_features=8),
                               nn.Tanh(), nn.Dense(1, in_features=8), nn.Sigmoid()])  # fmt: skip
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)

        def step(xb, yb):
            opt.zero_grad()
            d = model(xb) - L.Tensor(yb)
            loss = (d * d).mean() + (-(d.sum())) / 1000.0
            loss.backward()
            opt.step()
            return loss, d

        return model, opt, step

    (m1, o1, eager), (m2, o2, step2) = build(), build()
    comp = L.compile(step2, backend="numpy")
    for i in range(6):
        (la, da), (lb, db) = eager(x[i % 5], y[i % 5]), comp(x[i % 5], y[i % 5])
        assert la.item() == lb.item()
        np.testing.assert_array_equal(da.data, db.data)
    _assert_same(_state(m1, o1), _state(m2, o2))


@pytest.mark.parametrize("opt_name", ["sgd_nesterov_wd", "adam", "adamw"])
def test_numba_replay_bit_identical_for_exact_ops(opt_name):
    """ReLU MLP + MSE: every op is exactly rounded, so the compiled replay matches the eager
    step (and so the NumPy twin) bit for bit."""
    pytest.importorskip("numba")
    if L.backend.get_backend().name != "cython" and opt_name.startswith("adam"):
        pytest.skip("the compiled Adam pass is the Cython kernel's arithmetic")
    x, y = _data()
    (m1, o1, eager), (m2, o2, comp) = _pair(opt_name, loss="mse", backend="numba")
    for i in range(7):
        assert eager(x[i % 5], y[i % 5]).item() == comp(x[i % 5], y[i % 5]).item()
    _assert_same(_state(m1, o1), _state(m2, o2))


# each activation, loss and optimizer at least once (the grads are compared at every step,
# so the optimizer's pass, checked on its own above, sees the same input whatever made it;
# each distinct replay is a Numba compile: the full product of 12 cost CI ~1 minute)
EXP_CASES = [
    (("relu", "relu"), "bce", 1, "adamw"),
    (("tanh", "sigmoid"), "ce", 3, "sgd_nesterov_wd"),
    (("gelu", "sigmoid"), "bce", 1, "adam"),
    (("gelu", "tanh"), "mse", 1, "sgd_nesterov_wd"),
]


@pytest.mark.parametrize(("acts", "loss", "out", "opt_name"), EXP_CASES)
def test_numba_replay_bit_identical_with_exp_based_ops(acts, loss, out, opt_name):
    """exp/tanh/log ops (sigmoid, tanh and gelu Dense layers, BCE, softmax cross-entropy):
    the replay calls the eager step's own loops (NumPy's ufunc loops, the Cython kernels' C
    loops), so 20 steps match the eager ones bit for bit, grads and optimizer state too."""
    pytest.importorskip("numba")
    from lepton_nn.compiled import kernels as K

    if not (K.NUMPY_LOOPS and K.C_LOOPS) or L.backend.get_backend().name != "cython":
        pytest.skip("bit identity with exp-based ops: the eager step on the cython backend")
    x, y = _data(classes=out if loss == "ce" else None)
    (m1, o1, eager), (m2, o2, comp) = _pair(opt_name, acts, loss, out, backend="numba")
    for i in range(20):
        assert eager(x[i % 5], y[i % 5]).item() == comp(x[i % 5], y[i % 5]).item(), i
        _assert_same(_state(m1, o1), _state(m2, o2))


def test_numba_replay_standalone_sigmoid_tanh_bit_identical():
    """Sigmoid and Tanh layers (NumPy's exp and tanh in the eager ops) and BCE."""
    pytest.importorskip("numba")
    from lepton_nn.compiled import kernels as K

    if not K.NUMPY_LOOPS:
        pytest.skip("NumPy's loops were not found in this NumPy")
    x, y = _data()

    def build():
        L.set_seed(2)
        model = nn.Sequential([nn.Dense(8, in_features=6), nn.Tanh(), nn.Dense(8, in_features=8),
                               nn.Sigmoid(), nn.Dense(1, in_features=8)])  # fmt: skip
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
        return model, opt, _step(model, opt, losses.binary_cross_entropy_with_logits)

    (m1, o1, eager), (m2, o2, step2) = build(), build()
    comp = L.compile(step2, backend="numba")
    for i in range(20):
        assert eager(x[i % 5], y[i % 5]).item() == comp(x[i % 5], y[i % 5]).item(), i
    _assert_same(_state(m1, o1), _state(m2, o2))


def test_replay_loops_are_numpys_and_the_kernels():
    """The loops the replay calls give NumPy's / the Cython kernel's bits where libm's differ."""
    pytest.importorskip("numba")
    from lepton_nn.compiled import kernels as K

    if not K.NUMPY_LOOPS:
        pytest.skip("NumPy's loops were not found in this NumPy")
    x = np.random.default_rng(5).standard_normal(1001).astype(np.float32) * np.float32(9)
    for run, want in ((K.np_exp, np.exp(x)), (K.np_tanh, np.tanh(x))):
        got = np.empty_like(x)
        run(x, got)
        np.testing.assert_array_equal(got, want)
    got = np.empty_like(x)
    K.np_logaddexp0(x, got)
    np.testing.assert_array_equal(got, np.logaddexp(0, x))
    sig = np.empty_like(x)
    K.np_sigmoid(x, sig)
    e = np.exp(-np.abs(x))
    np.testing.assert_array_equal(sig, np.where(x >= 0, 1 / (1 + e), e / (1 + e)))
    if K.C_LOOPS:
        from lepton_nn.kernels import _dense

        z, b = x[:1000].reshape(40, 25), x[1:26].copy()
        for act in (K.SIGMOID, K.TANH, K.GELU):
            got, want = np.empty_like(z), np.empty_like(z)
            K.c_bias_act(z, b, True, act, got)
            np.testing.assert_array_equal(got, _dense.bias_act_forward(z, b, act, want))


def test_numba_matmul_matches_numpy_for_every_blas_path():
    """mm picks gemm, gemv (either side), dot or NumPy's loop as np.matmul does: equal bits."""
    pytest.importorskip("numba")
    from lepton_nn.compiled import kernels as K

    rng = np.random.default_rng(5)
    for m, k, n in [(7, 5, 9), (64, 32, 1), (1, 32, 16), (1, 8, 1), (6, 1, 5), (1, 1, 4),
                    (33, 17, 2), (2, 40, 3)]:  # fmt: skip
        for ta in (False, True):
            for tb in (False, True):
                a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
                b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
                want = np.matmul(a.T if ta else a, b.T if tb else b)
                got = np.empty((m, n), np.float32)
                K.mm(a, b, got, ta, tb)
                np.testing.assert_array_equal(got, want, err_msg=f"{m, k, n, ta, tb}")


def test_numba_reductions_follow_numpy_order():
    pytest.importorskip("numba")
    from lepton_nn.compiled import kernels as K

    rng = np.random.default_rng(6)
    for n in (1, 5, 8, 13, 64, 129, 300, 1001):
        a = (rng.standard_normal((n, 3)) * 10).astype(np.float32)
        o = np.empty(1, np.float32)
        K.reduce_all(a, o, False)
        assert o[0] == a.sum()
        col = np.empty((3,), np.float32)
        K.colsum(a, col)
        np.testing.assert_array_equal(col, a.sum(axis=0))
        one = np.empty((1,), np.float32)
        K.colsum(a[:, :1].copy(), one)
        np.testing.assert_array_equal(one, a[:, :1].sum(axis=0))
        rows = np.empty(n, np.float32)
        K.reduce_rows(a, rows, True)
        np.testing.assert_array_equal(rows, a.mean(axis=1))


def test_other_shapes_raise_or_recapture():
    x, y = _data(n=32)
    x2, y2 = _data(n=20, seed=1)
    (_, _, eager), (_, _, comp) = _pair("adam")
    for i in range(3):
        comp(x[i], y[i])
    with pytest.raises(SignatureError, match=r"float32\[32, 6\].*float32\[20, 6\]"):
        comp(x2[0], y2[0])
    with pytest.raises(SignatureError):
        comp(x[0].astype(np.float64), y[0])

    (m1, o1, eager), (m2, o2, step2) = _pair("adam")
    comp = L.compile(step2.fn, backend="numpy", recapture=True)
    for i in range(8):  # alternate two batch sizes: one tape each
        xb, yb = (x[i % 5], y[i % 5]) if i % 2 else (x2[i % 5], y2[i % 5])
        assert eager(xb, yb).item() == comp(xb, yb).item()
    _assert_same(_state(m1, o1), _state(m2, o2))
    assert len(comp.entries) == 2


def test_unsupported_ops_are_named():
    x, y = _data()
    model = _model()
    opt = optim.RMSprop(model.parameters(), lr=0.01)
    with pytest.raises(UnsupportedOpError, match="RMSprop"):
        L.compile(_step(model, opt, losses.mse))(x[0], y[0])

    opt = optim.Adam(model.parameters())
    with pytest.raises(UnsupportedOpError, match="op Exp"):
        L.compile(_step(model, opt, lambda p, t: losses.mse(p.exp(), t)))(x[0], y[0])

    def clipped(xb, yb):
        opt.zero_grad()
        losses.mse(model(xb), yb).backward()
        optim.clip_grad_norm_(model.parameters(), 1e-3)
        opt.step()

    with pytest.raises(UnsupportedOpError, match="clip_grad_norm_"):
        L.compile(clipped)(x[0], y[0])

    def no_zero_grad(xb, yb):
        losses.mse(model(xb), yb).backward()
        opt.step()

    step = L.compile(no_zero_grad)
    with pytest.raises(UnsupportedOpError, match="zero_grad"):
        step(x[0], y[0])
        step(x[1], y[1])

    with pytest.raises(UnsupportedOpError, match="input 0 is never read"):  # a float64 input
        L.compile(_step(model, opt, losses.mse))(x[0].astype(np.float64), y[0])


def test_control_flow_change_is_caught():
    x, y = _data()
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.01)
    calls = []

    def step(xb, yb):
        calls.append(1)
        opt.zero_grad()
        out = model(xb)
        loss = losses.mse(out, yb) if len(calls) % 2 else losses.binary_cross_entropy_with_logits(
            out, yb)  # fmt: skip
        loss.backward()
        opt.step()
        return loss

    comp = L.compile(step, backend="numpy")
    comp(x[0], y[0])
    with pytest.raises(ControlFlowError, match="second call"):
        comp(x[1], y[1])


def test_check_mode_reruns_eager_and_catches_a_branch():
    x, y = _data()
    (m1, o1, eager), (m2, o2, step2) = _pair("adamw")
    comp = L.compile(step2.fn, backend="numpy", check=True)
    for i in range(5):
        assert eager(x[i], y[i]).item() == comp(x[i], y[i]).item()
    _assert_same(_state(m1, o1), _state(m2, o2))

    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.01)
    n = []

    def branchy(xb, yb):
        n.append(1)
        opt.zero_grad()
        out = model(xb)
        loss = losses.mse(out * 2.0 if len(n) > 4 else out, yb)  # changes after capture
        loss.backward()
        opt.step()
        return loss

    comp = L.compile(branchy, backend="numpy", check=True)
    with pytest.raises(ControlFlowError):
        for i in range(5):
            comp(x[i], y[i])
    assert issubclass(ControlFlowError, LeptonError)


def test_lr_schedule_and_state_carry_over_to_eager():
    """opt.lr is read at every call; after compiled steps, eager steps continue the same
    trajectory (Adam's moments and step count carried)."""
    x, y = _data()
    (m1, o1, eager), (m2, o2, comp) = _pair("adam")
    s1, s2 = optim.StepLR(o1, 2, 0.5), optim.StepLR(o2, 2, 0.5)
    for i in range(6):
        assert eager(x[i % 5], y[i % 5]).item() == comp(x[i % 5], y[i % 5]).item()
        s1.step(), s2.step()
    for i in range(3):
        assert eager(x[i], y[i]).item() == comp.fn(x[i], y[i]).item()  # comp.fn: eager
    _assert_same(_state(m1, o1), _state(m2, o2))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_cross_entropy_labels_checked_on_replay(backend):
    if backend == "numba":
        pytest.importorskip("numba")
    x, y = _data(classes=3)
    _, (m, o, comp) = _pair("adam", ("tanh", "sigmoid"), "ce", 3, backend=backend)
    for i in range(3):
        comp(x[i], y[i])
    before = ([p.data.copy() for p in m.parameters()], o.steps)
    bad = y[3].copy()
    bad[5] = 7
    with pytest.raises(ValueError, match="label"):
        comp(x[3], bad)
    if backend == "numba":  # refused before any update
        _assert_same(before[0], [p.data for p in m.parameters()])
        assert o.steps == before[1]


def test_numba_replay_equals_numpy_replay_buffer_by_buffer():
    """Both replays of one tape, from the same state: every temporary equal, bit for bit."""
    pytest.importorskip("numba")
    from lepton_nn.compiled.codegen import NumbaReplay
    from lepton_nn.compiled.step import NumpyReplay

    x, y = _data()
    _, (m, o, comp) = _pair("adam", loss="mse")
    comp(x[0], y[0])
    comp(x[1], y[1])
    tape = next(iter(comp.entries.values()))[0]
    start = [p.data.copy() for p in m.parameters()]
    moments = [(o.state[id(p)]["m"].copy(), o.state[id(p)]["v"].copy(), o.state[id(p)]["t"])
               for p in m.parameters()]  # fmt: skip
    twin = NumpyReplay(tape)
    twin((x[2], y[2]))
    after = [p.data.copy() for p in m.parameters()]
    for p, d, (mm, vv, t) in zip(m.parameters(), start, moments):
        p.data[...] = d
        st = o.state[id(p)]
        st["m"][...], st["v"][...], st["t"] = mm, vv, t
    compiled = NumbaReplay(tape)
    compiled((x[2], y[2]))
    temps = [s for s, sl in enumerate(tape.slots) if sl.kind == "temp"]
    assert temps
    for s in temps:
        np.testing.assert_array_equal(compiled._view(s), twin.A[s], err_msg=f"slot {s}")
    _assert_same(after, [p.data for p in m.parameters()])


def test_tensor_arguments_and_no_return():
    x, y = _data()
    (m1, o1, eager), (m2, o2, step2) = _pair("sgd_momentum")

    def step(xb, yb):
        step2.fn(xb, yb)

    comp = L.compile(step, backend="numpy")
    for i in range(4):
        eager(L.Tensor(x[i]), y[i])
        assert comp(L.Tensor(x[i]), y[i]) is None
    _assert_same(_state(m1, o1), _state(m2, o2))


def test_compiled_step_trains_to_convergence():
    pytest.importorskip("numba")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2048, 4), dtype=np.float32)
    y = ((x[:, 0] * x[:, 1] > 0) ^ (x[:, 2] > 0.5)).astype(np.float32)[:, None]
    L.set_seed(0)
    model = nn.Sequential([nn.Dense(32, "relu", in_features=4), nn.Dense(32, "relu"),
                           nn.Dense(1)])  # fmt: skip
    model.build((None, 4))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    step = L.compile(_step(model, opt, losses.binary_cross_entropy_with_logits))
    for _epoch in range(30):
        for k in range(0, 2048, 64):
            step(x[k : k + 64], y[k : k + 64])
    with L.no_grad():
        acc = ((model(x).data > 0) == (y > 0.5)).mean()
    assert acc > 0.95, acc
    assert opt.steps == 30 * 32


def test_frozen_parameters_are_read_at_every_call():
    """A Parameter with requires_grad=False is bound by reference, not copied: edits between
    calls (an EMA, a load) reach the replay."""
    x, y = _data()
    runs = []
    for _ in range(2):
        m = _model()
        frozen = m.layers[0]
        frozen.weight.requires_grad = frozen.bias.requires_grad = False
        o = optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        runs.append((m, o, _step(m, o, losses.mse)))
    (m1, o1, eager), (m2, o2, step2) = runs
    comp = L.compile(step2, backend="numpy")
    for i in range(6):
        for m in (m1, m2):
            m.layers[0].weight.data *= np.float32(0.9)  # changed outside the step
        assert eager(x[i % 5], y[i % 5]).item() == comp(x[i % 5], y[i % 5]).item()
    _assert_same(_state(m1, o1)[:-1], _state(m2, o2)[:-1])


def test_a_loop_that_is_not_the_ufuncs_is_refused(monkeypatch):
    """The loop found is trusted only if it gives the ufunc's own bits (here: tanh's loop
    offered for exp)."""
    pytest.importorskip("numba")
    from lepton_nn.compiled import kernels as K

    tanh_loop = K.ufunc_f32_loop(np.tanh)
    if tanh_loop is None:
        pytest.skip("NumPy's loops were not found in this NumPy")
    assert K._checked_loop(np.exp) is not None
    monkeypatch.setattr(K, "ufunc_f32_loop", lambda ufunc: tanh_loop)
    assert K._checked_loop(np.exp) is None
