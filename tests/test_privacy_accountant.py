"""The RDP accountant of the sampled Gaussian mechanism against Opacus's values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lepton_nn.privacy import RDPAccountant, epsilon, noise_for_epsilon
from lepton_nn.privacy.accountant import DEFAULT_ORDERS, rdp_sgm

# epsilon at delta = 1e-5 from Opacus 1.6's RDP accountant (compute_rdp + get_privacy_spent,
# its default orders), computed once and written here so the test runs without Opacus
PUBLISHED = [
    (0.01, 1.1, 10000, 5.63199236854841),
    (256 / 60000, 1.1, 60 * 234, 2.594363354953112),  # the MNIST example's setting
    (0.004, 0.8, 5000, 2.92523658148822),
    (0.1, 2.0, 100, 2.5805688086608938),
    (0.02, 1.0, 1, 1.1640182853362133),
]


@pytest.mark.parametrize("q,sigma,steps,want", PUBLISHED)
def test_epsilon_matches_published_values(q, sigma, steps, want):
    assert epsilon(sigma, q, steps, 1e-5) == pytest.approx(want, rel=1e-6)


def test_integer_order_is_the_closed_sum_and_q1_is_the_gaussian():
    # alpha = 2, one step: A_2 = (1-q)^2 + 2q(1-q) + q^2 e^{1/s^2}
    q, s = 0.3, 1.7
    a2 = (1 - q) ** 2 + 2 * q * (1 - q) + q * q * math.exp(1 / s**2)
    assert rdp_sgm(q, s, (2,))[0] == pytest.approx(math.log(a2), rel=1e-12)
    assert rdp_sgm(1.0, s, (2.5, 7))[1] == pytest.approx(7 / (2 * s * s))
    assert rdp_sgm(0.0, s, (3,))[0] == 0.0


def test_accountant_adds_steps_and_grows():
    acc = RDPAccountant()
    eps = []
    for _ in range(3):
        acc.step(noise_multiplier=1.0, sample_rate=0.01, steps=100)
        eps.append(acc.get_epsilon(1e-5))
    assert eps[0] < eps[1] < eps[2]
    assert eps[2] == pytest.approx(epsilon(1.0, 0.01, 300, 1e-5), rel=1e-12)
    assert RDPAccountant().get_epsilon(1e-5) == 0.0
    with pytest.raises(ValueError):
        acc.get_epsilon(0.0)


def test_noise_for_epsilon_hits_the_target():
    for target in (1.0, 3.0, 8.0):
        s = noise_for_epsilon(target, 1e-5, 0.02, 500)
        assert epsilon(s, 0.02, 500, 1e-5) <= target
        assert epsilon(s - 0.01, 0.02, 500, 1e-5) > target * 0.99


def test_against_opacus_grid():
    rdp_mod = pytest.importorskip("opacus.accountants.analysis.rdp")
    orders = list(DEFAULT_ORDERS)
    worst = 0.0
    for q in (0.001, 0.03, 0.4):
        for s in (0.6, 1.0, 2.5):
            for steps in (1, 1000):
                r = rdp_mod.compute_rdp(q=q, noise_multiplier=s, steps=steps, orders=orders)
                want = rdp_mod.get_privacy_spent(orders=orders, rdp=r, delta=1e-5)[0]
                ours = steps * rdp_sgm(q, s, orders)
                np.testing.assert_allclose(ours, r, rtol=1e-6)
                worst = max(worst, abs(epsilon(s, q, steps, 1e-5) - want) / want)
    assert worst < 1e-6


# epsilon at delta = 1e-5 from Opacus 1.6's PRVAccountant (eps_error 0.01), written here
PRV_PUBLISHED = [
    (0.01, 1.0, 1000, 1.8383716376346455),
    (0.1, 2.0, 100, 2.3475553164519662),
    (0.02, 1.0, 1, 0.44897746913487296),
    (0.05, 0.8, 300, 9.320810763577581),
]


@pytest.mark.parametrize("q,sigma,steps,want", PRV_PUBLISHED)
def test_prv_within_one_percent_of_opacus_and_below_rdp(q, sigma, steps, want):
    from lepton_nn.privacy import PRVAccountant

    acc = PRVAccountant()
    acc.step(noise_multiplier=sigma, sample_rate=q, steps=steps)
    got = acc.get_epsilon(1e-5)
    assert got == pytest.approx(want, rel=0.01)
    assert got < epsilon(sigma, q, steps, 1e-5)  # RDP's conversion is looser
    assert epsilon(sigma, q, steps, 1e-5, accountant="prv") == pytest.approx(got, rel=1e-12)
    # delta at that epsilon is back at (about) 1e-5
    assert acc.get_delta(acc.estimate_epsilon(1e-5)) == pytest.approx(1e-5, rel=0.05)
