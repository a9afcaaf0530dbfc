"""The live events' per-layer statistics (``studio.live_stats``), all layers in one packed
pass, against NumPy computed tensor by tensor."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_nn.inspect.studio.live_stats import ParamNorms, summaries
from lepton_nn.inspect.studio.tensor_view import summary


def _want(a, sample=4096, bins=16):
    """mean, std, histogram of the even sample (float64) and the whole tensor's norm."""
    flat = np.asarray(a, np.float64).reshape(-1)
    v = flat[:: -(-flat.size // sample)] if flat.size > sample else flat
    lo, hi = v.min(), v.max()
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    return v.mean(), v.std(), np.linalg.norm(flat), counts.tolist(), edges


def test_summaries_match_numpy_tensor_by_tensor():
    r = np.random.default_rng(0)
    arrays = [
        r.normal(0.5, 2.0, size=(32, 32)).astype(np.float32),
        np.maximum(r.normal(size=(32, 17)), 0).astype(np.float32),  # ReLU-like: many zeros
        r.normal(size=(32, 1)),  # float64
        np.full((4, 3), 7.0, np.float32),  # constant: bins of [6.5, 7.5]
        r.normal(-3.0, 0.1, size=(50, 200)).astype(np.float32),  # 10000 values: every 3rd
        r.normal(size=(5,)).astype(np.float32),
    ]
    got = summaries(arrays)
    for a, s in zip(arrays, got):
        mean, std, norm, counts, edges = _want(a)
        assert s["mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
        assert s["std"] == pytest.approx(std, rel=1e-7, abs=1e-12)
        assert s["norm"] == pytest.approx(norm, rel=1e-6)
        assert s["hist"]["counts"] == counts
        assert (s["hist"]["lo"], s["hist"]["hi"]) == pytest.approx((edges[0], edges[-1]))
    assert sum(got[4]["hist"]["counts"]) == 3334  # the sample of 10000: every third value
    # the same numbers as the one-tensor summary of the node panel
    one = summary(arrays[0])
    assert got[0]["hist"]["counts"] == one["hist"]["counts"]
    assert [got[0]["hist"][k] for k in ("lo", "hi")] == one["hist"]["edges"][::16]
    assert got[0]["mean"] == pytest.approx(one["mean"], rel=1e-12)


def test_summaries_of_non_finite_and_empty_tensors_fall_back_to_the_single_summary():
    a = np.array([1.0, np.nan, np.inf, 3.0, -np.inf], np.float32)
    ok = np.arange(6, dtype=np.float32)
    s_bad, s_empty, s_ok = summaries([a, np.zeros((0, 3), np.float32), ok])
    one = summary(a)
    assert s_bad["mean"] == one["mean"] and s_bad["hist"]["counts"] == one["hist"]["counts"]
    assert sum(s_bad["hist"]["counts"]) == 2 and s_bad["hist"]["lo"] == 1.0
    assert s_empty == summary(np.zeros((0, 3))) and s_empty["hist"] is None
    assert s_ok["hist"]["counts"] == np.histogram(ok, bins=16)[0].tolist()  # not disturbed
    assert summaries([]) == []


class _P:
    def __init__(self, data, grad=None):
        self.data, self.grad = data, grad


def test_param_norms_match_numpy_per_layer():
    r = np.random.default_rng(1)
    w1, b1 = r.normal(size=(4, 8)).astype(np.float32), np.zeros(8, np.float32)
    w2 = r.normal(size=(8, 1)).astype(np.float32)
    layers = [[_P(w1, np.ones_like(w1)), _P(b1, np.full(8, 2.0, np.float32))], [_P(w2)]]
    pn = ParamNorms(layers)
    pn.before()
    before = [w1.copy(), b1.copy(), w2.copy()]
    layers[0][0].data = w1 - 0.1  # an optimizer step: replaced arrays and in place
    layers[0][1].data += 0.5
    w2 *= 2.0
    rows = pn.after()
    after = [layers[0][0].data, layers[0][1].data, w2]

    def norm(*xs):
        return np.sqrt(sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in xs))

    assert rows[0]["weight_norm"] == pytest.approx(norm(*after[:2]), rel=1e-12)
    assert rows[0]["weight_grad_norm"] == pytest.approx(norm(np.ones((4, 8)), np.full(8, 2)))
    du = norm(after[0] - before[0], after[1] - before[1])
    assert rows[0]["update_ratio"] == pytest.approx(du / norm(*before[:2]), rel=1e-9)
    assert rows[1]["weight_grad_norm"] is None  # no gradient
    assert rows[1]["update_ratio"] == pytest.approx(1.0, rel=1e-9)  # ||2w - w|| / ||w||


def test_param_norms_of_zero_weights_and_empty_layers():
    pn = ParamNorms([[_P(np.zeros(3, np.float32))], [_P(np.zeros((0,), np.float32))]])
    pn.before()
    rows = pn.after()
    assert rows[0]["update_ratio"] is None and rows[0]["weight_norm"] == 0.0
    assert rows[1] == {"weight_norm": 0.0, "weight_grad_norm": None, "update_ratio": None}
    assert pn.after()[0]["weight_norm"] == 0.0  # no before(): nothing measured


def test_spread_sample_sees_every_unit_and_keeps_the_stated_error_bound():
    from lepton_nn.inspect.studio.live_stats import spread_sample

    r = np.random.default_rng(2)
    # odd units are 10 higher: a stride of 2 (8192 / 4096) would see the even ones only
    a = r.normal(size=(64, 128)) + 10.0 * (np.arange(128) % 2)
    v = spread_sample(a)
    assert np.shares_memory(v, a)
    assert np.array_equal(v, a.reshape(-1)[::3])  # stride 2 shares a factor with 128: 3
    assert len(set((np.arange(0, a.size, 3) % 128).tolist())) == 128  # every unit
    assert abs(v.mean() - a.mean()) < 0.1  # the even-only sample would be 5 off
    # independent values: mean, std and bin shares within 4 standard errors (n = v.size)
    big = r.normal(1.0, 2.0, size=(300, 7, 9)).astype(np.float32)
    v = spread_sample(big).astype(np.float64)
    n, full = v.size, big.astype(np.float64).reshape(-1)
    assert 3000 < n <= 4096
    assert abs(v.mean() - full.mean()) < 4 * full.std() / np.sqrt(n)
    assert abs(v.std() / full.std() - 1) < 4 / np.sqrt(2 * n)
    edges = np.linspace(full.min(), full.max(), 17)
    p_full = np.histogram(full, edges)[0] / full.size
    p_v = np.histogram(v, edges)[0] / n
    assert np.all(np.abs(p_v - p_full) < 4 * np.sqrt(p_full * (1 - p_full) / n) + 1e-12)
    small = np.arange(12.0).reshape(3, 4)
    assert np.array_equal(spread_sample(small), small.reshape(-1))  # whole when it fits
