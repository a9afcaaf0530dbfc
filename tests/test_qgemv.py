"""The int8 Dense chain (``qdense_chain_forward``, csrc/qgemv.h) against the per-layer path it
replaces (``quantize_rows`` + ``qlinear``, bit for bit, on every ISA path of this machine) and
against its NumPy twin; the runtime's batch-1 plan on a saved and loaded ``.lnn``."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as L
import lepton_nn.runtime as rt
from lepton_nn import nn
from lepton_nn.backend.reference import ReferenceBackend
from lepton_nn.runtime import steps

q = pytest.importorskip("lepton_nn.kernels._qgemm")
if not hasattr(q, "qdense_chain_forward"):
    pytest.skip("extension built before qdense_chain_forward", allow_module_level=True)

REF = ReferenceBackend()


@pytest.fixture(params=q.supported_isas())
def isa(request):
    before = q.isa()
    assert q.set_isa(request.param) == request.param
    yield request.param
    q.set_isa(before)


def _layer(rng, k, n, act, bias=True, static=False, w=None):
    if w is None:
        w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    wp, cs = q.pack_weights(w)
    ws = (rng.uniform(0.5, 2, n) / (64 * np.sqrt(max(k, 1)))).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    xs = np.array([rng.uniform(0.01, 0.05)], np.float32) if static else None
    xz = np.array([rng.integers(0, 256)], np.int32) if static else None
    return (wp, ws, cs, b, act, xs, xz)


def _per_layer(x, specs):
    """The path the chain replaces: quantize_rows then qlinear, one layer at a time."""
    h, outs = x, []
    for wp, ws, cs, b, act, xs, xz in specs:
        xq = np.empty(h.shape, np.uint8)
        if xs is None:
            xs, xz = np.empty(h.shape[0], np.float32), np.empty(h.shape[0], np.int32)
            q.quantize_rows(h, xq, xs, xz)
        else:
            q.quantize_rows(h, xq, xs, xz, True)
        out = np.full((h.shape[0], ws.shape[0]), np.nan, np.float32)
        q.qlinear(xq, xs, xz, wp, ws, cs, b, act, out)
        outs.append(out)
        h = out
    return outs


def _chain(x, specs):
    chain = q.qdense_chain_prepare(specs, x.shape[0], x.shape[1])
    outs = tuple(np.full((x.shape[0], s[1].shape[0]), np.nan, np.float32) for s in specs)
    assert q.qdense_chain_forward(x, chain, outs) is outs[-1]
    return outs, chain


@pytest.mark.parametrize("static", [False, True])
def test_chain_bit_identical_to_per_layer(isa, static):
    """Tails of K (not a multiple of 4 or 32) and N (not a multiple of 8, 16 or 64: the GEMV's
    last blocks take 1 to 6 vectors of 8 columns), every activation, with and without bias,
    0 to 3 rows: the same bits as quantize_rows + qlinear."""
    rng = np.random.default_rng(1)
    shapes = ((1, 1), (3, 5), (4, 8), (31, 17), (33, 64, 7), (97, 65, 130, 10), (784, 70))
    for m in (0, 1, 2, 3):
        for dims in (*shapes, (5, 40, 48, 24)):
            specs = [
                _layer(rng, k, n, act=(i + m) % 5, bias=(i + m) % 2 == 0, static=static)
                for i, (k, n) in enumerate(zip(dims[:-1], dims[1:]))
            ]
            x = (rng.standard_normal((m, dims[0])) * 3).astype(np.float32)
            got, chain = _chain(x, specs)
            for l, (g, w) in enumerate(zip(got, _per_layer(x, specs))):
                np.testing.assert_array_equal(g, w, err_msg=f"{isa} m={m} dims={dims} layer {l}")


@pytest.mark.parametrize("static", [False, True])
def test_rows_with_nan_or_inf_keep_their_own_bits(isa, static):
    """Rows quantized one by one (the GEMV's rows are padded to whole vectors): a row holding
    NaN (dynamic: scale NaN, its outputs NaN) or +-inf (saturated) between finite rows, K not
    a multiple of 32: the same bits as quantize_rows + qlinear, and the finite rows unharmed."""
    rng = np.random.default_rng(5)
    specs = [_layer(rng, 45, 17, 0, static=static), _layer(rng, 17, 3, 0, static=static)]
    x = rng.standard_normal((4, 45)).astype(np.float32)
    x[1, 7], x[2, 40], x[2, 3] = np.nan, np.inf, -np.inf
    got, _ = _chain(x, specs)
    want = _per_layer(x, specs)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w, err_msg=isa)
    assert np.isfinite(got[-1][[0, 3]]).all()


def test_extreme_values_are_exact(isa):
    """The GEMV's int16 pairs at their limits: q = 0 (a' = -128) against w = +127 gives
    -32768 per pair, q = 255 against -127 and q = 0 against -127 the largest positive sums;
    with static scale 1 and zero point 0 / 255 the outputs are the exact integers."""
    k = 515  # |sums| < 255 * 127 * 515 < 2^24: exact in float32
    one = np.ones(1, np.float32)
    for xval, zp in ((0.0, 0), (255.0, 0), (0.0, 255), (-255.0, 255), (255.0, 128)):
        for wval in (127, -127):
            w = np.full((19, k), wval, np.int8)
            w[3, ::3] = -wval  # a row of mixed signs
            wp, cs = q.pack_weights(w)
            spec = (wp, np.ones(19, np.float32), cs, None, 0, one, np.array([zp], np.int32))
            x = np.full((1, k), xval, np.float32)
            x[0, ::7] = 255.0 - zp  # the other end of the range in places
            (got,), chain = _chain(x, [spec])
            xq = np.clip(x + zp, 0, 255)
            want = (xq.astype(np.int64) - zp) @ w.astype(np.int64).T
            np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=f"{isa}")


def test_every_activation_weight_pair_is_exact(isa):
    """The GEMV's int16 pair sums |a'| (w ^ m) + |a'| (w' ^ m) for every int8 pair (a', w),
    -128 weights included, at their extremes (both terms of a pair equal): row r holds
    q = r (a' = r - 128) everywhere, column n the weight n - 128 everywhere; static scale 1
    and zero point 0 make each output the exact integer r (n - 128) K."""
    k = 6  # a pair, a pair, and a tail group of 2 (zero padded)
    w = np.repeat(np.arange(-128, 128, dtype=np.int16)[:, None], k, axis=1).astype(np.int8)
    wp, cs = q.pack_weights(w)
    spec = (wp, np.ones(256, np.float32), cs, None, 0, np.ones(1, np.float32),
            np.zeros(1, np.int32))  # fmt: skip
    x = np.repeat(np.arange(256, dtype=np.float32)[:, None], k, axis=1)
    (got,), _ = _chain(x, [spec])
    want = np.arange(256)[:, None] * np.arange(-128, 128)[None, :] * k
    np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=isa)
    # and through the dynamic per-row quantization, against the per-layer path
    dyn = (wp, np.full(256, 0.01, np.float32), cs, None, 1, None, None)
    (got,), _ = _chain(x - 100, [dyn])
    np.testing.assert_array_equal(got, _per_layer(x - 100, [dyn])[0], err_msg=isa)


def test_minus_128_weights_run_exactly(isa):
    """Weights of -128 against q = 0 (a' = -128) and q = 255: the same bits as qlinear."""
    rng = np.random.default_rng(2)
    w = rng.integers(-128, 128, (40, 300)).astype(np.int8)
    w[:, :8] = -128
    specs = [_layer(rng, 300, 40, 1, w=w), _layer(rng, 40, 9, 0)]
    x = rng.standard_normal((2, 300)).astype(np.float32)
    x[:, :8] = x.min() - 1  # quantized to 0: a' = -128 against w = -128
    x[:, 8:16] = x.max() + 1  # quantized to 255: a' = 127
    got, _ = _chain(x, specs)
    for g, w_ in zip(got, _per_layer(x, specs)):
        np.testing.assert_array_equal(g, w_)


@pytest.mark.parametrize("static", [False, True])
def test_chain_matches_numpy_twin(static):
    """Each layer against the reference twin on the same input (the compiled epilogue fuses
    a multiply-add, so to float rounding), and the twin's chain runs end to end."""
    rng = np.random.default_rng(3)
    dims = (50, 33, 20, 7)
    specs = [
        _layer(rng, k, n, act=a, static=static) for k, n, a in zip(dims[:-1], dims[1:], (1, 4, 2))
    ]
    x = rng.standard_normal((2, 50)).astype(np.float32)
    got, _ = _chain(x, specs)
    ins = (x, *got[:-1])
    for l, spec in enumerate(specs):
        twin = REF.qdense_chain_prepare([spec], 2, ins[l].shape[1])
        want = np.empty_like(got[l])
        REF.qdense_chain_forward(ins[l], twin, (want,))
        np.testing.assert_allclose(got[l], want, rtol=2e-6, atol=2e-6, err_msg=f"layer {l}")
    twin = REF.qdense_chain_prepare(specs, 2, 50)
    assert twin.widths == (33, 20, 7) and twin.m == 2 and twin.k == 50
    outs = tuple(np.empty((2, n), np.float32) for n in dims[1:])
    assert REF.qdense_chain_forward(x, twin, outs) is outs[-1]
    assert np.isfinite(outs[-1]).all()


def _pool_jobs():
    from lepton_nn.kernels import _pool

    return _pool.stats()["jobs"]


@pytest.mark.parametrize("static", [False, True])
def test_chain_split_over_threads_gives_the_same_bits(isa, static):
    """Each layer's columns split over 2, 3 and 5 threads of the shared pool (a barrier
    between layers, units claimed on demand): the same bits as quantize_rows + qlinear, on
    every ISA path; layers narrower than one unit per thread and a -128 weight (the tile
    kernel's share per thread) included. Repeated: a missing barrier shows as a race."""
    rng = np.random.default_rng(6)
    w = rng.integers(-128, 128, (150, 97)).astype(np.int8)
    w[:, 0] = -128
    for m in (1, 3):
        for dims, wl in (((784, 512, 256, 10), None), ((97, 150, 300, 65, 7), w)):
            specs = [
                _layer(rng, k, n, act=i % 5, bias=i % 2 == 0, static=static)
                for i, (k, n) in enumerate(zip(dims[:-1], dims[1:]))
            ]
            if wl is not None:
                specs[0] = _layer(rng, 97, 150, 1, static=static, w=wl)
            x = (rng.standard_normal((m, dims[0])) * 3).astype(np.float32)
            want = _per_layer(x, specs)
            for threads in (2, 3, 5):
                chain = q.qdense_chain_prepare(specs, m, dims[0], threads)
                assert chain.threads == threads
                outs = tuple(np.full((m, n), np.nan, np.float32) for n in dims[1:])
                for _ in range(20):
                    jobs = _pool_jobs()
                    q.qdense_chain_forward(x, chain, outs)
                    assert _pool_jobs() == jobs + 1  # it ran on the pool, not the caller alone
                    for l, (g, w_) in enumerate(zip(outs, want)):
                        np.testing.assert_array_equal(
                            g, w_, err_msg=f"{isa} m={m} dims={dims} threads={threads} layer {l}"
                        )
                    for o in outs:
                        o.fill(np.nan)


def test_split_chain_reused_across_isas_and_many_calls():
    """One prepared 2- and 3-thread chain called many times, its ISA path switched between
    calls: its counters are never reset (each call's words carry the call's number: a count
    read from an earlier call would skip units, their NaN outputs would show here) and its
    units per layer are recomputed when the ISA changes; every call gives that ISA's
    per-layer bits."""
    rng = np.random.default_rng(11)
    dims = (300, 256, 130, 10)
    specs = [_layer(rng, k, n, 1) for k, n in zip(dims[:-1], dims[1:])]
    xs = [(rng.standard_normal((1, 300)) * 2).astype(np.float32) for _ in range(3)]
    before = q.isa()
    try:
        for threads in (2, 3):
            chain = q.qdense_chain_prepare(specs, 1, 300, threads)
            outs = tuple(np.empty((1, n), np.float32) for n in dims[1:])
            for _ in range(3):
                for isa_ in q.supported_isas():
                    q.set_isa(isa_)
                    want = [_per_layer(x, specs) for x in xs]
                    for i in range(60):
                        for o in outs:
                            o.fill(np.nan)
                        q.qdense_chain_forward(xs[i % 3], chain, outs)
                        for g, w_ in zip(outs, want[i % 3]):
                            np.testing.assert_array_equal(g, w_, err_msg=f"{isa_} {threads}")
    finally:
        q.set_isa(before)


def test_split_chains_from_several_threads_at_once():
    """Four Python threads, each with its own 2-thread chain: the pool runs one job at a
    time and the others' run on their callers alone (every task, one after another, with
    the barrier's waits), all with the one-thread bits."""
    import threading

    rng = np.random.default_rng(7)
    dims = (300, 256, 128, 10)
    specs = [_layer(rng, k, n, 1) for k, n in zip(dims[:-1], dims[1:])]
    xs = [rng.standard_normal((1, 300)).astype(np.float32) for _ in range(4)]
    want = [_per_layer(x, specs)[-1] for x in xs]
    errors = []

    def work(i):
        chain = q.qdense_chain_prepare(specs, 1, 300, 2)
        outs = tuple(np.empty((1, n), np.float32) for n in dims[1:])
        for _ in range(300):
            if not np.array_equal(q.qdense_chain_forward(xs[i], chain, outs), want[i]):
                errors.append(i)
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _tasks_case(threads, dims=(784, 512, 256, 10), m=1, seed=12):
    rng = np.random.default_rng(seed)
    specs = [_layer(rng, k, n, 1) for k, n in zip(dims[:-1], dims[1:])]
    x = (rng.standard_normal((m, dims[0])) * 2).astype(np.float32)
    chain = q.qdense_chain_prepare(specs, m, dims[0], threads)
    outs = tuple(np.full((m, n), np.nan, np.float32) for n in dims[1:])
    return x, chain, outs, _per_layer(x, specs)


@pytest.mark.skipif(not hasattr(q, "_qdense_chain_tasks"), reason="extension before the hook")
@pytest.mark.parametrize("threads", [2, 3])
def test_a_part_not_started_is_taken_at_once(isa, threads):
    """The tasks of a 2- and 3-thread chain run one after another on one thread (as on a busy
    pool), in every order: the first task runs its own share of each layer, finds the other
    parts not started and takes all their units at once (no wait for them to move); the
    tasks after it find nothing left. The same bits as quantize_rows + qlinear."""
    import itertools

    x, chain, outs, want = _tasks_case(threads)
    units = None
    for order in itertools.permutations(range(threads)):
        for o in outs:
            o.fill(np.nan)
        stats = q._qdense_chain_tasks(x, chain, outs, order)
        for g, w_ in zip(outs, want):
            np.testing.assert_array_equal(g, w_, err_msg=f"{isa} order {order}")
        first = order[0]
        assert all(s == (0, 0, 0) for t, s in enumerate(stats) if t != first), stats
        own, taken, after_wait = stats[first]
        assert taken > 0 and after_wait == 0, stats
        units = own + taken if units is None else units
        assert own + taken == units  # every unit of every layer, whichever part is first
    for _ in range(5):  # the counters of those calls do not confuse the next ones
        for o in outs:
            o.fill(np.nan)
        q.qdense_chain_forward(x, chain, outs)
        for g, w_ in zip(outs, want):
            np.testing.assert_array_equal(g, w_)


@pytest.mark.skipif(not hasattr(q, "_qdense_chain_tasks"), reason="extension before the hook")
def test_a_stalled_part_is_taken_after_the_patience(isa):
    """Part 1 marked as started on every layer before part 0 runs (its thread preempted
    after it began), and run only after part 0 returned: part 0 takes part 1's units of
    every layer but the last once its count has stood still (QV_PATIENCE_NS), none of them
    as 'not started'; after the last layer a thread does not wait for a started part (the
    pool's join does), so part 1 runs its own share of that one. The same bits, on every
    ISA (the units are qv_setup's: 4 blocks of 16 columns on the AVX2 GEMV, else half of a
    layer's blocks rounded up to even)."""
    dims = (784, 512, 256, 10)
    x, chain, outs, want = _tasks_case(2, dims)
    stats = q._qdense_chain_tasks(x, chain, outs, (0, 1), stalled=(1,))
    for g, w_ in zip(outs, want):
        np.testing.assert_array_equal(g, w_, err_msg=isa)
    units = []
    for n in dims[1:]:
        nb = -(-n // 16)
        per = 4 if isa == "avx2" else max(1, (-(-nb // 2) + 1) & ~1)
        units.append(-(-nb // per))
    mine = [u // 2 for u in units]  # part 0's share of each layer: units [0, u // 2)
    # avx2, 784-512-256-10: units 8 + 4 + 1; part 0 owns 4 + 2 + 0 and takes 4 + 2
    want0 = (sum(mine), 0, sum(u - m for u, m in zip(units[:-1], mine[:-1])))
    assert stats[0] == want0, (isa, stats)
    assert stats[1] == (units[-1] - mine[-1], 0, 0), (isa, stats)


@pytest.mark.skipif(not hasattr(q, "_qdense_chain_tasks"), reason="extension before the hook")
def test_tasks_hook_rejects_bad_orders_and_one_thread_chains():
    x, chain, outs, _ = _tasks_case(2, dims=(64, 32, 8))
    with pytest.raises(ValueError, match="order"):
        q._qdense_chain_tasks(x, chain, outs, (0, 2))
    with pytest.raises(ValueError, match="order"):
        q._qdense_chain_tasks(x, chain, outs, ())
    x1, chain1, outs1, _ = _tasks_case(1, dims=(64, 32, 8))
    assert q._qdense_chain_tasks(x1, chain1, outs1, (0,)) is None


def test_bad_arguments_raise_clear_errors():
    rng = np.random.default_rng(4)
    spec = _layer(rng, 10, 6, 0)
    with pytest.raises(ValueError, match="no layers"):
        q.qdense_chain_prepare([], 1, 10)
    with pytest.raises(ValueError, match="w_packed"):
        q.qdense_chain_prepare([spec], 1, 14)  # ceil(14 / 4) groups, not ceil(10 / 4)
    with pytest.raises(ValueError, match="a spec is"):
        q.qdense_chain_prepare([spec[:5]], 1, 10)
    bad_static = (*spec[:5], np.array([0.0], np.float32), np.array([3], np.int32))
    with pytest.raises(ValueError, match="static quantization"):
        q.qdense_chain_prepare([bad_static], 1, 10)
    with pytest.raises(ValueError, match="w_packed"):  # layer 2 does not read 6 features
        q.qdense_chain_prepare([spec, _layer(rng, 13, 3, 0)], 1, 10)
    chain = q.qdense_chain_prepare([spec], 2, 10)
    out = np.empty((2, 6), np.float32)
    with pytest.raises(ValueError, match="x must be"):
        q.qdense_chain_forward(np.zeros((2, 10)), chain, (out,))
    with pytest.raises(ValueError, match="x must be"):
        q.qdense_chain_forward(np.zeros((1, 10), np.float32), chain, (out,))
    with pytest.raises(ValueError, match=r"outs\[0\]"):
        q.qdense_chain_forward(np.zeros((2, 10), np.float32), chain, (out[:, :5],))
    with pytest.raises(TypeError, match="numpy array"):
        q.qdense_chain_forward(np.zeros((2, 10), np.float32), chain, (None,))
    with pytest.raises(ValueError, match="1 layers"):
        q.qdense_chain_forward(np.zeros((2, 10), np.float32), chain, (out, out))
    with pytest.raises(ValueError, match="threads=0"):
        q.qdense_chain_prepare([spec], 1, 10, 0)


# --------------------------------------------------------------------------- the runtime


def _mlp(sizes=(64, 48, 24, 5), seed=0):
    L.set_seed(seed)
    acts = ["relu"] * (len(sizes) - 2) + [None]
    model = nn.Sequential([nn.Dense(n, a) for n, a in zip(sizes[1:], acts)])
    model.build((None, sizes[0]))
    return model.eval()


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_runtime_batch1_is_one_call_with_the_per_layer_bits(tmp_path, monkeypatch, mode):
    """A quantized MLP saved and loaded: at batch 1 (and up to QCHAIN_MAX_ROWS rows) its
    int8 Dense layers are one compiled call, with the bits of the per-layer path (forced by
    QCHAIN_MAX_ROWS = 0) and of each row run alone."""
    from lepton_nn.compress import quantize

    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, 64)).astype(np.float32)
    path = tmp_path / "q.lnn"
    L.save(quantize(_mlp(), x, mode), path)
    m = rt.load(path)
    rows = [m.predict(x[i : i + 1]) for i in range(len(x))]
    plan = m.plan_for(1)
    fns = [getattr(fn, "__name__", "") for fn, *_ in plan.head + plan.tail]
    assert fns == ["qdense_chain_forward"], fns
    three = m.predict(x[:3])
    monkeypatch.setattr(steps, "QCHAIN_MAX_ROWS", 0)
    per_layer = rt.load(path)
    assert "qdense_chain_forward" not in str(per_layer.plan_for(1).head)
    for i in range(len(x)):
        np.testing.assert_array_equal(rows[i], per_layer.predict(x[i : i + 1]))
    np.testing.assert_array_equal(three, per_layer.predict(x[:3]))
    if mode == "dynamic":  # one row's pair per row: the same bits at any batch size
        np.testing.assert_array_equal(np.concatenate(rows), per_layer.predict(x))


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_runtime_chain_on_1_2_3_threads_same_bits(tmp_path, mode):
    """The batch-1 plan of a quantized MLP loaded with threads=1, 2, 3: one compiled call,
    split over the threads when a layer has >= QCHAIN_SPLIT_MIN multiply-adds, with the
    same bits at every count and as the per-layer path; close to the NumPy twin (the
    reference backend's runtime, to float rounding of the fused epilogue)."""
    from lepton_nn.backend import use_backend
    from lepton_nn.compress import quantize

    rng = np.random.default_rng(8)
    sizes = (300, 512, 64, 10)  # 153,600 and 32,768 and 640 multiply-adds
    x = rng.standard_normal((6, sizes[0])).astype(np.float32)
    path = tmp_path / "q.lnn"
    L.save(quantize(_mlp(sizes, seed=2), x, mode), path)
    got = {}
    for t in (1, 2, 3):
        m = rt.load(path, threads=t)
        (fn, args, _), *rest = m.plan_for(1).head
        assert fn.__name__ == "qdense_chain_forward" and rest == []
        assert args[0].threads == t  # the joined chain: its largest layer decides
        got[t] = [m.predict(x[i : i + 1]) for i in range(len(x))]
    for t in (2, 3):
        np.testing.assert_array_equal(np.concatenate(got[t]), np.concatenate(got[1]))
    with use_backend("reference"):
        twin = rt.load(path)
        want = np.concatenate([twin.predict(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(np.concatenate(got[2]), want, rtol=1e-4, atol=1e-4)


def test_small_chain_stays_on_one_thread(tmp_path):
    from lepton_nn.compress import quantize

    x = np.random.default_rng(9).standard_normal((4, 64)).astype(np.float32)
    path = tmp_path / "q.lnn"
    L.save(quantize(_mlp(), x, "dynamic"), path)  # 64-48-24-5: far below QCHAIN_SPLIT_MIN
    (fn, args, _), *rest = rt.load(path, threads=2).plan_for(1).head
    assert rest == [] and args[0].threads == 1


def test_one_call_plan_keeps_predicts_contract(tmp_path):
    """predict() on the one-call batch-1 plan at 2 threads: each result is a fresh array,
    bad input gives its clear error, other dtypes and layouts are converted."""
    from lepton_nn.compress import quantize
    from lepton_nn.errors import DataError, ShapeError

    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    path = tmp_path / "q.lnn"
    L.save(quantize(_mlp(), x, "dynamic"), path)
    m = rt.load(path, threads=2)
    assert [f.__name__ for f, *_ in m.plan_for(1).head] == ["qdense_chain_forward"]
    a = m.predict(x[:1])
    b = m.predict(x[1:])
    assert a is not b and not np.shares_memory(a, b)
    assert not np.shares_memory(a, m.plan_for(1).out)
    a_bits = a.copy()
    m.predict(x[1:])
    np.testing.assert_array_equal(a, a_bits)  # not overwritten by the next call
    np.testing.assert_array_equal(m.predict(x[:1].astype(np.float64)), a_bits)
    np.testing.assert_array_equal(m.predict(np.asfortranarray(x[:1])), a_bits)
    np.testing.assert_array_equal(m.predict(x[:1].tolist()), a_bits)
    bad = x[:1].copy()
    bad[0, 3] = np.nan
    with pytest.raises(DataError, match="inf or NaN"):
        m.predict(bad)
    with pytest.raises(ShapeError, match="expected input of shape"):
        m.predict(x[:1, :10])
    np.testing.assert_array_equal(m.predict(x)[1:], m.predict(x[1:]))  # another plan, then back
    np.testing.assert_array_equal(m.predict(x[:1]), a_bits)
