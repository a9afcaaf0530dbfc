"""Differentially private training (DP-SGD) on NumPy: per-example gradients by closed forms,
clipping and Gaussian noise, Poisson-sampled batches and a Rényi-DP accountant.

See ``docs/privacy.md`` for what the guarantee covers.
"""

from .accountant import RDPAccountant, epsilon, noise_for_epsilon
from .engine import RECIPE, DPOptimizer, PoissonLoader, Privacy, PrivateTraining, make_private
from .grad_sample import SUPPORTED, GradSampler, per_example_grads
from .prv import PRVAccountant

__all__ = [
    "DPOptimizer",
    "PoissonLoader",
    "Privacy",
    "PrivateTraining",
    "RECIPE",
    "make_private",
    "GradSampler",
    "PRVAccountant",
    "RDPAccountant",
    "SUPPORTED",
    "epsilon",
    "noise_for_epsilon",
    "per_example_grads",
]
