"""Privacy accounting for DP-SGD: Rényi DP of the sampled Gaussian mechanism.

One DP-SGD step releases the sum of the clipped gradients of a Poisson sample (each record
taken with probability q) plus Gaussian noise N(0, sigma^2 C^2): the *sampled Gaussian
mechanism* (SGM). Its Rényi divergence of order alpha is (Mironov, Talwar, Zhang 2019,
"Rényi Differential Privacy of the Sampled Gaussian Mechanism", sections 3.2 and 3.3):

    RDP(alpha) = log(A_alpha) / (alpha - 1),
    A_alpha    = E_{z ~ mu0} [((1 - q) + q mu1(z) / mu0(z))^alpha],
    mu0 = N(0, s^2), mu1 = N(1, s^2)  (s: the noise multiplier)

which for an integer alpha is the finite sum
    A_alpha = sum_k C(alpha, k) (1 - q)^(alpha - k) q^k exp((k^2 - k) / (2 s^2)),
and for a fractional alpha the two-sided series with erfc terms of their section 3.3.
RDP adds up over steps; epsilon at delta comes from the conversion of Balle et al. 2020
("Hypothesis testing interpretations and Rényi DP", theorem 21):

    eps = min over alpha of
          RDP_total(alpha) + log((alpha - 1) / alpha) - (log delta + log alpha) / (alpha - 1)

These are the formulas Opacus and TF-Privacy implement; ``tests/test_privacy_accountant.py``
checks ours against Opacus's numbers.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["DEFAULT_ORDERS", "RDPAccountant", "rdp_sgm", "epsilon", "noise_for_epsilon"]

#: the Rényi orders searched (Opacus's default grid)
DEFAULT_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))


def _log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b))."""
    lo, hi = min(a, b), max(a, b)
    if lo == -math.inf:
        return hi
    return hi + math.log1p(math.exp(lo - hi))


def _log_sub(a: float, b: float) -> float:
    """log(exp(a) - exp(b)) for a >= b."""
    if b == -math.inf:
        return a
    if b >= a:
        return -math.inf
    return a + math.log1p(-math.exp(b - a))


def _log_erfc(x: float) -> float:
    """log(erfc(x)), with the asymptotic series where erfc underflows."""
    if x < 20.0:
        return math.log(math.erfc(x))
    # erfc(x) ~ exp(-x^2) / (x sqrt(pi)) (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6))
    r = 1.0 / (x * x)
    return (
        -x * x
        - math.log(x)
        - 0.5 * math.log(math.pi)
        + math.log1p(-0.5 * r + 0.75 * r * r - 1.875 * r**3)
    )


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    log_a = -math.inf
    for k in range(alpha + 1):
        log_coef = math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)
        s = log_coef + k * math.log(q) + (alpha - k) * math.log1p(-q)
        log_a = _log_add(log_a, s + (k * k - k) / (2 * sigma**2))
    return log_a


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    """The two series of section 3.3 (z0 is where the two Gaussians' weighted densities meet)."""
    log_a0 = log_a1 = -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    coef, i = 1.0, 0  # coef = C(alpha, i), by the recurrence C(a, i+1) = C(a, i) (a - i) / (i + 1)
    while True:
        j = alpha - i
        log_coef = math.log(abs(coef))
        log_t0 = log_coef + i * math.log(q) + j * math.log1p(-q)
        log_t1 = log_coef + j * math.log(q) + i * math.log1p(-q)
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2 * sigma**2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma**2) + log_e1
        if coef > 0:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        if max(log_s0, log_s1) < -30:
            break
        coef *= (alpha - i) / (i + 1)
        i += 1
    return _log_add(log_a0, log_a1)


