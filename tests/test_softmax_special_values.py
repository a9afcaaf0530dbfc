"""The softmax cross-entropy kernels (kernels/csrc/dense.h, numba_dense.py) against their NumPy
twin on special values: NaN (both signs), +-inf, huge and tiny logits, each at every column of
a row whose width has full 16-lane blocks and a tail (37 = 2 x 16 + 5) and of a short row (3),
the label on that column and away from it. The twin is NumPy's: a NaN anywhere in a row makes
that row's probabilities and loss NaN (np.max propagates it), +inf makes them NaN too
(inf - inf), a -inf logit has probability 0 (and loss +inf when it is the label's).
"""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn.backend as backend
from lepton_nn.backend.reference import ReferenceBackend

REF = ReferenceBackend()
F32 = np.finfo(np.float32)
VALUES = [np.nan, "-nan", np.inf, -np.inf, float(F32.max), -float(F32.max), 1e4, -1e4, 0.0, 1e-40]
IDS = [repr(v) if v != "-nan" else "-nan" for v in VALUES]


def _value(v, dtype):
    return np.copysign(dtype(np.nan), -1) if v == "-nan" else dtype(v)


def _rows(v, c, dtype):
    """(c + 1, c) logits: row i random with ``v`` at column i; the last row ``v`` throughout."""
    z = (np.random.default_rng(c).standard_normal((c + 1, c)) * 3).astype(dtype)
    np.fill_diagonal(z, _value(v, dtype))
    z[c] = _value(v, dtype)
    return z


def _forward(be, logits, labels):
    probs = np.empty_like(logits)
    loss = np.empty(logits.shape[0], logits.dtype)
    with np.errstate(all="ignore"):  # the twin's inf - inf and log(0), as intended
        be.softmax_xent_forward(logits, labels, probs, loss)
    return probs, loss


def _same(got, want, msg):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=msg)
    tol = {"rtol": 2e-5, "atol": 1e-6} if want.dtype == np.float32 else {"rtol": 1e-12}
    np.testing.assert_allclose(got, want, err_msg=msg, **tol)  # inf where the twin's


@pytest.mark.parametrize("name", [b for b in backend.available() if b != "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [37, 3])
@pytest.mark.parametrize("v", VALUES, ids=IDS)
def test_softmax_xent_special_values_like_the_twin(name, dtype, c, v):
    logits = _rows(v, c, dtype)
    n = logits.shape[0]
    be = backend._instance(name)
    for labels in (np.arange(n) % c, (np.arange(n) + 1) % c):  # on the value, and beside it
        labels = labels.astype(np.int64)
        want_p, want_l = _forward(REF, logits, labels)
        got_p, got_l = _forward(be, logits.copy(), labels)
        msg = f"{name} {np.dtype(dtype)} c={c} v={v!r} labels={labels[:3]}"
        _same(got_p, want_p, "probs " + msg)
        _same(got_l, want_l, "loss " + msg)
        if v in (np.nan, "-nan", np.inf):  # the rows holding the value: all NaN in the twin
            assert np.isnan(want_p).all() and np.isnan(want_l).all()
        # the backward pass on those probabilities: NaN stays NaN
        gloss = np.linspace(0.5, 1.5, n).astype(dtype)
        want_g = REF.softmax_xent_backward(want_p, labels, gloss, np.empty_like(want_p))
        got_g = be.softmax_xent_backward(got_p, labels, gloss, np.empty_like(got_p))
        _same(got_g, want_g, "glogits " + msg)
