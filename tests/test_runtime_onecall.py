"""The one-call batch-1 predict (runtime/onecall.py, kernels/dense_run.pxi, qgemv.pxi) and the
finite check under it (csrc/finite.h): the same bits as the plan, every check and error of
the general path kept, outputs that never alias, thread changes honoured."""

from __future__ import annotations

import threading
import weakref

import numpy as np
import pytest

import lepton_nn as L
import lepton_nn.runtime as rt
from lepton_nn import nn
from lepton_nn.backend import use_backend
from lepton_nn.errors import DataError, ShapeError

_dense = pytest.importorskip("lepton_nn.kernels._dense")
if not hasattr(_dense, "dense_packed_run"):
    pytest.skip("the compiled kernels predate the one-call runner", allow_module_level=True)

SPECIALS32 = [np.inf, -np.inf, np.nan, -np.nan, np.uint32(0x7FC00001).view(np.float32),
              np.uint32(0xFF800001).view(np.float32)]  # fmt: skip
SPECIALS64 = [np.inf, -np.inf, np.nan, -np.nan, np.uint64(0x7FF8000000000001).view(np.float64),
              np.uint64(0xFFF0000000000001).view(np.float64)]  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_check_simd_and_plain_twin_at_every_position(dtype):
    """finite.h's dispatched loop (AVX2 where the CPU has it: 32 floats / 16 doubles a block)
    and its plain C twin: False with inf, -inf or a NaN (any sign, any payload) at any
    position, body or tail, of arrays of every length 0..130 and a few large ones, from
    aligned and unaligned starts; True for finite extremes, subnormals and -0."""
    specials = SPECIALS32 if dtype == np.float32 else SPECIALS64
    fi = np.finfo(dtype)
    rng = np.random.default_rng(0)
    buf = (rng.standard_normal(4200) * 1e3).astype(dtype)
    for n in [*range(131), 784, 1000, 4099]:
        for start in (0, 1, 3) if n <= 130 else (0, 1):
            x = buf[start : start + n].copy() if start == 0 else buf[start : start + n]
            assert x.flags.c_contiguous
            assert _dense._all_finite_twins(x) == (True, True), (n, start)
            y = buf.copy()[start : start + n]
            positions = range(n) if n <= 130 else sorted({0, 31, 32, n // 2, n - 2, n - 1})
            for i in positions:
                for k, v in enumerate(specials):
                    y[i] = v
                    assert _dense._all_finite_twins(y) == (False, False), (n, start, i, k)
                    assert _dense.all_finite(y) is False
                for v in (fi.max, -fi.max, fi.tiny / 4, -0.0, fi.smallest_subnormal):
                    y[i] = v
                    assert _dense._all_finite_twins(y) == (True, True), (n, start, i, v)
                y[i] = x[i]


def _mlp(sizes, seed=0, flatten=None):
    L.set_seed(seed)
    layers = [nn.Flatten()] if flatten else []
    for j, n in enumerate(sizes[1:]):
        layers.append(nn.Dense(n, "relu" if j < len(sizes) - 2 else None))
    model = nn.Sequential(layers)
    model.build((None, *(flatten or (sizes[0],))))
    return model.eval()


def _saved(tmp_path, kind, sizes=(64, 48, 40, 5), flatten=None):
    model = _mlp(sizes, flatten=flatten)
    path = tmp_path / f"{kind}.lnn"
    if kind == "int8":
        from lepton_nn.compress import quantize

        x = np.random.default_rng(5).standard_normal((16, *(flatten or sizes[:1])))
        L.save(quantize(model, x.astype(np.float32), "dynamic"), path)
    else:
        L.save(model, path)
    return model, path


def _general(m, x):
    """``m``'s output for ``x`` through the general path (the runner switched off)."""
    fast, fast_predict = m._fast, m._fast_predict
    m._fast = m._fast_predict = None
    try:
        return m.predict(x)
    finally:
        m._fast, m._fast_predict = fast, fast_predict


@pytest.mark.parametrize("kind", ["fp32", "int8"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_runner_gives_the_plans_bits_and_fresh_outputs(tmp_path, kind, threads):
    """The batch-1 runner is bound at load for a one-call plan, gives the plan's bits (and
    the general path's), returns a new array each call that nothing it keeps aliases (a
    second predict leaves the first's result alone), and forward() takes it too."""
    model, path = _saved(tmp_path, kind, sizes=(300, 512, 64, 10))
    m = rt.load(path, threads=threads)
    assert m._fast is not None and m._fast_predict is m._fast
    runner = m._fast[1]
    rng = np.random.default_rng(threads)
    xs = rng.standard_normal((6, 300)).astype(np.float32)
    outs = [m.predict(xs[i : i + 1]) for i in range(6)]
    plan = m.plan_for(1)
    for i, out in enumerate(outs):
        assert type(out) is np.ndarray and out.shape == (1, 10) and out.dtype == np.float32
        assert out.flags.owndata and out.flags.c_contiguous and out.flags.writeable
        np.testing.assert_array_equal(out, plan.run(xs[i : i + 1]))
        np.testing.assert_array_equal(out, _general(m, xs[i : i + 1]))
        np.testing.assert_array_equal(out, m.forward(xs[i : i + 1]))
        kept = [*runner.keep, plan.out] + ([] if kind == "fp32" else [runner.chain.scratch])
        assert not any(np.shares_memory(out, k) for k in kept)
        assert not any(np.shares_memory(out, o) for o in outs if o is not out)
    again = [m.predict(xs[i : i + 1]) for i in range(6)]
    for a, b in zip(outs, again):  # the earlier results were not touched by later calls
        np.testing.assert_array_equal(a, b)
    rtol = 1e-5 if kind == "fp32" else 0.1
    np.testing.assert_allclose(np.concatenate(outs), model(xs).data, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_runner_reuses_only_an_output_nobody_holds(tmp_path, kind):
    """The runner writes into one of its last two outputs only when nothing else holds it: a
    dropped result's memory comes back, but a result still held by a variable, a view, a
    memoryview or a weak reference never changes, and one reshaped, retyped or made
    read-only before it was dropped is not handed out again."""
    _, path = _saved(tmp_path, kind)
    m = rt.load(path, threads=1)
    xs = np.random.default_rng(6).standard_normal((3, 1, 64)).astype(np.float32)
    want = [_general(m, x) for x in xs]
    address = m.predict(xs[0]).__array_interface__["data"][0]  # dropped at once
    for _ in range(3):
        got = m.predict(xs[1])
        assert got.__array_interface__["data"][0] == address  # the same memory, again
        np.testing.assert_array_equal(got, want[1])
        del got
    y = None
    for i in range(6):  # y = predict(x) in a loop: the last result stays intact meanwhile
        last, y = y, m.predict(xs[i % 3])
        np.testing.assert_array_equal(y, want[i % 3])
        if last is not None:
            np.testing.assert_array_equal(last, want[(i - 1) % 3])
    held = m.predict(xs[0])
    view = m.predict(xs[0])[0]
    buffer = memoryview(m.predict(xs[0]))
    weak = weakref.ref(m.predict(xs[0]))
    for _ in range(3):
        np.testing.assert_array_equal(m.predict(xs[1]), want[1])
        np.testing.assert_array_equal(m.predict(xs[2]), want[2])
    np.testing.assert_array_equal(held, want[0])
    np.testing.assert_array_equal(view, want[0][0])
    np.testing.assert_array_equal(np.asarray(buffer), want[0])
    assert weak() is not None
    np.testing.assert_array_equal(weak(), want[0])
    del held, view, buffer, weak
    for change in ("shape", "dtype", "readonly"):
        for _ in range(2):  # whichever of the two it keeps was changed
            out = m.predict(xs[0])
            if change == "shape":
                out.shape = (out.size,)
            elif change == "dtype":
                out.dtype = np.int32
            else:
                out.flags.writeable = False
            del out
            got = m.predict(xs[1])
            assert got.shape == (1, 5) and got.dtype == np.float32 and got.flags.writeable
            np.testing.assert_array_equal(got, want[1])
            del got


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_runner_keeps_every_check_and_error(tmp_path, kind):
    """Through the runner: a wrong shape still raises ShapeError naming the layer and both
    shapes; inf or NaN anywhere in a batch-1 input is refused with DataError naming the row;
    other dtypes (big-endian float32 too), lists, views, unaligned arrays, subclasses and
    other batch sizes take the general path and give what it gives."""
    _, path = _saved(tmp_path, kind)
    m = rt.load(path)
    assert m._fast is not None
    with pytest.raises(ShapeError, match=r"layer 'dense.*\(batch, 64\).*\(1, 63\)"):
        m.predict(np.zeros((1, 63), np.float32))
    with pytest.raises(ShapeError, match=r"layer 'dense.*\(64,\)"):
        m.predict(np.zeros(64, np.float32))
    with pytest.raises(ShapeError, match=r"\(1, 1, 64\)"):
        m.predict(np.zeros((1, 1, 64), np.float32))
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    for i in range(64):
        for v in SPECIALS32:
            y = x.copy()
            y[0, i] = v
            for call in (m.predict, m.forward):
                with pytest.raises(DataError, match=r"inf or NaN.*0-based: 0\)"):
                    call(y)
    want = m.predict(x)
    unaligned = np.frombuffer(b"\0" + x.tobytes(), np.float32, offset=1).reshape(1, 64)
    assert not unaligned.flags.aligned
    for other in (x.astype(np.float64), x.tolist(), np.repeat(x, 2, axis=1)[:, ::2],
                  x.view(np.recarray), np.asfortranarray(x), x.astype(">f4"),
                  unaligned):  # fmt: skip
        np.testing.assert_array_equal(m.predict(other), want)
    x5 = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    np.testing.assert_array_equal(m.predict(x5), _general(m, x5))


def test_runner_reads_an_input_flattened_by_the_network(tmp_path):
    """A network starting with Flatten takes (1, 4, 16): the runner checks that shape and
    gives the plan's bits; (1, 64) is refused with ShapeError as before."""
    _, path = _saved(tmp_path, "fp32", flatten=(4, 16))
    m = rt.load(path)
    assert m._fast is not None
    x = np.random.default_rng(2).standard_normal((1, 4, 16)).astype(np.float32)
    np.testing.assert_array_equal(m.predict(x), _general(m, x))
    with pytest.raises(ShapeError, match=r"\(batch, 4, 16\).*\(1, 64\)"):
        m.predict(x.reshape(1, 64))


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_thread_changes_are_honoured(tmp_path, kind):
    """Setting ``threads`` re-plans: the batch-1 plan's chain and its runner take the new
    count, with the same bits; a bad count is refused."""
    _, path = _saved(tmp_path, kind, sizes=(300, 512, 64, 10))
    m = rt.load(path, threads=1)
    x = np.random.default_rng(3).standard_normal((1, 300)).astype(np.float32)
    one = m.predict(x)
    for t in (2, 3, 1):
        m.threads = t
        assert m.threads == t
        fn, args, _ = m.plan_for(1).head[0]
        chain_threads = args[-1] if kind == "fp32" else args[0].threads
        runner = m._fast[1]
        runner_threads = runner.threads if kind == "fp32" else runner.chain.threads
        assert chain_threads == runner_threads == t
        np.testing.assert_array_equal(m.predict(x), one)
    with pytest.raises(ValueError, match="positive"):
        m.threads = 0


def test_threads_calling_at_once_get_their_own_results(tmp_path):
    """Many Python threads predicting batch 1 on one model (the runner busy in one of them
    sends the others down the general path): every result is its own input's."""
    _, path = _saved(tmp_path, "fp32", sizes=(300, 512, 64, 10))
    m = rt.load(path, threads=2)
    xs = np.random.default_rng(4).standard_normal((8, 1, 300)).astype(np.float32)
    want = [_general(m, x) for x in xs]
    errors = []

    def work(i):
        for _ in range(200):
            if not np.array_equal(m.predict(xs[i]), want[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_no_runner_without_the_compiled_chain(tmp_path):
    """The reference backend's plans run the NumPy twins: no runner, same answers."""
    _, path = _saved(tmp_path, "fp32")
    x = np.random.default_rng(6).standard_normal((1, 64)).astype(np.float32)
    want = rt.load(path).predict(x)
    with use_backend("reference"):
        m = rt.load(path)
        assert m._fast is None and m._fast_predict is None
        np.testing.assert_allclose(m.predict(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend_name", ["cython", "reference"])
def test_big_endian_and_unaligned_inputs_are_converted_not_misread(tmp_path, backend_name):
    """A big-endian float32 array ('>f4') has the same dtype number as the native one; the
    input gates (the runner's and the plan's, compiled and twin) must send it to the general
    path, which converts it, at any batch size; so must an unaligned array."""
    path = tmp_path / "m.lnn"
    L.save(_mlp((16, 8, 3)), path)
    with use_backend(backend_name):
        m = rt.load(path)
        for n in (1, 5):
            x = np.random.default_rng(n).standard_normal((n, 16)).astype(np.float32)
            want = m.predict(x)
            swapped = x.astype(">f4")
            raw = np.frombuffer(b"\0" + x.tobytes(), np.float32, offset=1).reshape(x.shape)
            assert not swapped.dtype.isnative and not raw.flags.aligned
            for other in (swapped, raw, x.astype(">f8")):
                np.testing.assert_array_equal(m.predict(other), want)
                np.testing.assert_array_equal(m.forward(other), want)
