"""Hyperparameter search: ``GridSearch`` (every combination) and ``RandomSearch`` (sampled).

Both cross-validate each configuration on the same folds (see :mod:`.validation` for
``build_fn``, seeds and executors), rank them by ``scoring``, and refit the best one on all
the data::

    def build(lr=1e-3, hidden=16, dropout=0.0, weight_decay=0.0):   # module level
        model = Sequential([Dense(hidden, "relu"), Dropout(dropout), Dense(1)])
        return Trainer(model, "bce", "adam", lr=lr, weight_decay=weight_decay)

    search = GridSearch(build, {"lr": [1e-3, 1e-2], "hidden": [16, 64], "epochs": [20]})
    results = search.fit(X, y)          # one row per configuration
    print(results.table())
    search.best_params_, search.best_score_, search.best_model_
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from ..backend.threads import check_threads
from ..random import get_seed, rng, set_seed
from .validation import (
    evaluate_configs,
    greater_is_better,
    split_params,
    summarize,
    trial_seed,
)

__all__ = [
    "GridSearch",
    "RandomSearch",
    "ResultsTable",
    "uniform",
    "loguniform",
    "randint",
    "choice",
]


# -- distributions for RandomSearch -----------------------------------------------------------


class _Distribution:
    def sample(self, gen: np.random.Generator) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class uniform(_Distribution):  # noqa: N801 - reads like scipy.stats
    """Uniform on [low, high)."""

    def __init__(self, low: float, high: float):
        if not high > low:
            raise ValueError(f"uniform needs high > low, got {low}, {high}")
        self.low, self.high = float(low), float(high)

    def sample(self, gen: np.random.Generator) -> float:
        return float(gen.uniform(self.low, self.high))

    def __repr__(self) -> str:
        return f"uniform({self.low}, {self.high})"


class loguniform(_Distribution):  # noqa: N801
    """Log-uniform on [low, high): right for learning rates and weight decay."""

    def __init__(self, low: float, high: float):
        if not 0 < low < high:
            raise ValueError(f"loguniform needs 0 < low < high, got {low}, {high}")
        self.low, self.high = float(low), float(high)

    def sample(self, gen: np.random.Generator) -> float:
        return float(math.exp(gen.uniform(math.log(self.low), math.log(self.high))))

    def __repr__(self) -> str:
        return f"loguniform({self.low}, {self.high})"


class randint(_Distribution):  # noqa: N801
    """Integers in [low, high) (high excluded, like NumPy)."""

    def __init__(self, low: int, high: int):
        if not high > low:
            raise ValueError(f"randint needs high > low, got {low}, {high}")
        self.low, self.high = int(low), int(high)

    def sample(self, gen: np.random.Generator) -> int:
        return int(gen.integers(self.low, self.high))

    def __repr__(self) -> str:
        return f"randint({self.low}, {self.high})"


class choice(_Distribution):  # noqa: N801
    """One of ``values``, equally likely (a plain list means the same)."""

    def __init__(self, values: Sequence[Any]):
        self.values = list(values)
        if not self.values:
            raise ValueError("choice needs at least one value")

    def sample(self, gen: np.random.Generator) -> Any:
        return _plain(self.values[int(gen.integers(len(self.values)))])

    def __repr__(self) -> str:
        return f"choice({self.values!r})"


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _sample(dist: Any, gen: np.random.Generator) -> Any:
    """A value from: one of ours, a list/tuple (uniform choice), a ``scipy.stats`` frozen
    distribution (``rvs``), a function ``fn(rng)``, or a constant."""
    if isinstance(dist, _Distribution):
        return dist.sample(gen)
    if isinstance(dist, (list, tuple)):
        return choice(dist).sample(gen)
    if hasattr(dist, "rvs"):
        return _plain(dist.rvs(random_state=gen))
    if callable(dist):
        return _plain(dist(gen))
    return dist


# -- results ---------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class ResultsTable(list):
    """The search results: one dict per configuration, in trial order.

    Keys: ``trial``, ``params``, ``rank`` (1 = best), ``mean`` and ``std`` of the scoring
    metric across folds, ``scores`` (per fold), ``mean_<m>``/``std_<m>`` for every other
    score (``loss`` included), ``fit_time`` (seconds, all folds), ``epochs`` (mean per fold).
    """

    scoring: str = ""

    def best(self) -> dict[str, Any]:
        return min(self, key=lambda r: r["rank"])

    def table(self, top: int | None = None) -> str:
        """A text table sorted by rank (``top``: only the best ones)."""
        rows = sorted(self, key=lambda r: r["rank"])[:top]
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r["params"] if k not in keys]
        head = ["rank", *keys, f"{self.scoring} mean", "std", "epochs run", "time (s)"]
        body = [
            [
                str(r["rank"]),
                *[_fmt(r["params"].get(k, "")) for k in keys],
                f"{r['mean']:.4f}",
                f"{r['std']:.4f}",
                f"{r['epochs']:.1f}",
                f"{r['fit_time']:.2f}",
            ]
            for r in rows
        ]
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in body]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# -- the searches ----------------------------------------------------------------------------


class _Search:
    """Shared by GridSearch and RandomSearch: cross-validate configs, rank, refit the best."""

    def __init__(
        self,
        build_fn: Callable[..., Any],
        cv: Any = 5,
        scoring: str | None = None,
        *,
        metrics: Sequence[str] | None = None,
        fit_kwargs: Mapping[str, Any] | None = None,
        stratified: bool = True,
        seed: int = 0,
        executor: Executor | str | None = None,
        n_jobs: int | None = None,
        refit: bool = True,
    ):
        self.build_fn, self.cv, self.scoring = build_fn, cv, scoring
        self.metrics = None if metrics is None else list(metrics)
        self.fit_kwargs = dict(fit_kwargs or {})
        self.stratified, self.seed = stratified, int(seed)
        self.executor, self.refit = executor, refit
        self.n_jobs = check_threads(n_jobs, "n_jobs")  # an int >= 1, or None: one per CPU
        self.results_: ResultsTable | None = None
        self.best_params_: dict[str, Any] | None = None
        self.best_score_: float | None = None
        self.best_index_: int | None = None
        self.best_trainer_ = None

    def configurations(self) -> list[dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def best_model_(self):
        """The best configuration's model, refit on all the data."""
        return None if self.best_trainer_ is None else self.best_trainer_.model

    def fit(self, X: Any, y: Any) -> ResultsTable:
        """Run the search on ``(X, y)``; returns (and keeps as ``results_``) the table."""
        configs = self.configurations()
        if not configs:
            raise ValueError("the search has no configuration to try")
        per_config, _ = evaluate_configs(
            self.build_fn,
            configs,
            X,
            y,
            self.cv,
            self.fit_kwargs,
            self.metrics,
            self.scoring,
            self.stratified,
            self.seed,
            self.executor,
            self.n_jobs,
        )
        scoring = per_config[0][0]["scoring"]
        up = greater_is_better(scoring)
        table = ResultsTable()
        table.scoring = scoring
        for i, (params, folds) in enumerate(zip(configs, per_config)):
            s = summarize(folds)
            row: dict[str, Any] = {
                "trial": i,
                "params": params,
                "rank": 0,
                "mean": s["mean"][scoring],
                "std": s["std"][scoring],
                "scores": [f[scoring] for f in s["folds"]],
            }
            for name in s["mean"]:
                if name != scoring:
                    row[f"mean_{name}"], row[f"std_{name}"] = s["mean"][name], s["std"][name]
            row["fit_time"] = s["fit_time"]
            row["epochs"] = float(np.mean([f["epochs"] for f in s["folds"]]))
            table.append(row)

        def key(r: dict[str, Any]) -> tuple:
            m = r["mean"]
            if not math.isfinite(m):  # undefined or diverged: last
                return (1, 0.0, r["trial"])
            return (0, -m if up else m, r["trial"])  # ties: the earlier trial first

        for rank, r in enumerate(sorted(table, key=key), start=1):
            r["rank"] = rank
        best = table.best()
        self.results_ = table
        self.best_index_ = best["trial"]
        self.best_params_ = dict(best["params"])
        self.best_score_ = best["mean"]
        self.scoring_ = scoring
        if self.refit:
            self.best_trainer_ = self._refit(X, y)
        return table

    def _refit(self, X: Any, y: Any):
        build, fit = split_params(self.best_params_)
        seed = trial_seed(self.seed, self.best_index_, None)
        state = rng().bit_generator.state, get_seed()
        try:
            set_seed(seed)
            trainer = self.build_fn(**build)
            trainer.fit(
                np.asarray(X),
                np.asarray(y),
                **{"verbose": 0, **self.fit_kwargs, **fit, "seed": seed},
            )
        finally:
            set_seed(state[1])
            rng().bit_generator.state = state[0]
        return trainer

    def table(self, top: int | None = None) -> str:
        if self.results_ is None:
            raise RuntimeError("call fit() first")
        return self.results_.table(top)


