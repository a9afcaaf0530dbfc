"""Trainer on graph models of several inputs: X as a dict by input name or a list in input
order, every input batched, shuffled (one permutation) and split together.

Oracle: a two-input model ``Dense(Concatenate([a, b]))`` is the one-input model ``Dense`` on
``hstack([A, B])`` with the same weights, so fitting either on the same rows, seed, shuffle
and validation split must give the same bits. Shuffling or splitting the inputs apart (or
misaligning them) breaks that.
"""

from __future__ import annotations

import numpy as np
import pytest

import lepton_nn as ln
from lepton_nn import nn
from lepton_nn.data import iterate_batches
from lepton_nn.errors import LeptonError, ShapeError
from lepton_nn.train import NonFiniteLossWarning, Trainer

N, DA, DB = 90, 5, 3


def data(seed=0):
    r = np.random.default_rng(seed)
    A = r.standard_normal((N, DA)).astype(np.float32)
    B = r.standard_normal((N, DB)).astype(np.float32)
    y = (A[:, 0] - B[:, 1] > 0).astype(np.float32)
    return A, B, y


def pair(seed=0):
    """(two-input graph model, the same network as a Sequential on hstack([A, B]))."""
    ln.set_seed(seed)
    a, b = nn.Input((DA,), name="a"), nn.Input((DB,), name="b")
    h = nn.Dense(6, "tanh", name="h")(nn.Concatenate(name="cat")([a, b]))
    graph = nn.Model([a, b], nn.Dense(1, name="out")(h))
    flat = nn.Sequential([nn.Dense(6, "tanh"), nn.Dense(1)])
    flat.build((None, DA + DB))
    for p, q in zip(flat.parameters(), graph.parameters(), strict=True):
        p.data[...] = q.data
    return graph, flat


def fit_both(given, **kw):
    A, B, y = data()
    graph, flat = pair()
    tg = Trainer(graph, "bce", "adam", lr=0.05)
    tf = Trainer(flat, "bce", "adam", lr=0.05)
    hg = tg.fit(given(A, B), y, epochs=3, batch_size=16, verbose=0, seed=7, **kw)
    hf = tf.fit(np.hstack([A, B]), y, epochs=3, batch_size=16, verbose=0, seed=7, **kw)
    return (tg, hg, graph), (tf, hf, flat), (A, B, y)


@pytest.mark.parametrize("form", ["dict", "list", "tuple"])
@pytest.mark.parametrize("split", [0.0, 0.25])
def test_fit_matches_the_one_input_model_on_the_joined_columns(form, split):
    given = {
        "dict": lambda A, B: {"b": B, "a": A},  # key order does not matter
        "list": lambda A, B: [A, B],
        "tuple": lambda A, B: (A, B),
    }[form]
    (tg, hg, graph), (tf, hf, flat), (A, B, y) = fit_both(given, validation_split=split)
    for p, q in zip(graph.parameters(), flat.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data)
    assert hg.history["loss"] == hf.history["loss"]
    if split:
        assert hg.history["val_loss"] == hf.history["val_loss"]
    assert hg.history["loss"][-1] < hg.history["loss"][0]
    np.testing.assert_array_equal(tg.predict({"a": A, "b": B}), tf.predict(np.hstack([A, B])))
    np.testing.assert_array_equal(tg.predict([A, B], batch_size=7), tf.predict(np.hstack([A, B])))
    assert tg.evaluate([A, B], y) == tf.evaluate(np.hstack([A, B]), y)


def test_validation_data_of_several_inputs():
    A, B, y = data()
    Av, Bv, yv = data(1)
    graph, flat = pair()
    tg, tf = Trainer(graph, "bce"), Trainer(flat, "bce")
    hg = tg.fit([A, B], y, epochs=2, verbose=0, seed=3, validation_data=({"a": Av, "b": Bv}, yv))
    hf = tf.fit(np.hstack([A, B]), y, epochs=2, verbose=0, seed=3,
                validation_data=(np.hstack([Av, Bv]), yv))  # fmt: skip
    assert hg.history["val_loss"] == hf.history["val_loss"]


def test_mismatched_rows_name_the_inputs():
    A, B, y = data()
    graph, _ = pair()
    t = Trainer(graph, "bce")
    with pytest.raises(ShapeError, match=r"input 'b' has 89 rows but input 'a' has 90"):
        t.fit({"a": A, "b": B[:-1]}, y, epochs=1, verbose=0)
    with pytest.raises(ShapeError, match=r"input 'b' has 89 rows but input 'a' has 90"):
        t.predict([A, B[:-1]])
    with pytest.raises(ShapeError, match=r"X has 90 rows but y has 89"):
        t.fit([A, B], y[:-1], epochs=1, verbose=0)
    with pytest.raises(ShapeError, match=r"input 'b' has 90 rows but input 'a' has 89"):
        t.evaluate({"a": A[:-1], "b": B}, y)


def test_wrong_inputs_are_named():
    A, B, y = data()
    graph, flat = pair()
    t = Trainer(graph, "bce")
    with pytest.raises(LeptonError, match=r"misses \['b'\], has unknown \['c'\]"):
        t.fit({"a": A, "c": B}, y, epochs=1, verbose=0)
    with pytest.raises(LeptonError, match=r"takes 2 inputs \['a', 'b'\], X holds 3 arrays"):
        t.predict([A, B, B])
    with pytest.raises(LeptonError, match=r"takes 2 inputs .*give X as a dict"):
        t.predict(np.hstack([A, B]))
    with pytest.raises(LeptonError, match=r"Sequential takes one array"):
        Trainer(flat, "bce").fit({"a": A, "b": B}, y, epochs=1, verbose=0)
    with pytest.raises(LeptonError, match=r"input 'a' must be numeric"):
        t.predict({"a": A.astype(str), "b": B})


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_non_finite_input_in_one_input_is_a_data_fault():
    A, B, y = data()
    B[3, 1] = np.nan
    graph, _ = pair()
    t = Trainer(graph, "bce")
    with pytest.warns(NonFiniteLossWarning, match="the batch holds non-finite inputs"):
        t.fit({"a": A, "b": B}, y, epochs=1, batch_size=N, verbose=0)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_of_a_dict_take_the_same_rows_of_every_input(shuffle):
    ids = np.arange(23)
    X = {"a": ids[:, None] * 1.0, "b": np.repeat(ids[:, None], 3, axis=1) * 10}
    seen = []
    for xb, yb in iterate_batches(X, ids, batch_size=5, shuffle=shuffle, rng=0):
        assert set(xb) == {"a", "b"}
        np.testing.assert_array_equal(xb["a"][:, 0], yb)
        np.testing.assert_array_equal(xb["b"], np.repeat(yb[:, None], 3, axis=1) * 10)
        seen += list(yb)
    assert sorted(seen) == list(ids)
    assert (seen != list(ids)) == shuffle
    with pytest.raises(ShapeError, match=r"input 'a' has shape \(23, 1\) but input 'b'"):
        iterate_batches({"a": X["a"], "b": X["b"][:-1]}, ids)
