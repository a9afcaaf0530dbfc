"""Chapter 8: your masks against ``lepton_nn.compress.prune_magnitude`` (per layer and
global), your int8 product against ``lepton_nn.ops.matmul_int8`` (the ``qgemm_s32`` kernel,
NumPy twin in ``backend/reference.py``), and your quantized layer against the error bound that
rounding allows."""

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import nn
from lepton_nn.compress import prune_magnitude
from lepton_nn.ops import matmul_int8


def small_net(seed):
    ln.set_seed(seed)
    return nn.Sequential([nn.Dense(16, "relu", in_features=12), nn.Dense(5, in_features=16)])


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_magnitude_mask_matches_prune_magnitude(ex, sparsity):
    net = small_net(0)
    weights = {n: p.data.copy() for n, p in net.named_parameters() if n.endswith("weight")}
    masks = {n: ex.magnitude_mask(w, sparsity) for n, w in weights.items()}
    pruner = prune_magnitude(net, sparsity)
    for name, mask in masks.items():
        assert mask.dtype == bool and mask.shape == weights[name].shape
        assert (~mask).sum() == round(sparsity * mask.size)
        assert np.array_equal(mask, pruner.masks[name]), name


def test_global_masks_match_prune_magnitude(ex):
    net = small_net(1)
    weights = {n: p.data.copy() for n, p in net.named_parameters() if n.endswith("weight")}
    masks = ex.global_masks(weights, 0.6)
    pruner = prune_magnitude(net, 0.6, scope="global")
    assert set(masks) == set(weights)
    for name in weights:
        assert np.array_equal(masks[name], pruner.masks[name]), name
    kept = {n: m.mean() for n, m in masks.items()}
    assert kept["layers.0.weight"] != kept["layers.1.weight"]  # not an even split


def test_quantize_symmetric_error_is_at_most_half_a_step(ex):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 7)) * rng.uniform(0.01, 100, size=(5, 1))
    for axis in (None, 0, 1):
        q, scale = ex.quantize_symmetric(a, axis)
        assert q.dtype == np.int8 and q.shape == a.shape
        assert np.abs(q).max() == 127  # the largest value uses the whole range
        assert np.all(np.abs(q * scale - a) <= scale / 2 + 1e-12), axis
    q, scale = ex.quantize_symmetric(np.zeros((2, 3)), axis=1)
    assert np.all(q == 0) and np.all(np.isfinite(scale))


def test_int8_matmul_is_exact_where_int8_arithmetic_wraps(ex):
    rng = np.random.default_rng(3)
    qa = rng.integers(-128, 128, size=(4, 3000)).astype(np.int8)
    qb = rng.integers(-128, 128, size=(3000, 5)).astype(np.int8)
    qa[0], qb[:, 0] = -128, -128  # the largest sum: 128 * 128 * 3000, far past int16
    out = ex.int8_matmul(qa, qb)
    assert out.dtype == np.int32
    exact = qa.astype(np.int64) @ qb.astype(np.int64)
    assert np.array_equal(out, exact) and out[0, 0] == 128 * 128 * 3000
    assert np.array_equal(out, matmul_int8(qa, qb))


def test_quantized_linear_within_the_rounding_bound(ex):
    """x ~ s_x q_x and W ~ s_W q_W, each off by at most half a step, so each output is off by
    at most sum_k (|x_k| s_W / 2 + |W_k| s_x / 2 + s_x s_W / 4)."""
    rng = np.random.default_rng(4)
    x, W, b = rng.normal(size=(6, 20)), rng.normal(size=(20, 3)), rng.normal(size=3)
    got = ex.quantized_linear(x, W, b)
    sx = np.abs(x).max(axis=1, keepdims=True) / 127
    sw = np.abs(W).max(axis=0, keepdims=True) / 127
    bound = (np.abs(x) @ np.ones_like(W)) * sw / 2 + sx * (np.ones_like(x) @ np.abs(W)) / 2
    bound += x.shape[1] * sx * sw / 4
    err = np.abs(got - (x @ W + b))
    assert got.shape == (6, 3) and np.all(err <= bound + 1e-12)
    assert err.max() > 1e-4  # it did go through int8 (float64 would be exact to 1e-15)
