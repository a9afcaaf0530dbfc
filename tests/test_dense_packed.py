"""``dense_pack`` / ``dense_packed_forward``: Dense layers on weights kept only as column
panels, any batch, bias and activation fused, split over the kernel's native threads. Every
backend against the NumPy twin (odd widths, ragged last panels, row tails of the 6-row
tiles, K blocks of 1024), the twin against plain NumPy, and the promises the runtime relies
on: the same bits whatever the thread count, and a row's result independent of the batch."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lepton_nn.backend as backend
from lepton_nn.backend.reference import ACTIVATIONS, ReferenceBackend

REF = ReferenceBackend()
BACKENDS = backend.available()


@pytest.fixture(params=BACKENDS)
def be(request):
    with backend.use_backend(request.param) as b:
        yield b


def _layers(sizes, act, bias, seed=0):
    rng = np.random.default_rng(seed)
    ws = [
        (rng.standard_normal((k, n)) / np.sqrt(max(k, 1))).astype(np.float32)
        for k, n in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    bs = tuple(rng.standard_normal(n).astype(np.float32) if bias else None for n in sizes[1:])
    return ws, bs, (act,) * len(ws)


def _run(kb, x, panels, bs, acts, threads=1):
    outs = tuple(np.full((x.shape[0], b), np.nan, np.float32) for b in _widths(panels, bs, x))
    y = kb.dense_packed_forward(x, panels, bs, acts, outs, threads)
    assert y is outs[-1]
    return outs


def _widths(panels, bs, x):
    return [_WIDTH[id(p)] for p in panels]


_WIDTH: dict[int, int] = {}


def _pack(kb, ws):
    panels = tuple(kb.dense_pack(w) for w in ws)
    for p, w in zip(panels, ws, strict=True):
        _WIDTH[id(p)] = w.shape[1]
    return panels


def _compiled():
    if "cython" not in BACKENDS:
        pytest.skip("compiled kernels not built")
    with backend.use_backend("cython") as k:
        if type(k).dense_packed_forward is ReferenceBackend.dense_packed_forward:
            pytest.skip("compiled dense_packed_forward not built")
        return k


def test_pack_layout():
    w = np.arange(3 * 37, dtype=np.float32).reshape(3, 37)
    p = REF.dense_pack(w)
    assert p.shape == (3, 3, 16) and p.dtype == np.float32 and p.flags.c_contiguous
    assert p.ctypes.data % 64 == 0  # a panel row is one cache line
    for j in range(48):
        want = w[:, j] if j < 37 else 0
        np.testing.assert_array_equal(p[j // 16, :, j % 16], want)


# widths around the kernel's blocks: panels of 16, tiles of up to 6 panels or 6 rows, K
# blocks of 1024 from 4 rows on (2100 = 3 x 700); 0-sized edges
SIZES = [(784, 512, 256, 10), (5, 3), (1, 1), (17, 96, 97, 7), (2100, 33, 16, 1), (0, 5), (9, 0, 4)]
ROWS = [1, 2, 3, 4, 5, 6, 7, 13, 64]


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("act", range(len(ACTIVATIONS)), ids=ACTIVATIONS)
def test_packed_matches_twin_on_every_backend(be, sizes, m, act):
    ws, bs, acts = _layers(sizes, act, bias=act != 1)
    x = np.random.default_rng(1).standard_normal((m, sizes[0])).astype(np.float32)
    want = _run(REF, x, _pack(REF, ws), bs, acts)
    for threads in (1, 2):
        got = _run(be, x, _pack(be, ws), bs, acts, threads)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=3e-5, atol=3e-5)


def test_twin_is_layer_by_layer_numpy():
    ws, bs, acts = _layers((30, 20, 5), 0, bias=True, seed=4)
    acts = (1, 0)
    x = np.random.default_rng(5).standard_normal((2, 30)).astype(np.float32)
    h = np.maximum(x.astype(np.float64) @ ws[0] + bs[0], 0)
    want = h @ ws[1] + bs[1]
    got = _run(REF, x, _pack(REF, ws), bs, acts)[-1]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sizes", [(784, 512, 256, 10), (40, 200, 33), (7, 16, 1), (2100, 20)])
def test_same_bits_at_any_thread_count_and_batch(be, sizes):
    # each output is the same fma chain over k whatever the split or the tile: 1, 2, 3 and 5
    # threads agree bit for bit, and each row equals that row run alone
    ws, bs, acts = _layers(sizes, 1, bias=True, seed=7)
    panels = _pack(be, ws)
    x = np.random.default_rng(8).standard_normal((11, sizes[0])).astype(np.float32)
    base = _run(be, x, panels, bs, acts, 1)[-1]
    for threads in (2, 3, 5):
        np.testing.assert_array_equal(_run(be, x, panels, bs, acts, threads)[-1], base)
    if be.name == "cython":
        for i in (0, 4, 10):
            row = _run(be, np.ascontiguousarray(x[i : i + 1]), panels, bs, acts, 2)[-1]
            np.testing.assert_array_equal(row[0], base[i])


@pytest.mark.parametrize("m", [1, 2, 3, 16, 31, 32, 33, 48, 64, 80])
def test_both_splits_give_the_bits_of_one_thread(m):
    # under 16 rows a thread: a phase per layer, split by columns; from 16: each thread its
    # rows through every layer. 1, 2, 3 and 5 threads: the 1-thread bits, near the NumPy twin
    k = _compiled()
    ws, bs, acts = _layers((784, 512, 256, 10), 1, bias=True, seed=11)
    acts = (1, 1, 0)
    panels = _pack(k, ws)
    x = np.random.default_rng(m).standard_normal((m, 784)).astype(np.float32)
    base = _run(k, x, panels, bs, acts, 1)
    want = _run(REF, x, _pack(REF, ws), bs, acts)
    for g, w in zip(base, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=3e-5, atol=3e-5)
    for threads in (2, 3, 5):
        for g, b in zip(_run(k, x, panels, bs, acts, threads), base, strict=True):
            np.testing.assert_array_equal(g, b)


@pytest.mark.parametrize("m", [1, 7, 31, 32, 64])
def test_the_chain_is_one_job_of_the_pool(m):
    # the three layers of the MLP: one job of one phase (by columns, the layers wait for
    # each other's columns inside it; by rows, no wait at all), not a job per layer
    from lepton_nn.kernels import _pool

    k = _compiled()
    ws, bs, acts = _layers((784, 512, 256, 10), 1, bias=True, seed=12)
    panels = _pack(k, ws)
    x = np.random.default_rng(13).standard_normal((m, 784)).astype(np.float32)
    _run(k, x, panels, bs, acts, 2)  # the workers started
    s0 = _pool.stats()
    for _ in range(5):
        _run(k, x, panels, bs, acts, 2)
    s1 = _pool.stats()
    assert s1["jobs"] - s0["jobs"] == 5 and s1["alone"] == s0["alone"]
    assert s1["phases"] == s0["phases"]  # counts only jobs of several phases


@pytest.mark.parametrize(
    "sizes",
    [(784, 512, 256, 10), (100, 200, 33, 7), (3, 90, 17, 40, 1), (20,) * 19, (64, 5, 300)],
)
@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_column_split_data_flow_gives_the_bits_of_one_thread_every_time(sizes, m):
    # by columns a unit of layer l runs k range by k range as layer l - 1's ranges complete
    # (partial sums stored in its output between them), no barrier; 2, 3 and 5 threads, many
    # calls (a unit reading a range before it is done would show as a wrong call now and
    # then), odd widths (ranges of 0 or 1 panel, ragged last panels), 18 layers (two jobs)
    k = _compiled()
    ws, bs, acts = _layers(sizes, 1, bias=True, seed=len(sizes) + m)
    panels = _pack(k, ws)
    x = np.random.default_rng(m).standard_normal((m, sizes[0])).astype(np.float32)
    base = [o.copy() for o in _run(k, x, panels, bs, acts, 1)]
    want = _run(REF, x, _pack(REF, ws), bs, acts)
    np.testing.assert_allclose(base[-1], want[-1], rtol=3e-5, atol=3e-5)
    for threads in (2, 3, 5):
        for _ in range(60):
            for g, b in zip(_run(k, x, panels, bs, acts, threads), base, strict=True):
                np.testing.assert_array_equal(g, b)


@pytest.mark.parametrize(
    "sizes", [(784, 512, 256, 10), (100, 200, 33, 7), (20,) * 19, (64, 5, 300)]
)
@pytest.mark.parametrize("m", [32, 64, 96, 128, 200, 256])
def test_row_groups_give_the_bits_of_one_thread_every_time(sizes, m):
    # by rows: groups of ~32 rows, a unit a panel of a group's layer, claimed by whichever
    # thread gets there (a thread done with its groups takes panels of another's, each
    # waiting for that group's previous layer only): 2, 3 and 5 threads give 2 to 8 groups
    # of 32-40 rows (or 16-31 at m < 32 x threads), many calls (a panel run before its
    # group's previous layer were done would show as a wrong call now and then), odd widths
    # (ragged last panels, a 5-wide layer), 18 layers (two jobs)
    k = _compiled()
    ws, bs, acts = _layers(sizes, 1, bias=True, seed=len(sizes) + m)
    panels = _pack(k, ws)
    x = np.random.default_rng(m).standard_normal((m, sizes[0])).astype(np.float32)
    base = [o.copy() for o in _run(k, x, panels, bs, acts, 1)]
    want = _run(REF, x, _pack(REF, ws), bs, acts)
    np.testing.assert_allclose(base[-1], want[-1], rtol=3e-5, atol=3e-5)
    for threads in (2, 3, 5):
        for _ in range(20):
            for g, b in zip(_run(k, x, panels, bs, acts, threads), base, strict=True):
                np.testing.assert_array_equal(g, b)


def test_threaded_ranges_end_in_narrow_units():
    # up to 3 rows a thread's range of panels ends in narrow units (2 panels at 1 row, 1 at
    # 2-3 rows), so a thread done with its own range can take a late thread's last units;
    # the rest are tiles of up to 6 / m panels. Every unit is claimed in order and the units
    # cover the range once. One thread (tails=False): near-equal units of up to 6 / m panels
    _compiled()
    from lepton_nn.kernels import _dense

    for m in (1, 2, 3, 4, 9):
        cap, small = (6 // m, -(-2 // m)) if m <= 3 else (1, 1)
        for length in range(0, 40):
            for tails in (False, True):
                units = _dense._packed_units(m, length, tails)
                ends = [0] + [b for _, b in units]
                assert [a for a, _ in units] == ends[:-1] and ends[-1] == length
                assert all(1 <= b - a <= cap for a, b in units)
                if m > 3 or not tails:
                    assert len(units) == -(-length // cap)
                elif length >= 3 * small:  # two narrow units at the end, a tile before them
                    assert [b - a for a, b in units[-2:]] == [small, small]
                    assert len(units) == -(-(length - 2 * small) // cap) + 2
    # the MLP at batch 1 on 2 threads: layer 1's 16 panels a thread, layer 2's 8
    assert [b - a for a, b in _dense._packed_units(1, 16, True)] == [6, 6, 2, 2]
    assert [b - a for a, b in _dense._packed_units(1, 8, True)] == [4, 2, 2]


@pytest.mark.parametrize("m", [1, 3, 7, 64])
def test_outputs_sharing_memory_are_split_by_columns(m):
    # the runtime's arena hands a dead activation's block to a later layer (the MLP's third
    # output on the first's): layer after layer that is right, but split by rows one thread
    # would write layer 3 over rows of layer 1 the other still reads, and split by columns a
    # unit of layer 3 may not store partial sums while layer 2 still reads layer 1. Such a
    # chain must give the bits of one thread at any thread count, every time
    k = _compiled()
    ws, bs, acts = _layers((784, 512, 256, 10), 1, bias=True, seed=14)
    acts = (1, 1, 0)
    panels = _pack(k, ws)
    x = np.random.default_rng(15).standard_normal((m, 784)).astype(np.float32)
    want = _run(k, x, panels, bs, acts, 1)[-1].copy()
    first = np.empty((m, 512), np.float32)
    for third in (first.reshape(-1)[: m * 10], first.reshape(-1)[-m * 10 :]):  # head, tail
        outs = (first, np.empty((m, 256), np.float32), third.reshape(m, 10))
        for threads in (2, 3) * 25:
            got = k.dense_packed_forward(x, panels, bs, acts, outs, threads)
            np.testing.assert_array_equal(got, want)


def test_a_threaded_plan_gives_its_chain_disjoint_buffers(tmp_path):
    # the runtime's plan: at 2 threads the joined chain's intermediates do not share memory
    # with later outputs (so the kernel may split by rows, or by columns without waiting for
    # whole layers); at 1 thread the arena's reuse stays
    import lepton_nn as ln
    import lepton_nn.runtime as rt
    from lepton_nn import nn

    if "cython" not in BACKENDS:
        pytest.skip("compiled kernels not built")
    ln.set_seed(4)
    model = nn.Sequential([nn.Dense(512, "relu", in_features=784), nn.Dense(256, "relu"),
                           nn.Dense(10)])  # fmt: skip
    model.build((None, 784))
    ln.save(model, tmp_path / "m.lnn")

    def outs(threads, m=64):
        plan = rt.load(tmp_path / "m.lnn", threads=threads).plan_for(m)
        (op,) = [op for op in plan.head if op[0].__name__ == "dense_packed_forward"]
        return op[1][3]

    def shared(a, b):
        return np.shares_memory(a, b)

    for m in (64, 1):  # by rows; by columns (each layer's columns as their inputs complete)
        one, two = outs(1, m), outs(2, m)
        assert shared(one[0], one[2])  # the arena's reuse, as before
        assert not any(shared(a, b) for i, a in enumerate(two) for b in two[i + 1 :])
    x = np.random.default_rng(16).standard_normal((64, 784)).astype(np.float32)
    r1, r2 = rt.load(tmp_path / "m.lnn", threads=1), rt.load(tmp_path / "m.lnn", threads=2)
    for _ in range(20):
        for rows in (x, x[:1], x[:3]):
            np.testing.assert_array_equal(r2.predict(rows), r1.predict(rows))


def test_rows_of_any_block_height_give_the_same_bits():
    # from 4 rows on the rows are cut into near-equal blocks of 3 to 6 (64 = 9 x 6 + 2 x 5,
    # 7 = 3 + 4, 13 = 4 + 4 + 5): every row of every batch equals that row run alone
    k = _compiled()
    ws, bs, acts = _layers((784, 512, 256, 10), 1, bias=True, seed=9)
    acts = (1, 1, 0)
    panels = _pack(k, ws)
    x = np.random.default_rng(10).standard_normal((64, 784)).astype(np.float32)
    alone = np.concatenate([_run(k, x[i : i + 1].copy(), panels, bs, acts)[-1] for i in range(64)])
    for m in (4, 5, 7, 13, 64):
        for threads in (1, 2):
            np.testing.assert_array_equal(_run(k, x[:m].copy(), panels, bs, acts, threads)[-1],
                                          alone[:m])  # fmt: skip


def test_read_probe_reads_float32_only():
    from lepton_nn.kernels import _dense

    if not hasattr(_dense, "read_probe"):
        pytest.skip("read_probe not built")
    v = np.full(4096, 0.5, np.float32)
    assert _dense.read_probe(v, 6, 512, 0, 3) > 0
    with pytest.raises(TypeError):
        _dense.read_probe(v.astype(np.float64))


def test_relu_passes_nan_like_numpy(be):
    w = np.ones((2, 3), np.float32)
    x = np.array([[np.nan, 1.0], [-1.0, -2.0]], np.float32)
    got = _run(be, x, _pack(be, [w]), (None,), (1,))[-1]
    np.testing.assert_array_equal(np.isnan(got), [[True] * 3, [False] * 3])
    np.testing.assert_array_equal(got[1], 0)


def test_bad_shapes_are_refused():
    k = _compiled()
    p = k.dense_pack(np.ones((4, 5), np.float32))
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="layer 0"):
        k.dense_packed_forward(x, (p,), (None,), (0,), (np.empty((2, 17), np.float32),))
    with pytest.raises(ValueError, match="layer 0"):
        k.dense_packed_forward(x[:, :3].copy(), (p,), (None,), (0,), (np.empty((2, 5)),))
    with pytest.raises(ValueError, match="bias"):
        out = np.empty((2, 5), np.float32)
        k.dense_packed_forward(x, (p,), (np.ones(4, np.float32),), (0,), (out,))
    with pytest.raises(TypeError):
        k.dense_packed_forward(x.astype(np.float64), (p,), (None,), (0,), (out,))


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="fork")
def test_pool_works_in_a_forked_child():
    # the pool's workers do not survive fork: a child must start its own, not wait forever
    k = _compiled()
    ws, bs, acts = _layers((64, 512, 8), 1, bias=True)
    panels = _pack(k, ws)
    x = np.ones((1, 64), np.float32)
    want = _run(k, x, panels, bs, acts, 2)[-1]  # the parent's pool is started
    pid = os.fork()
    if pid == 0:  # child: exit 0 only if the 2-thread run finishes and agrees
        ok = np.array_equal(_run(k, x, panels, bs, acts, 2)[-1], want)
        os._exit(0 if ok else 1)
    for _ in range(600):  # 60 s
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        import time

        time.sleep(0.1)
    os.kill(pid, 9)
    pytest.fail("the forked child hung in the pool")


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 70), min_size=2, max_size=4),
    m=st.integers(1, 20),
    act=st.integers(0, len(ACTIVATIONS) - 1),
    threads=st.integers(1, 3),
)
def test_packed_property(sizes, m, act, threads):
    ws, bs, acts = _layers(sizes, act, bias=m % 2 == 0)
    x = np.random.default_rng(2).standard_normal((m, sizes[0])).astype(np.float32)
    want = _run(REF, x, _pack(REF, ws), bs, acts)[-1]
    for name in BACKENDS:
        with backend.use_backend(name) as kb:
            got = _run(kb, x, _pack(kb, ws), bs, acts, threads)[-1]
            np.testing.assert_allclose(got, want, rtol=3e-5, atol=3e-5)


def test_concurrent_callers_share_the_pool_safely():
    # callers that find the pool busy run alone: every result still right, none lost
    import threading

    k = _compiled()
    ws, bs, acts = _layers((100, 300, 40), 1, bias=True, seed=9)
    panels = _pack(k, ws)
    xs = np.random.default_rng(10).standard_normal((8, 3, 100)).astype(np.float32)
    want = [_run(k, x, panels, bs, acts, 1)[-1] for x in xs]
    errors = []

    def worker(i):
        for _ in range(40):
            got = _run(k, xs[i], panels, bs, acts, 2)[-1]
            if not np.array_equal(got, want[i]):
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_runtime_plans_give_the_same_bits_on_1_and_2_threads(tmp_path):
    import lepton_nn as ln
    import lepton_nn.runtime as rt
    from lepton_nn import nn

    ln.set_seed(3)
    model = nn.Sequential(
        [nn.Dense(300, "relu", in_features=90), nn.Dense(70, "gelu"), nn.Dense(5)]
    )
    model.build((None, 90))
    ln.save(model, tmp_path / "m.lnn")
    one, two = rt.load(tmp_path / "m.lnn", threads=1), rt.load(tmp_path / "m.lnn", threads=2)
    if "cython" in BACKENDS:  # one call for the three layers, on the pool's 2 threads
        (fn, args, _), *rest = two.plan_for(64).head + [
            (f, a, -1) for f, a in two.plan_for(64).tail
        ]  # no wake() first: the job's own post wakes the pool's workers as early
        assert fn.__name__ == "dense_packed_forward" and len(args[0]) == 3 and args[-1] == 2
    for n in (1, 2, 7, 64):
        x = np.random.default_rng(n).standard_normal((n, 90)).astype(np.float32)
        np.testing.assert_array_equal(one.predict(x), two.predict(x))
        np.testing.assert_allclose(two.predict(x), model(x).data, rtol=1e-4, atol=1e-5)
