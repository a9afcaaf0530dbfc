"""Successive halving over epochs: a large search for a fraction of the grid's cost.

Rung 0 cross-validates every configuration of a :class:`GridSearch` or :class:`RandomSearch`
with ``min_epochs``; the best ``1/eta`` of them go on to rung 1 with ``eta`` times the
epochs, and so on up to ``max_epochs`` (Jamieson & Talwalkar, 2016)::

    epochs at rung k = min(min_epochs * eta**k, max_epochs)
    configurations at rung k = max(1, n // eta**k)

Each rung trains its configurations from scratch with the rung's epochs and the trial's own
seeds, so a rung's scores equal a grid search run at those epochs (on any executor); early
stopping callbacks in ``fit_kwargs`` still apply. With ``n`` configurations and ``R =
max_epochs``, the grid costs ``n * R`` epochs per fold; halving about ``n * min_epochs *
(rungs)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .validation import evaluate_configs, greater_is_better, summarize

__all__ = ["SuccessiveHalving"]


class SuccessiveHalving:
    """Successive halving of ``search``'s configurations (see the module docstring).

    After :meth:`fit`: ``rungs_`` (per rung: epochs, trials and their mean scores),
    ``trials_run`` (configuration-rungs evaluated), ``epochs_spent`` (epochs trained, all
    folds), ``best_params_`` (with ``epochs``), ``best_score_``, and, with ``search.refit``,
    ``best_trainer_`` / ``best_model_`` refit on all the data at the final rung's epochs.
    """

    def __init__(
        self,
        search: Any,
        min_epochs: int = 2,
        max_epochs: int = 30,
        eta: int = 3,
        on_rung: Any = None,
    ):
        if not 1 <= int(min_epochs) <= int(max_epochs):
            raise ValueError(f"need 1 <= min_epochs <= max_epochs, got {min_epochs}, {max_epochs}")
        if int(eta) < 2:
            raise ValueError(f"eta must be >= 2, got {eta}")
        self.search, self.eta = search, int(eta)
        self.min_epochs, self.max_epochs = int(min_epochs), int(max_epochs)
        self.on_rung = on_rung  # on_rung(k, epochs, configs) before rung k runs (progress)

    @property
    def best_model_(self):
        return self.search.best_model_

    @property
    def best_trainer_(self):
        return self.search.best_trainer_

    def fit(self, X: Any, y: Any) -> list[dict[str, Any]]:
        """Run the rungs; returns ``rungs_``."""
        s = self.search
        configs = [{**c, "epochs": self.min_epochs} for c in s.configurations()]
        if not configs:
            raise ValueError("the search has no configuration to try")
        alive = list(range(len(configs)))
        self.rungs_: list[dict[str, Any]] = []
        self.trials_run, self.epochs_spent = 0, 0
        epochs = self.min_epochs
        while True:
            run = [{**configs[t], "epochs": epochs} for t in alive]
            if self.on_rung is not None:
                self.on_rung(len(self.rungs_), epochs, run)
            per_config, _ = evaluate_configs(
                s.build_fn, run, X, y, s.cv, s.fit_kwargs, s.metrics, s.scoring,
                s.stratified, s.seed, s.executor, s.n_jobs, trial_ids=alive,
            )  # fmt: skip
            scoring = per_config[0][0]["scoring"]
            means = [summarize(folds)["mean"][scoring] for folds in per_config]
            self.trials_run += len(alive)
            self.epochs_spent += sum(f["epochs"] for folds in per_config for f in folds)
            self.rungs_.append({"epochs": epochs, "trials": list(alive), "scores": means})
            self.n_folds_ = len(per_config[0])
            order = _ranked(alive, means, greater_is_better(scoring))
            if epochs >= self.max_epochs or len(alive) == 1:
                break
            alive = sorted(order[: max(1, len(alive) // self.eta)])
            epochs = min(epochs * self.eta, self.max_epochs)
        best = order[0]
        self.scoring_ = scoring
        self.best_index_ = best
        self.best_params_ = {**configs[best], "epochs": epochs}
        self.best_score_ = means[alive.index(best)]
        if s.refit:  # the search's own refit, at the final rung's epochs
            s.best_params_, s.best_index_ = dict(self.best_params_), best
            s.best_trainer_ = s._refit(X, y)
        return self.rungs_

    def summary(self) -> str:
        """One line per rung, then the cost against the full grid at ``max_epochs``."""
        lines = [
            f"rung {k}: {len(r['trials'])} configurations x {r['epochs']} epochs, best "
            f"{self.scoring_} {_best(r['scores'], greater_is_better(self.scoring_)):.4f}"
            for k, r in enumerate(self.rungs_)
        ]
        grid = len(self.rungs_[0]["trials"]) * self.max_epochs * self.n_folds_
        lines.append(
            f"{self.trials_run} trials, {self.epochs_spent} epochs spent "
            f"({self.epochs_spent / grid:.0%} of the full grid's {grid} at {self.max_epochs} "
            "epochs)"
        )
        return "\n".join(lines)


def _ranked(trials: list[int], means: list[float], up: bool) -> list[int]:
    """Trials best first; undefined scores last, ties to the earlier trial."""

    def key(i: int) -> tuple:
        m = means[i]
        if not math.isfinite(m):
            return (1, 0.0, trials[i])
        return (0, -m if up else m, trials[i])

    return [trials[i] for i in sorted(range(len(trials)), key=key)]


def _best(scores: list[float], up: bool) -> float:
    finite = [v for v in scores if math.isfinite(v)]
    if not finite:
        return float("nan")
    return float(np.max(finite) if up else np.min(finite))
