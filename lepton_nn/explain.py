"""Floor 7: why did the model say that? Attributions for one prediction, importances overall.

Per row, for an output f (one column of the network's output, chosen by ``target``):

- ``saliency``: |df/dx|, how sensitive f is to each input;
- ``gradient_x_input``: x * df/dx, a first-order share of f per input;
- ``integrated_gradients``: (x - x0) * integral_0^1 df/dx(x0 + a (x - x0)) da, with x0 a baseline,
  the integral by the trapezoid rule over ``steps`` intervals. Completeness: the attributions
  of a row sum to f(x) - f(x0) (up to the quadrature error).

Globally, ``permutation_importance`` shuffles one column at a time and reports how much a metric
drops (mean and standard deviation over ``n_repeats`` shuffles), like scikit-learn's.

Models: a :class:`~lepton_nn.nn.Module` (x is what it takes, (N, ...)), or a
:class:`~lepton_nn.tabular.TabularModel`, which is explained on raw rows, per ORIGINAL column:
the attributions of a column's one-hot and missing-indicator features are summed (completeness
survives the sum), and permutation shuffles whole raw columns. A tabular model's f is its
network's output: the logit (log-odds) of the positive class for a binary task, a class logit
for multiclass, and the prediction in target units for regression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .autograd import Tensor, enable_grad, no_grad
from .errors import LeptonError
from .nn.module import Module

__all__ = [
    "saliency",
    "gradient_x_input",
    "integrated_gradients",
    "permutation_importance",
    "feature_names",
    "explain_report",
    "cli_explain",
]

CHUNK = 8192  # rows per forward/backward pass


# -- what is being explained ---------------------------------------------------------------
def _is_tabular(model: Any) -> bool:
    from .tabular import TabularModel

    return isinstance(model, TabularModel)


class _Target:
    """The network, how raw input becomes its input, and how outputs are read."""

    def __init__(self, model: Any):
        if _is_tabular(model):
            model._check()
            self.net: Module = model.network
            self.tabular = model
            self.groups = list(model.preprocessor.groups_.values())
            self.names = list(model.preprocessor.groups_)
            self.scale = model.target_scale[1] if model.task_ == "regression" else 1.0
        elif isinstance(model, Module):
            self.net, self.tabular, self.groups, self.names, self.scale = (
                model,
                None,
                None,
                None,
                1.0,
            )
        else:
            raise TypeError(
                f"expected a lepton_nn Module or TabularModel, got {type(model).__name__}"
            )

    def features(self, x: Any) -> np.ndarray:
        if self.tabular is not None:
            return self.tabular.transform(x)
        arr = np.asarray(x.data if isinstance(x, Tensor) else x)
        if arr.dtype.kind not in "biuf":
            raise LeptonError(f"explain: numeric input needed, got dtype {arr.dtype}")
        arr = arr.astype(self.net.dtype, copy=False)
        if not self.net.built:  # lazy layers: build them from the data's shape
            self.net.build((None, *arr.shape[1:]))
        return arr

    def per_column(self, a: np.ndarray) -> np.ndarray:
        """(N, F) feature attributions -> (N, C) per original column (groups summed)."""
        if self.groups is None:
            return a
        return np.stack([a[:, idx].sum(axis=1) for idx in self.groups], axis=1)


def feature_names(model: Any, x: Any = None) -> list[str]:
    """Names of the attribution columns: the raw columns of a TabularModel, else ``x0, x1, ...``
    (one per feature of a 2-D ``x``)."""
    if _is_tabular(model):
        return list(model.preprocessor.groups_)
    n = np.shape(x)[1] if x is not None else 0
    return [f"x{j}" for j in range(n)]


class _Frozen:
    """Eval mode and parameters without gradients while explaining; restored afterwards."""

    def __init__(self, net: Module):
        self.net = net

    def __enter__(self) -> _Frozen:
        self.modes = [(m, m.training) for m in self.net.modules()]
        self.params = [(p, p.requires_grad) for p in self.net.parameters()]
        self.net.eval()
        for p, _ in self.params:
            p.requires_grad = False
        return self

    def __exit__(self, *exc: Any) -> None:
        for m, training in self.modes:
            m.training = training
        for p, rg in self.params:
            p.requires_grad = rg


def _outputs(net: Module, X: np.ndarray) -> np.ndarray:
    """The network's output for X as (N, K)."""
    with no_grad():
        parts = [net(X[i : i + CHUNK]).data for i in range(0, max(len(X), 1), CHUNK)]
    out = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return out.reshape(len(X), -1)