def rdp_sgm(sample_rate: float, noise_multiplier: float, orders=DEFAULT_ORDERS) -> np.ndarray:
    """RDP of ONE step of the sampled Gaussian mechanism at each order: (len(orders),)."""
    q, s = float(sample_rate), float(noise_multiplier)
    if not 0 <= q <= 1:
        raise ValueError(f"sample_rate must be in [0, 1], got {q}")
    if s < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {s}")
    out = np.empty(len(orders))
    for n, a in enumerate(orders):
        a = float(a)
        if a <= 1:
            raise ValueError(f"Rényi orders must be > 1, got {a}")
        if q == 0:
            out[n] = 0.0
        elif s == 0:
            out[n] = math.inf
        elif q == 1:
            out[n] = a / (2 * s**2)
        elif a.is_integer():
            out[n] = _log_a_int(q, s, int(a)) / (a - 1)
        else:
            out[n] = _log_a_frac(q, s, a) / (a - 1)
    return out


@lru_cache(maxsize=256)
def _rdp_cached(q: float, s: float, orders: tuple) -> np.ndarray:
    out = rdp_sgm(q, s, orders)
    out.flags.writeable = False
    return out


def _eps_from_rdp(rdp: np.ndarray, orders, delta: float) -> tuple[float, float]:
    """(epsilon, best order) by the conversion of Balle et al. 2020."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    a = np.asarray(orders, dtype=float)
    with np.errstate(invalid="ignore"):
        eps = rdp - (math.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)
    eps = np.where(np.isnan(eps), np.inf, eps)
    k = int(np.argmin(eps))
    return max(float(eps[k]), 0.0), float(a[k])


class StepHistory:
    """The runs of DP-SGD steps an accountant composes: ``history`` holds (noise multiplier,
    sample rate, steps), consecutive steps of the same mechanism merged into one run."""

    def __init__(self) -> None:
        self.history: list[tuple[float, float, int]] = []

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        if int(steps) < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        key = (float(noise_multiplier), float(sample_rate))
        if self.history and self.history[-1][:2] == key:
            self.history[-1] = (*key, self.history[-1][2] + int(steps))
        else:
            self.history.append((*key, int(steps)))

    @property
    def steps(self) -> int:
        return sum(h[2] for h in self.history)


class RDPAccountant(StepHistory):
    """Adds up the RDP of every DP-SGD step; ``get_epsilon(delta)`` at any time.

    >>> acc = RDPAccountant(); acc.step(noise_multiplier=1.0, sample_rate=0.01, steps=1000)
    >>> round(acc.get_epsilon(1e-5), 2)  # doctest: +SKIP
    """

    mechanism = "rdp"

    def __init__(self, orders=DEFAULT_ORDERS):
        super().__init__()
        self.orders = tuple(float(a) for a in orders)

    def rdp(self) -> np.ndarray:
        total = np.zeros(len(self.orders))
        for s, q, n in self.history:
            total += n * _rdp_cached(q, s, self.orders)
        return total

    def get_epsilon(self, delta: float) -> float:
        if not self.history:
            return 0.0
        return _eps_from_rdp(self.rdp(), self.orders, delta)[0]

    def state(self) -> dict:
        """What a model file records: the mechanism and every (noise, rate, steps) run."""
        return {"accountant": self.mechanism, "history": [list(h) for h in self.history]}


def epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant="rdp"
) -> float:
    """Epsilon spent by ``steps`` DP-SGD steps at ``delta``."""
    if accountant == "prv":
        from .prv import PRVAccountant

        acc = PRVAccountant()
    elif accountant == "rdp":
        acc = RDPAccountant()
    else:
        raise ValueError(f"accountant must be 'rdp' or 'prv', got {accountant!r}")
    acc.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    return acc.get_epsilon(delta)


def noise_for_epsilon(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, tol: float = 0.005
) -> float:
    """The smallest noise multiplier (to ``tol``) whose epsilon after ``steps`` is <= target.

    Epsilon falls as the noise grows, so a bisection on [lo, hi] finds it.
    """
    if target_epsilon <= 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    lo, hi = 0.0, 1.0
    while epsilon(hi, sample_rate, steps, delta) > target_epsilon:
        lo, hi = hi, 2 * hi
        if hi > 1e4:
            raise ValueError(
                f"no noise multiplier reaches epsilon {target_epsilon} at delta {delta} in "
                f"{steps} steps at sample rate {sample_rate}"
            )
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if epsilon(mid, sample_rate, steps, delta) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
