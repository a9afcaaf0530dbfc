"""``dense_chain_forward``: Dense layers one after the other in one call (the runtime's batch-1
MLP): every backend against the reference twin, the twin against plain NumPy, and the
runtime's batch-1 plans that use it."""

from __future__ import annotations

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


def _layers(sizes, acts, bias, seed=0):
    rng = np.random.default_rng(seed)
    ws = tuple(
        (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        for k, n in zip(sizes[:-1], sizes[1:], strict=True)
    )
    bs = tuple(rng.standard_normal(n).astype(np.float32) if bias else None for n in sizes[1:])
    return ws, bs, tuple(acts)


def _run(kb, x, ws, bs, acts):
    outs = tuple(np.full((x.shape[0], w.shape[1]), np.nan, np.float32) for w in ws)
    y = kb.dense_chain_forward(x, ws, bs, acts, outs)
    assert y is outs[-1]
    return outs


# widths around the kernel's blocks: 96 columns (12 vectors of 8), 16 rows, a tail below 8
SIZES = [(784, 512, 256, 10), (5, 3), (1, 1), (17, 96, 97, 7), (33, 200, 8, 1), (16, 104)]


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("act", range(len(ACTIVATIONS)), ids=ACTIVATIONS)
def test_chain_matches_reference_on_every_backend(be, sizes, m, act):
    ws, bs, acts = _layers(sizes, [act] * (len(sizes) - 1), bias=act != 1)
    x = np.random.default_rng(1).standard_normal((m, sizes[0])).astype(np.float32)
    for got, want in zip(_run(be, x, ws, bs, acts), _run(REF, x, ws, bs, acts), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_reference_twin_is_layer_by_layer_numpy():
    ws, bs, acts = _layers((30, 20, 5), [1, 0], bias=True, seed=4)
    x = np.random.default_rng(5).standard_normal((2, 30)).astype(np.float32)
    h = np.maximum(x.astype(np.float64) @ ws[0] + bs[0], 0)
    want = h @ ws[1] + bs[1]
    np.testing.assert_allclose(_run(REF, x, ws, bs, acts)[-1], want, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 140), min_size=2, max_size=4),
    m=st.integers(1, 3),
    act=st.integers(0, len(ACTIVATIONS) - 1),
)
def test_chain_property(sizes, m, act):
    ws, bs, acts = _layers(sizes, [act] * (len(sizes) - 1), bias=m != 2)
    x = np.random.default_rng(2).standard_normal((m, sizes[0])).astype(np.float32)
    want = _run(REF, x, ws, bs, acts)[-1]
    for name in BACKENDS:
        with backend.use_backend(name) as kb:
            np.testing.assert_allclose(_run(kb, x, ws, bs, acts)[-1], want, rtol=3e-5, atol=3e-5)


def test_runtime_batch1_mlp_is_one_call_without_a_transposed_copy(tmp_path):
    import lepton_nn as ln
    import lepton_nn.runtime as rt
    from lepton_nn import nn
    from lepton_nn.runtime.kernels import kernels

    ln.set_seed(0)
    model = nn.Sequential(
        [nn.Dense(64, "relu", in_features=30), nn.Dense(40, "tanh"), nn.Dense(3, "softmax")]
    )
    model.build((None, 30))
    model.eval()
    ln.save(model, tmp_path / "m.lnn")
    served = rt.load(tmp_path / "m.lnn")
    x = np.random.default_rng(0).standard_normal((1, 30)).astype(np.float32)
    np.testing.assert_allclose(served.predict(x), model(x).data, rtol=1e-5, atol=1e-6)
    plan = served.plan_for(1)
    names = [getattr(f, "__name__", "") for f, _, _ in plan.head]
    names += [getattr(f, "__name__", "") for f, _ in plan.tail]
    params = sum(p.data.nbytes for p in model.parameters())
    compiled = type(kernels()).dense_packed_forward is not ReferenceBackend.dense_packed_forward
    if compiled:
        assert names.count("dense_packed_forward") == 1  # the three layers in one call
        # no W^T kept; the panels pad the last layer's 3 columns to 16, and each layer's
        # panels sit in a buffer 16 floats longer (their 64-byte alignment)
        assert served.plan_info(1)["weight_bytes"] == params + 4 * (64 * 8 + 40 * 13 + 3 * 16)
    # larger batches and the chain agree
    x5 = np.random.default_rng(1).standard_normal((5, 30)).astype(np.float32)
    np.testing.assert_allclose(served.predict(x5[:1]), served.predict(x5)[:1], rtol=1e-5, atol=1e-6)