def _columns(target: Any, out: np.ndarray) -> np.ndarray:
    """One output column per row: ``target`` (int, or one per row), default the only column or
    each row's largest output (the predicted class)."""
    n, k = out.shape
    if target is None:
        return np.zeros(n, np.intp) if k == 1 else out.argmax(axis=1)
    t = np.broadcast_to(np.asarray(target, dtype=np.intp), (n,))
    if t.size and (t.min() < 0 or t.max() >= k):
        raise LeptonError(f"explain: target {target!r} is not an output column (0..{k - 1})")
    return t


def _grad(net: Module, X: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(df/dX, f) with f[i] = net(X)[i, cols[i]]; X (N, ...) in chunks. Rows are independent
    (eval mode), so the gradient of sum_i f[i] gives every row's own gradient at once."""
    grads, values = [], []
    with enable_grad():
        for i in range(0, len(X), CHUNK):
            xt = Tensor(X[i : i + CHUNK], requires_grad=True)
            out = net(xt)
            out = out.reshape(out.shape[0], -1)
            c = cols[i : i + CHUNK]
            f = out[np.arange(len(c)), c]
            f.sum().backward()
            grads.append(xt.grad)
            values.append(f.data)
    return np.concatenate(grads), np.concatenate(values)


def _prepare(model: Any, x: Any, target: Any) -> tuple[_Target, np.ndarray, np.ndarray]:
    tgt = _Target(model)
    X = tgt.features(x)
    with _Frozen(tgt.net):
        cols = _columns(target, _outputs(tgt.net, X))
    return tgt, X, cols


# -- attributions ----------------------------------------------------------------------------
def saliency(model: Any, x: Any, target: Any = None) -> np.ndarray:
    """|df/dx| per input (N, ...); for a TabularModel, per raw column: sum of |df/dx_j| over
    the column's features, (N, C)."""
    tgt, X, cols = _prepare(model, x, target)
    with _Frozen(tgt.net):
        g, _ = _grad(tgt.net, X, cols)
    return tgt.per_column(np.abs(g) * abs(tgt.scale))


def gradient_x_input(model: Any, x: Any, target: Any = None) -> np.ndarray:
    """x * df/dx per input (N, ...); for a TabularModel summed per raw column, (N, C)."""
    tgt, X, cols = _prepare(model, x, target)
    with _Frozen(tgt.net):
        g, _ = _grad(tgt.net, X, cols)
    return tgt.per_column(X * g * tgt.scale)


def integrated_gradients(
    model: Any,
    x: Any,
    baseline: Any = None,
    steps: int = 50,
    target: Any = None,
    return_delta: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Integrated gradients of f = output column ``target`` from ``baseline`` to ``x``.

    A_j = (x_j - x0_j) * sum_k w_k df/dx_j(x0 + a_k (x - x0)),  a_k = k / steps (k = 0..steps),
    w_k = 1 / steps with the two ends halved (the trapezoid rule). Shapes: x (N, ...) -> A
    like x; a TabularModel takes raw rows and returns (N, C), one column per raw column.

    ``baseline``: x0, default zeros (for a TabularModel: the all-zero feature row, i.e. every
    numeric column at its training mean and no category set); an array broadcast to x's shape,
    or for a TabularModel raw rows (one, or one per row). ``target``: the output column (int or
    one per row; default the only column, or each row's predicted class).
    ``return_delta=True`` also returns sum(A) - (f(x) - f(x0)) per row, the completeness gap.
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    steps = int(steps)
    tgt, X, cols = _prepare(model, x, target)
    if baseline is None:
        X0 = np.zeros_like(X)
    elif tgt.tabular is not None:
        X0 = np.broadcast_to(tgt.features(baseline), X.shape)
    else:
        X0 = np.broadcast_to(np.asarray(baseline, dtype=X.dtype), X.shape)
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=X.dtype)
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] *= 0.5
    lead = (1,) * (X.ndim - 1)
    avg = np.empty(X.shape, np.float64)  # the weighted mean gradient along each row's path
    f_end = np.empty((2, len(X)), np.float64)  # f(x0), f(x)
    block = max(1, CHUNK // (steps + 1))  # rows whose paths fit one pass
    with _Frozen(tgt.net):
        for i in range(0, len(X), block):
            x, x0, c = X[i : i + block], X0[i : i + block], cols[i : i + block]
            # the path points of these rows, point-major: (S+1, rows, ...)
            path = x0[None] + alphas.reshape(-1, 1, *lead) * (x - x0)[None]
            g, f = _grad(tgt.net, path.reshape(-1, *X.shape[1:]), np.tile(c, steps + 1))
            g = g.reshape(steps + 1, *x.shape).astype(np.float64)
            avg[i : i + block] = np.tensordot(weights, g, axes=1)
            f = f.reshape(steps + 1, len(x))
            f_end[:, i : i + block] = f[0], f[-1]
    attr = tgt.per_column((X - X0) * avg * tgt.scale)
    if not return_delta:
        return attr
    delta = attr.reshape(len(X), -1).sum(axis=1) - (f_end[1] - f_end[0]) * tgt.scale
    return attr, delta


# -- permutation importance ----------------------------------------------------------------------
def _is_classifier(tgt: _Target, out: np.ndarray, y: np.ndarray) -> bool:
    """A tabular classifier; a Module with several outputs, or one output and 0/1 targets."""
    if tgt.tabular is not None:
        return tgt.tabular.task_ != "regression"
    if out.shape[1] > 1:
        return True
    return y.dtype.kind in "biuf" and bool(np.isin(np.unique(y), (0, 1)).all())


def _default_metric(tgt: _Target, out: np.ndarray, y: np.ndarray) -> str:
    if not _is_classifier(tgt, out, y):
        return "r2"
    return "roc_auc" if out.shape[1] == 1 else "accuracy"


def _predictions(tgt: _Target, out: np.ndarray, needs_score: bool, clf: bool) -> np.ndarray:
    """What a metric reads from the network outputs (N, K): predicted values (regression),
    scores (probabilities; a Module's raw outputs) or labels (0/1, argmax)."""
    tab = tgt.tabular
    if tab is not None and tab.task_ == "regression":
        mu, sd = tab.target_scale
        return out[:, 0].astype(np.float64) * sd + mu
    if not clf:
        return out[:, 0] if out.shape[1] == 1 else out
    if tab is not None and tab.task_ == "binary":
        p = 1.0 / (1.0 + np.exp(-out[:, 0].astype(np.float64)))
        return p if needs_score else (p >= tab.threshold).astype(np.int64)
    if out.shape[1] == 1:  # a Module's single output: read as a logit for labels
        return out[:, 0] if needs_score else (out[:, 0] > 0).astype(np.int64)
    if needs_score:
        if tab is None:
            return out
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return out.argmax(axis=1)


def permutation_importance(
    model: Any,
    X: Any,
    y: Any = None,
    metric: str | Callable[[np.ndarray, np.ndarray], float] | None = None,
    n_repeats: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """How much ``metric`` drops when one column's values are shuffled across rows.

    importance[j, r] = score(X, y) - score(X with column j permuted, y), for r < n_repeats;
    returns ``{"importances_mean": (C,), "importances_std": (C,), "importances": (C, R),
    "baseline_score": float, "metric": name, "feature_names": [...]}``.

    ``metric``: a name known to :func:`lepton_nn.metrics.get_metric` (``"roc_auc"``,
    ``"accuracy"``, ``"r2"``, ``"log_loss"``, ...; a lower-is-better metric is negated so a
    drop is always a loss of quality) or ``fn(y_true, y_pred) -> float`` (higher is better).
    A classifier's metric gets scores (probabilities; a Module's raw outputs), or labels when
    ``fn.needs_score`` is False; a regressor's gets the predicted values. Default: ROC AUC for a
    binary model (one output and 0/1 targets), accuracy for several outputs, R^2 otherwise.

    A TabularModel takes raw rows (``y`` raw labels, or None when ``X`` is a Table with its
    target) and shuffles raw columns; labels are encoded so that 1 is the positive class. A
    Module takes a 2-D feature array and numeric targets.
    """
    from . import metrics as M

    tgt = _Target(model)
    if y is None:
        y = getattr(X, "target", None)
        if y is None:
            raise LeptonError("permutation_importance: give y (or a Table with a target)")
    Xf = tgt.features(X)
    if Xf.ndim != 2:
        raise LeptonError(f"permutation_importance takes 2-D features, got shape {Xf.shape}")
    y = np.asarray(y)
    if tgt.tabular is not None and tgt.tabular.labels is not None:
        y = tgt.tabular.labels.transform(y)
    groups = tgt.groups or [[j] for j in range(Xf.shape[1])]
    names = tgt.names or [f"x{j}" for j in range(Xf.shape[1])]
    if len(y) != len(Xf):
        raise LeptonError(f"permutation_importance: {len(Xf)} rows but {len(y)} targets")

    with _Frozen(tgt.net):
        out = _outputs(tgt.net, Xf)
        if metric is None:
            metric = _default_metric(tgt, out, y)
        if isinstance(metric, str):
            name, fn = metric, M.get_metric(metric)
        else:
            name, fn = getattr(metric, "__name__", "metric"), metric
        needs_score = getattr(fn, "needs_score", True)
        clf = _is_classifier(tgt, out, y)
        sign = 1.0 if getattr(fn, "greater_is_better", True) else -1.0

        def score(o: np.ndarray) -> float:
            return sign * float(fn(y, _predictions(tgt, o, needs_score, clf)))

        base = score(out)
        rng = np.random.default_rng(seed)
        imp = np.empty((len(groups), int(n_repeats)))
        Xp = Xf.copy()
        for j, idx in enumerate(groups):
            for r in range(int(n_repeats)):
                Xp[:, idx] = Xf[np.ix_(rng.permutation(len(Xf)), idx)]
                imp[j, r] = base - score(_outputs(tgt.net, Xp))
            Xp[:, idx] = Xf[:, idx]
    return {
        "importances_mean": imp.mean(axis=1),
        "importances_std": imp.std(axis=1),
        "importances": imp,
        "baseline_score": sign * base,
        "metric": name,
        "feature_names": names,
    }


# -- the command: lepton-nn explain MODEL.lnn DATA.csv ------------------------------------------
def _value_text(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "(missing)"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def _table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()
        for r in rows
    ]


def explain_report(
    model: Any,
    table: Any,
    row: int = 0,
    top: int = 10,
    steps: int = 50,
    n_repeats: int = 5,
    seed: int = 0,
) -> str:
    """The text ``lepton-nn explain`` prints: a row's prediction and its top attributions (IG,
    with sign), then global permutation importances when ``table`` has the target."""
    if not _is_tabular(model):
        raise LeptonError("explain needs a tabular model file (made by lepton-nn train)")
    n = len(table)
    if not 0 <= row < n:
        raise LeptonError(f"--row {row} is out of range: the data has {n} rows (0..{n - 1})")
    one = table.take([row])
    task = model.task_
    lines = []
    out = model.decision_function(one)
    if task == "binary":
        p = float(model.predict_proba(one)[0, 1])
        pos = model.labels.positive_
        label = model.predict(one)[0]
        lines.append(
            f"row {row}: predicted {label!r} (P({pos}) = {p:.3f}, threshold {model.threshold:g})"
        )
        what, moves, target, f_row = f"the log-odds of {pos!r}", f"P({pos})", None, float(out[0])
    elif task == "multiclass":
        k = int(np.argmax(out[0]))
        label = model.classes_[k]
        p = float(model.predict_proba(one)[0, k])
        lines.append(f"row {row}: predicted {label!r} (P = {p:.3f})")
        what, moves, target, f_row = f"the logit of {label!r}", f"P({label})", k, float(out[0, k])
    else:
        f_row = float(model.predict(one)[0])
        lines.append(f"row {row}: predicted {f_row:.6g}")
        what, moves, target = "the prediction", "the prediction", None
    attr, delta = integrated_gradients(model, one, steps=steps, target=target, return_delta=True)
    a = attr[0]
    change = float(a.sum() - delta[0])  # f(row) - f(baseline), exactly
    names = feature_names(model)
    order = np.argsort(-np.abs(a), kind="stable")[: max(int(top), 1)]
    lines += [
        "",
        f"why: integrated gradients of {what}, from the all-zero feature baseline ({steps} steps)",
        f"  f(row) = {f_row:+.4f}, f(baseline) = {f_row - change:+.4f}, difference "
        f"{change:+.4f}; the attributions sum to {a.sum():+.4f} (completeness)",
    ]
    rows = [("feature", "value", "attribution", "")]
    for j in order:
        effect = "raises" if a[j] > 0 else "lowers" if a[j] < 0 else ""
        rows.append(
            (
                names[j],
                _value_text(one.data[names[j]][0]),
                f"{a[j]:+.4f}",
                f"{effect} {moves}" if effect else "",
            )
        )
    lines.extend(_table(rows, right=(2,)))
    lines.append("")
    if getattr(table, "target", None) is None:
        lines.append(
            "global importances skipped: the data has no target column "
            "(pass --target COLUMN with labelled rows)"
        )
        return "\n".join(lines) + "\n"
    res = permutation_importance(model, table, n_repeats=n_repeats, seed=seed)
    lines += [
        f"global permutation importance on {n} rows: the drop in {res['metric']} "
        f"(now {res['baseline_score']:.4f})",
        f"  when one column is shuffled; mean and std over {n_repeats} shuffles",
    ]
    order = np.argsort(-res["importances_mean"], kind="stable")
    rows = [("feature", "importance", "std")]
    for j in order:
        rows.append(
            (
                res["feature_names"][j],
                f"{res['importances_mean'][j]:+.4f}",
                f"{res['importances_std'][j]:.4f}",
            )
        )
    lines.extend(_table(rows, right=(1, 2)))
    return "\n".join(lines) + "\n"


def cli_explain(args: Any) -> int:
    """``lepton-nn explain MODEL DATA [--row N] [--target COL] [--top K]``."""
    from . import io
    from .data import read_csv

    model = io.load(args.model)
    if not _is_tabular(model):
        raise LeptonError(f"{args.model}: explain needs a tabular model file (lepton-nn train)")
    table = read_csv(args.data)
    inputs = set(model.preprocessor.feature_names_in)
    target = args.target
    note = None
    if target is None:
        extra = [c for c in table.columns if c not in inputs]
        target = extra[0] if len(extra) == 1 else None
    if target is not None and target not in table.columns:
        note = f"note: no column {target!r} in {args.data}"
        target = None
    if target is not None:
        table = read_csv(args.data, target=target)
    if not 0 <= args.row < len(table):
        raise LeptonError(f"--row {args.row} is out of range: {args.data} has {len(table)} rows")
    print(f"model {args.model} ({model.task_}); data {args.data} ({len(table)} rows)")
    if note:
        print(note)
    print(explain_report(model, table, row=args.row, top=args.top, steps=args.steps), end="")
    return 0
