"""``calibrate(model, X, y, method)``: a copy of a tabular classifier whose probabilities are
calibrated on held-out rows (rows the network was not trained on).

With z the network's logit (binary), fitted by maximum likelihood in float64::

    platt        p = sigmoid(a z + b)         (a, b): logistic regression of y on z (Newton)
    temperature  p = sigmoid(z / T)           binary: the same with b = 0;
                 p = softmax(z / T)           multiclass: T minimizing the log loss (golden
                                              section on log T)
    isotonic     p = the non-decreasing step function of z closest to y in squared error
                 (pool-adjacent-violators; ties in z averaged first), linear between the
                 knots and constant beyond them (as scikit-learn's IsotonicRegression with
                 out_of_bounds="clip")

The map is saved in the ``.lnn`` file (``manifest["calibration"]``, checked by the one
validator) and applied by both loaders through :mod:`lepton_nn.runtime.calibration`. The
decision threshold is left as it is (it now applies to calibrated probabilities).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from lepton_nn import metrics
from lepton_nn.errors import DataError
from lepton_nn.runtime.calibration import MAX_POINTS, Calibration, parse_calibration

from . import card as model_card

__all__ = ["calibrate", "fit_isotonic", "fit_platt", "fit_temperature", "reliability_table"]

reliability_table = metrics.reliability_table


def _sigmoid(s: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * s))  # = 1 / (1 + exp(-s)), without overflow


def fit_platt(z: np.ndarray, y: np.ndarray, intercept: bool = True) -> tuple[float, float]:
    """(a, b) maximizing sum log-likelihood of y ~ Bernoulli(sigmoid(a z + b)) (Newton)."""
    z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    X = np.stack([z, np.ones_like(z)], axis=1) if intercept else z[:, None]
    w = np.zeros(X.shape[1])
    w[0] = 1.0

    def nll(w):
        s = X @ w
        return float(np.sum(np.logaddexp(0.0, s) - y * s))

    loss = nll(w)
    for _ in range(100):
        p = _sigmoid(X @ w)
        grad = X.T @ (p - y)
        hess = (X * (p * (1 - p))[:, None]).T @ X + 1e-12 * np.eye(X.shape[1])
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-10 and nll(w - t * step) > loss:
            t *= 0.5  # backtracking: a separable set has no finite optimum
        w_new = w - t * step
        new = nll(w_new)
        done = abs(loss - new) <= 1e-12 * max(1.0, abs(loss))
        w, loss = w_new, new
        if done or np.abs(grad).max() < 1e-10:
            break
    return float(w[0]), float(w[1]) if intercept else 0.0


def fit_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """T > 0 minimizing the log loss of sigmoid(z / T) (z: (N,)) or softmax(z / T) ((N, C))."""
    z = np.asarray(z, np.float64)
    if z.ndim == 1:
        a, _ = fit_platt(z, y, intercept=False)
        if not a > 0:
            raise DataError("calibrate: the scores are anti-correlated with the labels")
        return 1.0 / a
    codes = np.asarray(y, np.int64)

    def nll(log_t: float) -> float:
        s = z / math.exp(log_t)
        s = s - s.max(axis=1, keepdims=True)
        return float(np.sum(np.log(np.exp(s).sum(axis=1)) - s[np.arange(len(s)), codes]))

    lo, hi = math.log(1e-3), math.log(1e3)
    g = (math.sqrt(5) - 1) / 2
    for _ in range(120):  # golden section; the loss is unimodal in log T
        m1, m2 = hi - g * (hi - lo), lo + g * (hi - lo)
        if nll(m1) < nll(m2):
            hi = m2
        else:
            lo = m1
    return math.exp((lo + hi) / 2)


def fit_isotonic(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x strictly increasing, y non-decreasing) of the isotonic fit of y on z."""
    z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    order = np.argsort(z, kind="mergesort")
    zs, ys = z[order], y[order]
    ux, start, counts = np.unique(zs, return_index=True, return_counts=True)
    sums = np.add.reduceat(ys, start)
    # pool adjacent violators over the tie groups: blocks of (sum, weight, first, last)
    bs, bw, bf, bl = [], [], [], []
    for i in range(len(ux)):
        s, w, f = float(sums[i]), float(counts[i]), i
        while bs and bs[-1] / bw[-1] >= s / w:
            s, w, f = s + bs.pop(), w + bw.pop(), bf.pop()
            bl.pop()
        bs.append(s), bw.append(w), bf.append(f), bl.append(i)
    xs, vs = [], []
    for s, w, f, last in zip(bs, bw, bf, bl):
        for j in (f, last) if last != f else (f,):
            xs.append(ux[j])
            vs.append(s / w)
    x, v = np.array(xs), np.clip(np.array(vs), 0.0, 1.0)
    keep = np.ones(len(x), bool)  # drop knots inside a flat run: the same function
    keep[1:-1] = ~((v[1:-1] == v[:-2]) & (v[1:-1] == v[2:]))
    x, v = x[keep], v[keep]
    if len(x) > MAX_POINTS:
        raise DataError(f"calibrate: the isotonic fit has {len(x)} knots (> {MAX_POINTS})")
    return x, v


def calibrate(model: Any, X: Any, y: Any = None, method: str = "platt") -> Any:
    """A copy of ``model`` (a fitted classifier ``TabularModel``) with calibrated probabilities.

    ``X``, ``y``: held-out raw rows and labels (or a Table with its target) that the network
    was not trained on. ``method``: ``"platt"``, ``"isotonic"`` (binary) or ``"temperature"``
    (binary or multiclass). The copy's card gets a Calibration section (Brier score and ECE
    on these rows before and after: in-sample for the map, so check them on other rows).
    """
    if method not in ("platt", "isotonic", "temperature"):
        raise ValueError(f"method must be 'platt', 'isotonic' or 'temperature', got {method!r}")
    task = getattr(model, "task_", None)
    if task not in ("binary", "multiclass"):
        raise DataError(f"calibrate: needs a fitted classifier TabularModel (task {task!r})")
    X, y = model._split_target(X, y)
    codes = model.labels.transform(y)
    z = model.decision_function(X).astype(np.float64)
    if len(codes) < 2 or len(np.unique(codes)) < 2:
        raise DataError("calibrate: the held-out rows need both classes")
    if method == "platt":
        if task != "binary":
            raise DataError("calibrate: platt is for binary models; use temperature")
        a, b = fit_platt(z, codes)
        if not a > 0:
            raise DataError("calibrate: the scores are anti-correlated with the labels")
        cal = Calibration("platt", {"a": a, "b": b})
    elif method == "temperature":
        cal = Calibration("temperature", {"t": fit_temperature(z, codes)})
    else:
        if task != "binary":
            raise DataError("calibrate: isotonic is for binary models; use temperature")
        cal = Calibration("isotonic", dict(zip(("x", "y"), fit_isotonic(z, codes))))
    config = parse_calibration(cal.to_config(), task).to_config()  # what the file will hold
    new = copy.copy(model)
    before = model.predict_proba(X)
    new.calibration = config
    after = new.predict_proba(X)
    facts: dict[str, Any] = {"method": method, "held_out_rows": len(codes)}
    if task == "binary":
        for tag, p in (("before", before[:, 1]), ("after", after[:, 1])):
            facts[f"brier_{tag}"] = metrics.brier_score(codes, p)
            facts[f"ece_{tag}"] = metrics.expected_calibration_error(codes, p)
    if method != "isotonic":
        facts.update({k: v for k, v in config.items() if k != "method"})
    model_card.set_section(new, "Calibration", facts=facts)
    return new