class GridSearch(_Search):
    """Every combination of ``param_grid`` (a dict of lists, or a list of such dicts).

    ``scoring``: a metric name (``"roc_auc"``, ``"accuracy"``, ``"f1"``, ``"ks"``, ``"mse"``...)
    or ``"loss"``; default ROC AUC (binary), accuracy (multiclass), MSE (regression). Other
    arguments as :func:`~lepton_nn.tuning.cross_validate`. After ``fit``: ``results_``,
    ``best_params_``, ``best_score_``, ``best_index_``, ``best_trainer_``, ``best_model_``.
    """

    def __init__(
        self,
        build_fn: Callable[..., Any],
        param_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
        cv: Any = 5,
        scoring: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(build_fn, cv, scoring, **kwargs)
        grids = [param_grid] if isinstance(param_grid, Mapping) else list(param_grid)
        for g in grids:
            for k, v in g.items():
                if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
                    raise TypeError(f"param_grid[{k!r}] must be a list of values, got {v!r}")
        self.param_grid = grids

    def configurations(self) -> list[dict[str, Any]]:
        out = []
        for g in self.param_grid:
            keys = list(g)
            for values in itertools.product(*(g[k] for k in keys)):
                out.append({k: _plain(v) for k, v in zip(keys, values)})
        return out


class RandomSearch(_Search):
    """``n_trials`` configurations drawn from ``param_distributions``.

    Each value is a list (uniform choice), :class:`uniform`, :class:`loguniform`,
    :class:`randint`, :class:`choice`, a ``scipy.stats`` frozen distribution, a function
    ``fn(rng) -> value``, or a constant. The draws depend only on ``seed``.
    """

    def __init__(
        self,
        build_fn: Callable[..., Any],
        param_distributions: Mapping[str, Any],
        n_trials: int = 10,
        cv: Any = 5,
        scoring: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(build_fn, cv, scoring, **kwargs)
        if int(n_trials) < 1:
            raise ValueError(f"n_trials must be >= 1, got {n_trials}")
        self.param_distributions = dict(param_distributions)
        self.n_trials = int(n_trials)

    def configurations(self) -> list[dict[str, Any]]:
        # a stream of its own, apart from the fold and trial seeds
        gen = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5EA2C4]))
        return [
            {k: _sample(d, gen) for k, d in self.param_distributions.items()}
            for _ in range(self.n_trials)
        ]
