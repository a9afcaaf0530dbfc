"""Scorecard scaling: probabilities to points, as in scorecard practice.

With odds = P(good) / P(bad) (good: not the adverse class), ``pdo`` the points that double
the odds, and ``base_points`` scored at ``base_odds``::

    factor = pdo / ln 2
    offset = base_points - factor * ln(base_odds)
    points = offset + factor * ln(odds)

Defaults: 600 points at odds 50:1, 20 points to double the odds. The inverse,
:meth:`Scorecard.probability`, gives P(bad) back from points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Scorecard"]


@dataclass(frozen=True)
class Scorecard:
    pdo: float = 20.0
    base_points: float = 600.0
    base_odds: float = 50.0

    def __post_init__(self) -> None:
        if not (self.pdo > 0 and self.base_odds > 0 and math.isfinite(self.base_points)):
            raise ValueError("Scorecard: pdo and base_odds must be > 0, base_points finite")

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        return self.base_points - self.factor * math.log(self.base_odds)

    def points(self, p_bad: Any, eps: float = 1e-12) -> np.ndarray:
        """Points of P(bad) values (clipped to [eps, 1 - eps] so the log-odds are finite)."""
        p = np.clip(np.asarray(p_bad, np.float64), eps, 1 - eps)
        return self.offset + self.factor * (np.log1p(-p) - np.log(p))

    def probability(self, points: Any) -> np.ndarray:
        """P(bad) of points (the inverse of :meth:`points`)."""
        log_odds = (np.asarray(points, np.float64) - self.offset) / self.factor
        return 1.0 / (1.0 + np.exp(log_odds))

    def score(self, model: Any, rows: Any, adverse: Any = None) -> np.ndarray:
        """Points of raw rows under a binary tabular model (calibrated if it is)."""
        from . import _served

        im = _served.served(model)
        _served.binary(im, "Scorecard.score")
        p = im.predict_proba(rows)[:, 1]
        return self.points(p if _served.adverse_sign(im, adverse) > 0 else 1 - p)
