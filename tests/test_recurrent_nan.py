"""NaN in a recurrent layer's input stays NaN in the compiled kernels, as in the NumPy twin.

The AVX2 gate math clamps exp's argument from below; with the clamp's operands in the wrong
order (vmaxps returns its second operand when one is NaN) a NaN pre-activation became -87
and sigmoid/tanh gave a finite gate. The runtime refuses NaN inputs, but training and direct
kernel calls do not.
"""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn.backend as backend
from lepton_nn import Tensor
from lepton_nn.nn import GRU, LSTM


@pytest.mark.parametrize("name", backend.available())
@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_nan_input_propagates_like_the_twin(name, cls, batch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((batch, 5, 8)).astype(np.float32)
    x[batch // 2, 2, 1] = np.nan  # one sample from step 2 on
    x[0, 0, :] = -np.nan  # a NaN with its sign bit set, from the first step
    layer = cls(16, return_sequences=True)
    with backend.use_backend("reference"):
        want = layer(Tensor(x)).data
    with backend.use_backend(name):
        got = layer(Tensor(x)).data
    assert np.isnan(want).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-5, atol=2e-6)
