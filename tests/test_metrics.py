"""Metrics against scikit-learn (random data, ties, edge cases) plus property tests.

Documented differences from scikit-learn 1.9: ROC AUC / KS with one class in y_true and average
precision with no positive row raise DataError (scikit-learn returns nan / 0.0 with a warning).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from lepton_nn import metrics as M
from lepton_nn.errors import DataError


def rand_binary(seed: int, n: int = 200, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.random(n) + 0.3 * y
    if ties:
        s = np.round(s * 4) / 4  # few distinct scores -> many ties
    return y, s


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_binary_score_metrics_match_sklearn(seed, ties):
    y, s = rand_binary(seed, ties=ties)
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert M.pr_auc(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert M.ks_statistic(y, s) == pytest.approx(np.max(np.abs(tpr - fpr)), abs=1e-12)
    f2, t2, th2 = M.roc_curve(y, s)
    np.testing.assert_allclose(f2, fpr)
    np.testing.assert_allclose(t2, tpr)
    p = np.clip(s / s.max(), 0, 1)
    assert M.log_loss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-12)


def test_ks_equals_two_sample_ks():
    stats = pytest.importorskip("scipy.stats")
    y, s = rand_binary(7, n=300)
    ref = stats.ks_2samp(s[y == 1], s[y == 0]).statistic
    assert M.ks_statistic(y, s) == pytest.approx(ref, abs=1e-12)


def test_string_labels_and_pos_label():
    y, s = rand_binary(1)
    ys = np.where(y == 1, "bad", "good")
    # 'good' sorts after 'bad', so by default it is the positive class
    assert M.roc_auc(ys, s) == pytest.approx(1 - skm.roc_auc_score(y, s))
    assert M.roc_auc(ys, s, pos_label="bad") == pytest.approx(skm.roc_auc_score(y, s))
    assert M.pr_auc(ys, s, pos_label="bad") == pytest.approx(skm.average_precision_score(y, s))
    # an (N, 2) probability array uses its second column
    proba = np.c_[1 - s / 2, s / 2]
    assert M.roc_auc(y, proba) == pytest.approx(skm.roc_auc_score(y, s))
    # and an (N, 1) sigmoid output is a 1-D score
    assert M.roc_auc(y, s[:, None]) == pytest.approx(skm.roc_auc_score(y, s))
    assert M.binary_report(y, s[:, None] / 2)["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))


def test_all_ties_give_half():
    assert M.roc_auc([0, 1, 0, 1], [0.5] * 4) == 0.5
    assert M.ks_statistic([0, 1, 0, 1], [0.5] * 4) == 0.0


def test_one_class_raises_clearly():
    with pytest.raises(DataError, match="single class.*scikit-learn returns nan"):
        M.roc_auc([1, 1, 1], [0.2, 0.4, 0.3])
    with pytest.raises(DataError, match="single class"):
        M.ks_statistic([0, 0], [0.2, 0.4])
    with pytest.raises(DataError, match="no positive row"):
        M.pr_auc([0, 0, 0], [0.1, 0.2, 0.3])
    # all positive: AP is 1, as in scikit-learn
    assert M.pr_auc([1, 1, 1], [0.1, 0.2, 0.3]) == 1.0
    # log loss of a 1-D probability only needs the positive class to be known
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = skm.log_loss([1, 1], [0.9, 0.8], labels=[0, 1])
    assert M.log_loss([1, 1], [0.9, 0.8]) == pytest.approx(ref)


def test_multiclass_ovr_auc_and_ap():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + np.eye(4)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for avg in ("macro", "weighted"):
        assert M.roc_auc(y, p, average=avg) == pytest.approx(
            skm.roc_auc_score(y, p, multi_class="ovr", average=avg), abs=1e-12
        )
    onehot = np.eye(4)[y]
    assert M.pr_auc(y, p) == pytest.approx(skm.average_precision_score(onehot, p), abs=1e-12)
    assert M.log_loss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-12)
    names = np.array(["a", "b", "c", "d"])[y]
    assert M.log_loss(names, p) == pytest.approx(skm.log_loss(names, p), rel=1e-12)
    with pytest.raises(DataError, match="4 columns but there are 3 classes"):
        M.roc_auc(names, p, labels=["a", "b", "c"])


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_prf_multiclass_match_sklearn(average):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 150)
    yp = np.where(rng.random(150) < 0.6, y, rng.integers(0, 5, 150))  # class 4 only predicted
    for ours, ref in (
        (M.precision, skm.precision_score),
        (M.recall, skm.recall_score),
        (M.f1, skm.f1_score),
    ):
        assert ours(y, yp, average=average) == pytest.approx(
            ref(y, yp, average=average, zero_division=0), abs=1e-12
        )


def test_prf_binary_and_per_class():
    y, s = rand_binary(5)
    yp = (s > 0.6).astype(int)
    for ours, ref in (
        (M.precision, skm.precision_score),
        (M.recall, skm.recall_score),
        (M.f1, skm.f1_score),
    ):
        assert ours(y, yp) == pytest.approx(ref(y, yp), abs=1e-12)
        assert ours(y, yp, pos_label=0) == pytest.approx(ref(y, yp, pos_label=0), abs=1e-12)
        np.testing.assert_allclose(ours(y, yp, average=None), ref(y, yp, average=None))
    ys, yps = np.where(y, "bad", "good"), np.where(yp, "bad", "good")
    assert M.f1(ys, yps, pos_label="bad") == pytest.approx(skm.f1_score(y, yp))
    with pytest.raises(DataError, match="pos_label=1 is not one of"):
        M.f1(ys, yps)
    with pytest.raises(DataError, match="average='binary'"):
        M.precision([0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="average='mean'"):
        M.recall([0, 1], [0, 1], average="mean")


def test_zero_division_edge_cases():
    assert M.precision([0, 0, 1], [0, 0, 0]) == 0.0  # nothing predicted positive
    assert M.recall([0, 0], [0, 1]) == 0.0  # no positive row
    assert M.f1([0, 0], [0, 0]) == 0.0
    assert M.precision([0, 0, 1], [0, 0, 0], zero_division=1.0) == 1.0
    assert M.precision([0, 0, 1], [0, 0, 0]) == skm.precision_score(
        [0, 0, 1], [0, 0, 0], zero_division=0
    )


def test_accuracy_and_confusion_matrix():
    y = np.array(["a", "b", "c", "a", "b"])
    yp = np.array(["a", "c", "c", "b", "b"])
    assert M.accuracy(y, yp) == pytest.approx(0.6)
    w = np.array([1, 2, 1, 1, 1.0])
    assert M.accuracy(y, yp, w) == pytest.approx(skm.accuracy_score(y, yp, sample_weight=w))
    np.testing.assert_array_equal(M.confusion_matrix(y, yp), skm.confusion_matrix(y, yp))
    order = ["c", "a", "b"]
    np.testing.assert_array_equal(
        M.confusion_matrix(y, yp, labels=order), skm.confusion_matrix(y, yp, labels=order)
    )
    np.testing.assert_array_equal(  # labels outside `labels` are not counted
        M.confusion_matrix(y, yp, labels=["a", "b"]), skm.confusion_matrix(y, yp, labels=["a", "b"])
    )
    np.testing.assert_allclose(
        M.confusion_matrix(y, yp, sample_weight=w), skm.confusion_matrix(y, yp, sample_weight=w)
    )
    assert M.confusion_matrix(y, yp).dtype == np.int64
    with pytest.raises(DataError, match="different lengths"):
        M.accuracy([0, 1], [0])


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    t = rng.normal(size=50)
    p = t + rng.normal(scale=0.5, size=50)
    w = rng.random(50)
    assert M.mse(t, p) == pytest.approx(skm.mean_squared_error(t, p))
    assert M.mae(t, p) == pytest.approx(skm.mean_absolute_error(t, p))
    assert M.r2(t, p) == pytest.approx(skm.r2_score(t, p))
    assert M.r2(t, p, w) == pytest.approx(skm.r2_score(t, p, sample_weight=w))
    assert M.mse(t, p, w) == pytest.approx(skm.mean_squared_error(t, p, sample_weight=w))
    T, P = t.reshape(25, 2), p.reshape(25, 2)
    assert M.r2(T, P) == pytest.approx(skm.r2_score(T, P))
    assert M.r2([1, 1, 1], [1, 1, 1]) == 1.0 and M.r2([1, 1, 1], [1, 2, 1]) == 0.0
    assert M.mse(t, p[:, None]) == pytest.approx(skm.mean_squared_error(t, p))


def test_get_metric():
    assert M.get_metric("AUC") is M.roc_auc and M.get_metric("ks") is M.ks_statistic
    assert M.get_metric("log-loss") is M.log_loss
    assert M.get_metric("roc_auc").needs_score and M.get_metric("roc_auc").greater_is_better
    assert not M.get_metric("mse").greater_is_better and not M.get_metric("accuracy").needs_score
    assert M.get_metric("f1_macro")([0, 1, 2], [0, 1, 1]) == pytest.approx(
        skm.f1_score([0, 1, 2], [0, 1, 1], average="macro")
    )
    assert "pr_auc" in M.metric_names()
    with pytest.raises(ValueError, match="unknown metric 'gini'"):
        M.get_metric("gini")


def test_binary_report():
    y, s = rand_binary(9)
    p = np.clip(s / s.max(), 0, 1)
    r = M.binary_report(y, p, threshold=0.5)
    yp = (p >= 0.5).astype(int)
    assert r["n"] == 200
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, yp))
    assert r["precision"] == pytest.approx(skm.precision_score(y, yp))
    assert r["recall"] == pytest.approx(skm.recall_score(y, yp))
    assert r["f1"] == pytest.approx(skm.f1_score(y, yp))
    assert r["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert r["confusion_matrix"] == skm.confusion_matrix(y, yp).tolist()
    json.dumps(r, allow_nan=False)  # plain Python values only
    assert {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "ks",
        "confusion_matrix",
        "n",
    } <= set(r)
    one = M.binary_report([1, 1, 1], [0.9, 0.2, 0.7])
    assert one["roc_auc"] is None and one["ks"] is None and one["recall"] == pytest.approx(2 / 3)
    rs = M.binary_report(np.where(y, "bad", "good"), p, pos_label="bad")
    assert rs["roc_auc"] == r["roc_auc"]


@settings(max_examples=60, deadline=None)
@given(
    y=st.lists(st.integers(0, 1), min_size=2, max_size=40),
    data=st.data(),
)
def test_auc_property_against_sklearn(y, data):
    y = np.array(y)
    if y.min() == y.max():
        return
    s = np.array(data.draw(st.lists(st.integers(0, 5), min_size=len(y), max_size=len(y))), float)
    auc = M.roc_auc(y, s)
    assert auc == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert M.pr_auc(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    # flipping the scores mirrors the AUC; KS never exceeds 1 and is symmetric
    assert M.roc_auc(y, -s) == pytest.approx(1 - auc, abs=1e-12)
    assert 0 <= M.ks_statistic(y, s) <= 1
    assert M.ks_statistic(y, s) == pytest.approx(M.ks_statistic(1 - y, s), abs=1e-12)


@pytest.mark.filterwarnings("ignore:A single label was found")
@settings(max_examples=40, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_confusion_matrix_property(pairs):
    y, yp = (np.array(v) for v in zip(*pairs, strict=True))
    cm = M.confusion_matrix(y, yp)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, yp))
    assert cm.sum() == len(y) and np.trace(cm) / len(y) == pytest.approx(M.accuracy(y, yp))
