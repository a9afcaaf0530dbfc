"""The training GEMM (kernels/gemm.pyx, csrc/gemm_train.h on the shared pool): against a float64
oracle for every transpose and edge, the same bits at any thread count, and through Linear:
the eager step against the reference backend, and ``lepton_nn.compile``'s replays bit for
bit against the eager step at 1 and 2 threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import lepton_nn as L
from lepton_nn import backend as B
from lepton_nn import losses, nn, optim
from lepton_nn.backend.threads import PARALLEL_MIN_FLOPS, set_num_threads

_gemm = pytest.importorskip("lepton_nn.kernels._gemm")

# (m, k, n): tiles of 6 x 16, K blocks of <= 256 (784 = 4 x 196), units of 128 columns
SHAPES = [
    (1, 1, 1),
    (5, 3, 7),
    (6, 16, 16),
    (7, 17, 17),
    (37, 301, 300),
    (128, 784, 130),
    (13, 1001, 257),
    (64, 256, 10),
]


def _operands(m, k, n, ta, tb, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
    return a, b


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize(("m", "k", "n"), SHAPES)
def test_gemm_matches_float64_oracle(m, k, n, ta, tb):
    a, b = _operands(m, k, n, ta, tb)
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    out = np.full((m, n), np.nan, np.float32)  # every element must be written
    assert _gemm.gemm(a, ta, b, tb, out, 1) is out
    # float32 accumulation: |error| <= k eps sum |a||b| (loose bound, far under 1 ulp of a
    # wrong index or a missed K block)
    bound = (
        k
        * 6e-8
        * (np.abs(a).T if ta else np.abs(a)).astype(np.float64)
        @ (np.abs(b).T if tb else np.abs(b))
    )
    assert np.all(np.abs(out - ref) <= bound + 1e-30)


# Packing edges and short last panels: A' panels of 6 rows read 8 values of k at a time
# (k % 8 tails, several packing tasks), B' columns from B's rows 8 at a time (n % 8 tails,
# units of 64 columns, K blocks of <= 256 continuing from C), last panels of h = m mod 6 rows
# (the 4-row kernel when h <= 4), narrow column edges
EXACT_SHAPES = [
    (6, 8, 8),
    (12, 9, 15),
    (131, 263, 71),
    (128, 784, 130),
    (50, 517, 200),
    (7, 5, 16),
    (9, 40, 37),
    (64, 300, 33),
    (10, 600, 64),
]  # last panels of 1-4 rows


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize(("m", "k", "n"), EXACT_SHAPES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gemm_exact_on_small_integers(m, k, n, ta, tb, threads):
    """Small integers: every partial sum is exact in float32, so any order of the sums gives
    the float64 product exactly; a value packed into a wrong place (or lost) cannot hide."""
    rng = np.random.default_rng(m * k + n)
    a = rng.integers(-4, 5, (k, m) if ta else (m, k)).astype(np.float32)
    b = rng.integers(-4, 5, (n, k) if tb else (k, n)).astype(np.float32)
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    out = _gemm.gemm(a, ta, b, tb, np.full((m, n), np.nan, np.float32), threads)
    np.testing.assert_array_equal(out, ref.astype(np.float32))


@pytest.mark.parametrize(("m", "k", "n"), [(37, 301, 300), (128, 784, 512), (200, 64, 1000)])
def test_gemm_same_bits_at_any_thread_count(m, k, n):
    for ta, tb in [(False, False), (True, False), (False, True)]:
        a, b = _operands(m, k, n, ta, tb, seed=1)
        one = _gemm.gemm(a, ta, b, tb, np.empty((m, n), np.float32), 1)
        for threads in (2, 3, 8):
            for _ in range(3):  # the pool's units go to whichever thread asks first
                many = _gemm.gemm(a, ta, b, tb, np.empty((m, n), np.float32), threads)
                np.testing.assert_array_equal(many, one)


def test_gemm_empty_sizes():
    out = _gemm.gemm(np.zeros((4, 0), np.float32), False, np.zeros((0, 5), np.float32), False,
                     np.full((4, 5), np.nan, np.float32), 2)  # fmt: skip
    np.testing.assert_array_equal(out, np.zeros((4, 5), np.float32))
    _gemm.gemm(np.zeros((0, 3), np.float32), False, np.zeros((3, 5), np.float32), False,
               np.zeros((0, 5), np.float32), 2)  # fmt: skip


def test_backend_gemm_choice_and_twin():
    ref = B.ReferenceBackend()
    with B.use_backend("cython") as cy:
        big = int(np.ceil(np.sqrt(PARALLEL_MIN_FLOPS / 2 / 64)))  # 64 x big x big >= the floor
        assert cy.gemm_own(np.float32, 64, big, big)
        assert not cy.gemm_own(np.float32, 8, 8, 8)  # small: np.matmul, as before
        # W2's 10-wide head (128 x 256 x 10 each way, 0.66 MFLOP) runs the kernel; W3's
        # (64 x 1568 x 10, 2 MFLOP) and thin W4 products stay on OpenBLAS
        assert cy.gemm_own(np.float32, 128, 10, 256) and cy.gemm_own(np.float32, 256, 10, 128)
        assert cy.gemm_own(np.float32, 128, 256, 10)
        assert not cy.gemm_own(np.float32, 64, 10, 1568)
        assert not cy.gemm_own(np.float32, 1600, 8, 256)
        assert not cy.gemm_own(np.float32, 128, 4, 1024)  # a side under 8: mostly padding
        assert not cy.gemm_own(np.float64, 64, big, big)
        assert not ref.gemm_own(np.float32, 64, big, big)
        a, b = _operands(64, big, big, True, False)
        got = cy.gemm(a, True, b, False)
        np.testing.assert_allclose(got, ref.gemm(a, True, b, False), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(got, _gemm.gemm(a, True, b, False, np.empty_like(got), 1))
        # a non-contiguous operand is copied, not misread
        wide = np.asfortranarray(b)
        np.testing.assert_array_equal(cy.gemm(a, True, wide, False), got)


def _model(seed=3, d=300):
    L.set_seed(seed)  # 64 x 300 x 256 x 2 = 9.8 MFLOP a product: the kernel's X W, X^T G_z
    layers = [nn.Dense(256, "relu", in_features=d), nn.Dense(256, "relu", in_features=256)]
    return nn.Sequential([*layers, nn.Dense(4, in_features=256)])  # and G_z W^T (middle)


def _data(seed=0, n=64, d=300):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, n, d), dtype=np.float32)
    return x, rng.integers(0, 4, (3, n)).astype(np.int64)


def _train(model):
    opt = optim.Adam(model.parameters(), lr=1e-2)

    def step(xb, yb):
        opt.zero_grad()
        loss = losses.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    return opt, step


def test_linear_on_the_kernel_matches_the_reference_backend():
    """One forward and backward: loss and every gradient as on the reference backend
    (np.matmul), to float32 rounding."""
    x, y = _data()
    runs = []
    for name in ("cython", "reference"):
        with B.use_backend(name):
            model = _model()
            loss = losses.cross_entropy(model(x[0]), y[0])
            loss.backward()
            runs.append((loss.item(), [p.grad.copy() for p in model.parameters()]))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-6)
    for u, v in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4 * np.abs(v).max())


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_compiled_step_bit_identical_with_the_kernel(backend):
    """Eager at 1 thread, eager at 2, the compiled replay at 2 and then 1: the same bits
    (the kernel's sums do not depend on the split; np.matmul's at 2 threads did)."""
    if backend == "numba":
        pytest.importorskip("numba")
    x, y = _data(seed=1)
    with B.use_backend("cython"):
        try:
            runs = _three_runs(backend, x, y)
        finally:
            set_num_threads(None)
    for losses_, ps in runs[1:]:
        assert losses_ == runs[0][0]
        for u, v in zip(ps, runs[0][1]):
            np.testing.assert_array_equal(u, v)


def test_compiled_adam_runs_the_eager_kernel_on_the_pool():
    """The Numba replay's Adam is the eager step's C kernel (its tasks on the shared pool),
    called from the replay: the source says so, and its updates are the eager ones bit for
    bit at 1, 2 and 3 threads (above)."""
    pytest.importorskip("numba")
    from lepton_nn.compiled import kernels as K

    if not K.C_ADAM:
        pytest.skip("the Cython dense kernels are not built")
    x, y = _data(seed=2)
    with B.use_backend("cython"):
        opt, step = _train(_model())
        step = L.compile(step, backend="numba")
        for i in range(3):
            step(x[i], y[i])
    (source,) = [e[2].source for e in step.entries.values()]
    assert source.count("c_adam(") == 6 and "    adam(" not in source


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_c_entry_matches_adam_step_and_the_jit_twin(decoupled):
    """``_dense.adam_address``'s entry (the 9 scalars folded by the caller) against
    ``adam_step`` (the eager call) and the replay's Numba loop ``kernels.adam``: the same bits,
    at 1, 2 and 3 threads, over 3 chunks of 16384 elements and a ragged end."""
    pytest.importorskip("numba")
    from lepton_nn.compiled import kernels as K
    from lepton_nn.compiled.codegen import _AdamScalars

    if not K.C_ADAM:
        pytest.skip("the Cython dense kernels are not built")
    from lepton_nn.kernels import _dense

    rng = np.random.default_rng(5)
    n, lr, wd, t = 3 * 16384 + 77, 3e-3, 0.05, 4
    p0, g = (rng.standard_normal(n, dtype=np.float32) for _ in range(2))
    m0 = rng.standard_normal(n, dtype=np.float32)
    v0 = np.abs(rng.standard_normal(n, dtype=np.float32))

    class _Opt:
        pass

    opt = _Opt()
    opt.lr = lr
    attrs = {"opt": opt, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": wd,
             "decoupled": decoupled}  # fmt: skip
    fold = _AdamScalars(attrs, 0)
    fold.states.append({"t": t - 1})
    S = np.zeros(9)
    fold(S)  # step t's scalars, as the replay folds them
    want = [p0.copy(), m0.copy(), v0.copy()]
    _dense.adam_step(want[0], g, want[1], want[2], lr, 0.9, 0.999, 1e-8, wd, t, decoupled, 1)
    twin = [p0.copy(), m0.copy(), v0.copy()]
    K.adam(twin[0], g, twin[1], twin[2], S)
    for u, v in zip(twin, want):
        np.testing.assert_array_equal(u, v)
    for threads in (1, 2, 3):
        got = [p0.copy(), m0.copy(), v0.copy()]
        K.c_adam(got[0], g, got[1], got[2], S, threads)
        for u, v in zip(got, want):
            np.testing.assert_array_equal(u, v)


def _three_runs(backend, x, y):
    runs = []
    for threads, compiled in ((1, False), (2, False), (2, True)):
        set_num_threads(threads)
        model = _model()
        opt, step = _train(model)
        if compiled:
            step = L.compile(step, backend=backend)
        losses_ = []
        for i in range(5):  # compiled: 1-2 capture, 3-5 replay (at 2, 3, then 1 thread)
            if compiled and i >= 3:
                set_num_threads(3 if i == 3 else 1)
            losses_.append(step(x[i % 3], y[i % 3]).item())
        runs.append((losses_, [p.data.copy() for p in model.parameters()]))
    return runs


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_recurrent_products_run_with_blas_on_one_thread(cell, monkeypatch):
    """W4's per-step products (1 MFLOP) and its thin ones (F = 8, 6.5 MFLOP) were split by
    OpenBLAS: at 2 threads on a busy machine its step ran 1.6 s against 35 ms at 1. Every
    np.matmul of the forward and backward that OpenBLAS would split must now run with its
    BLAS on one thread (the rest is the gemm kernel, split by units claimed on demand)."""
    from lepton_nn.backend import threads as T
    from lepton_nn.ops import recurrent as R

    if not T.blas_threads_controlled():
        pytest.skip("NumPy's BLAS thread count cannot be set here")
    blas, matmul, calls = T._the_blas(), np.matmul, []

    def spy(a, b, *args, **kw):
        calls.append((2 * a.shape[-2] * a.shape[-1] * b.shape[-1], blas.get()))
        return matmul(a, b, *args, **kw)

    rng = np.random.default_rng(0)
    g = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    u = 128 if cell == "rnn" else 64  # a step's product 1-2 MFLOP: OpenBLAS would split it
    x = L.Tensor(rng.standard_normal((32, 50, 8), dtype=np.float32), requires_grad=True)
    w_ih = L.Tensor(rng.standard_normal((8, u * g), dtype=np.float32), requires_grad=True)
    w_hh = L.Tensor(rng.standard_normal((u, u * g), dtype=np.float32), requires_grad=True)
    fn = {"lstm": R.lstm, "gru": R.gru, "rnn": R.simple_rnn}[cell]
    # the LSTM's compiled sequence kernels have no per-step product: check its twin's
    compiled = None
    if cell == "lstm" and B.get_backend().recurrent_rows_exact(np.float32):
        from lepton_nn.kernels import _recurrent as compiled
    saved = blas.get()
    blas.set(2)
    monkeypatch.setattr(np, "matmul", spy)
    try:
        if compiled is not None:
            compiled.use_simd(False)
        out = fn(x, w_ih, w_hh)
        (out[0] if isinstance(out, tuple) else out).sum().backward()
    finally:
        if compiled is not None:
            compiled.use_simd(True)
        monkeypatch.undo()
        blas.set(saved)
    split = [(f, n) for f, n in calls if f >= T.BLAS_SPLIT_MIN_FLOPS]
    assert len(split) >= 100  # the per-step products, forward and backward
    assert all(n == 1 for _, n in split), split


def test_gemm_large_operand_scratch_given_back_and_reused():
    """A' above 4M floats (the scratch kept between calls): its scratch is freed after the
    call; the next calls, large and small, still compute the right products."""
    for m, k, n in [(2100, 2048, 40), (37, 301, 300), (2100, 2048, 40)]:
        a, b = _operands(m, k, n, True, False, seed=m)
        got = _gemm.gemm(a, True, b, False, np.empty((m, n), np.float32), 2)
        np.testing.assert_allclose(got, a.T.astype(np.float64) @ b, rtol=1e-3, atol=1e-3)


def _in_thread(fn):
    """fn() on a new thread (its own scratch); its return value, once the scratch count is
    back where it was before the thread started: the thread's buffers are freed as it ends
    (the C library runs its key destructors as the OS thread ends, just after join())."""
    before = _gemm.scratch_bytes()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", fn()))
    t.start()
    t.join()
    deadline = time.monotonic() + 30
    while _gemm.scratch_bytes() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _gemm.scratch_bytes() == before, "a thread's scratch outlived it"
    return out["v"]


def _gemm_call(m, k, n, seed=0):
    a, b = _operands(m, k, n, False, False, seed)
    got = _gemm.gemm(a, False, b, False, np.empty((m, n), np.float32), 1)  # this thread only
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-3, atol=1e-3)


def _scratch_need(m, k):
    """Bytes of scratch one call needs (gemm_train.h): A' in 6-row panels, one unit's B'."""
    kblock = -(-k // -(-k // 256))
    return 4 * (-(-m // 6) * 6 * k + kblock * 64)


def test_gemm_scratch_shrinks_with_the_shapes():
    """A thread keeps its packing scratch between calls, but once its shapes shrink it holds
    at most twice what its last SCRATCH_WINDOW requests needed, not its largest ever (it
    kept the largest until the thread ended). Measured by the kernel's own count."""
    w, quantum = _gemm.SCRATCH_WINDOW, 4 * _gemm.SCRATCH_QUANTUM_FLOATS

    def run():
        base = _gemm.scratch_bytes()
        _gemm_call(600, 1200, 64)
        held = [_gemm.scratch_bytes() - base]
        for m, k in [(300, 600), (120, 300), (48, 128), (24, 64)]:
            for i in range(2 * w):  # two windows: the second holds only this shape's calls
                _gemm_call(m, k, 64, seed=i % 3)
            held.append((_gemm.scratch_bytes() - base, _scratch_need(m, k)))
        return held

    first, *later = _in_thread(run)
    assert first >= _scratch_need(600, 1200)
    for held, need in later:
        assert held <= 2 * need + 2 * quantum, (held, need)
    assert [h for h, _ in later] == sorted((h for h, _ in later), reverse=True)


def test_gemm_scratch_of_a_thread_is_freed_when_it_exits():
    """Short-lived threads (a data loader, a user's worker) leave no scratch behind: each
    one's buffers are freed at its exit (checked by _in_thread), so many do not add up."""
    for i in range(6):

        def run(i=i):
            before = _gemm.scratch_bytes()
            _gemm_call(300 + i, 800, 64)
            return _gemm.scratch_bytes() - before

        assert _in_thread(run) >= _scratch_need(300 + i, 800)


@pytest.mark.parametrize(("ta", "tb"), [(False, False), (True, False), (False, True)])
def test_fetch_ahead_off_gives_the_same_bits(ta, tb):
    """``set_fetch_ahead`` (the next unit's first K block of B', the next lines of A^T and
    the next tile's lines of C, prefetched) changes no result: W2's three products (several
    units, 4 K blocks forward, A^T packed for the weight gradient) at 1 and 2 threads, off
    against on."""
    m, k, n = (784, 128, 512) if ta else (128, 512, 784) if tb else (128, 784, 512)
    a, b = _operands(m, k, n, ta, tb, seed=7)
    outs = []
    try:
        for on in (True, False):
            _gemm.set_fetch_ahead(on)
            for threads in (1, 2):
                outs.append(_gemm.gemm(a, ta, b, tb, np.empty((m, n), np.float32), threads))
    finally:
        _gemm.set_fetch_ahead(True)
    for got in outs[1:]:
        np.testing.assert_array_equal(got, outs[0])
