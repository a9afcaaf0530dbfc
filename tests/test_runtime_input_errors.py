"""What a user sees from runtime.load / predict on mistakes: a clear lepton_nn error naming
the problem, never NumPy's own message or a silently truncated setting."""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as L
import lepton_nn.runtime as rt
from lepton_nn import nn
from lepton_nn.errors import DataError, ShapeError


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    L.set_seed(0)
    model = nn.Sequential([nn.Dense(8, "relu"), nn.Dense(3)])
    model.build((None, 5))
    p = tmp_path_factory.mktemp("m") / "m.lnn"
    L.save(model.eval(), p)
    return p


@pytest.mark.parametrize("bad", [2.5, "2", 0, -1, True, 1.0])
def test_threads_must_be_a_positive_int(path, bad):
    """2.5 was truncated to 2, "2" parsed as 2 and 1.0 taken as 1, silently."""
    with pytest.raises(ValueError, match=r"threads must be a positive int or None, got"):
        rt.load(path, threads=bad)
    m = rt.load(path, threads=np.int64(2))  # NumPy ints are ints
    assert m.threads == 2
    with pytest.raises(ValueError, match=r"positive int or None"):
        m.threads = bad
    assert m.threads == 2


def test_ragged_rows_none_and_a_dict_are_data_errors(path):
    """Ragged lists raised NumPy's "setting an array element with a sequence" ValueError;
    None and a dict for a one-input network said "an array of dtype object"."""
    m = rt.load(path)
    with pytest.raises(DataError, match="not a rectangular array"):
        m.predict([[0.0] * 5, [1.0]])
    with pytest.raises(DataError, match="got NoneType"):
        m.predict(None)
    with pytest.raises(DataError, match="got dict"):
        m.predict({"x": np.ones((1, 5), np.float32)})
    np.testing.assert_array_equal(m.predict([[0.5] * 5]), m.predict(np.full((1, 5), 0.5)))


def test_one_sample_without_its_batch_axis_gets_a_hint(path):
    m = rt.load(path)
    with pytest.raises(ShapeError, match=r"got \(5,\); one sample\? add the batch axis"):
        m.predict(np.ones(5, np.float32))
    with pytest.raises(ShapeError, match=r"got \(2, 4\)$"):  # no hint for other shapes
        m.predict(np.ones((2, 4), np.float32))
