"""A privacy-random-variable (PRV) accountant: the numerical composition of Gopi, Lee and
Wutschitz 2021 ("Numerical composition of differential privacy"), tighter than RDP.

One step of DP-SGD with sampling rate q and noise sigma is dominated (Zhu, Dong, Wang 2022)
by the pair P = (1 - q) N(0, s^2) + q N(1, s^2), Q = N(0, s^2) (a record removed). Its privacy
loss, for x ~ P, is

    Y = log P(x)/Q(x) = log(1 - q + q exp((2x - 1) / (2 s^2))),

increasing in x, so P(Y <= t) = P(x <= x(t)) with x(t) = s^2 log((e^t - 1 + q) / q) + 1/2.
Y is discretized on a grid of width h (each value rounded to the nearest point: an estimate
whose error shrinks with h, not a strict bound; the RDP accountant gives the bound), the
k-fold composition is the k-th power of its characteristic function (FFT), and

    delta(eps) = E[(1 - exp(eps - Y_1 - ... - Y_k))_+];   epsilon(delta) by bisection.
"""

from __future__ import annotations

import math

import numpy as np

from .accountant import RDPAccountant, StepHistory

__all__ = ["PRVAccountant"]


_erfc = np.vectorize(math.erfc, otypes=[float])


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * _erfc(-x / math.sqrt(2))


def _loss_pmf(q: float, s: float, grid: np.ndarray, h: float) -> np.ndarray:
    """P(Y in (t - h/2, t + h/2]) for each grid point t (Y rounded to the nearest point; the
    tails beyond the grid go to its ends)."""
    t = grid + h / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(t > math.log1p(-q), s * s * np.log((np.exp(t) - 1 + q) / q) + 0.5, -np.inf)
    cdf = (1 - q) * _norm_cdf(x / s) + q * _norm_cdf((x - 1) / s)
    pmf = np.diff(np.concatenate([[0.0], cdf]))
    pmf[-1] += 1.0 - cdf[-1]  # the tail beyond the grid, rounded down onto its last point
    return pmf


class PRVAccountant(StepHistory):
    """``step(noise_multiplier=, sample_rate=, steps=)`` then ``get_epsilon(delta)``.

    ``eps_error``: the grid width is chosen so that discretization moves epsilon by about this
    much (an estimate; :class:`RDPAccountant` gives a strict upper bound).
    """

    mechanism = "prv"

    def __init__(self, eps_error: float = 0.01):
        super().__init__()
        self.eps_error = float(eps_error)

    def _composed(self, eps_hint: float):
        """(grid, pmf) of the sum of every step's privacy loss."""
        total = self.steps
        h = self.eps_error / max(total, 1) ** 0.5 / 2
        # the loss of one step lies within a few sigma of its mean; the sum of k within
        # k mean + a few sqrt(k) sd: a domain of +-L holds it
        width = max(4 * eps_hint + 10, 20.0)
        n = int(2 ** math.ceil(math.log2(2 * width / h)))
        h = 2 * width / n
        grid = (np.arange(n) - n // 2) * h  # 0 at index n // 2
        spec = np.ones(n, dtype=complex)
        for s, q, k in self.history:
            if q == 0 or k == 0:
                continue
            pmf = _loss_pmf(q, s, grid, h)
            shifted = np.roll(pmf, -(n // 2))  # index 0 <-> loss 0 for the FFT
            spec *= np.fft.fft(shifted) ** k
        out = np.real(np.fft.ifft(spec))
        out = np.maximum(np.roll(out, n // 2), 0.0)
        return grid, out

    def get_delta(self, eps: float) -> float:
        return self._delta(*self._composed(eps), eps)

    def get_epsilon(self, delta: float) -> float:
        """The estimate plus ``eps_error`` (the discretization allowance, as Opacus reports)."""
        return self.estimate_epsilon(delta) + self.eps_error

    def estimate_epsilon(self, delta: float) -> float:
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if not self.history:
            return -self.eps_error
        rdp = RDPAccountant()
        rdp.history = list(self.history)
        hi = rdp.get_epsilon(delta)  # RDP is an upper bound: search below it
        grid, pmf = self._composed(hi)
        lo = 0.0
        if self._delta(grid, pmf, 0.0) <= delta:
            return 0.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if self._delta(grid, pmf, mid) > delta:
                lo = mid
            else:
                hi = mid
        return hi

    @staticmethod
    def _delta(grid, pmf, eps):
        m = grid > eps
        return float(np.sum(pmf[m] * (1 - np.exp(eps - grid[m]))))
