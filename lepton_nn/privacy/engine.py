"""DP-SGD (Abadi et al. 2016): per-example clipping, Gaussian noise, Poisson-sampled batches.

One step on a batch B drawn by Poisson sampling (each of the N records taken independently
with probability q = batch_size / N):

    g_n   = per-example gradient of example n's loss            (lepton_nn.privacy.grad_sample)
    c_n   = min(1, C / (||g_n|| + 1e-6))                         (clip the WHOLE gradient to C)
    g_hat = (sum_{n in B} c_n g_n + N(0, (sigma C)^2 I)) / (q N)  (noise, average over the
                                                                   expected batch size)

then any optimizer (SGD, Adam, AdamW, ...) steps with g_hat as the gradient. Dividing by the
expected batch size q N rather than |B| keeps the sensitivity at C / (q N) whatever |B| is.
Each step is one sampled Gaussian mechanism: the accountant adds up (sigma, q) per step.
An empty Poisson batch still releases a step (noise only): skipping it would reveal it.

Noise comes from NumPy's PCG64, seeded by ``seed``: reproducible, not a cryptographic source
(as Opacus without ``secure_mode``); see docs/privacy.md.
"""

from __future__ import annotations

import numpy as np

from ..errors import LeptonError
from ..random import get_seed
from .accountant import RDPAccountant, noise_for_epsilon
from .grad_sample import GradSampler

__all__ = ["DPOptimizer", "PoissonLoader", "PrivateTraining", "Privacy", "RECIPE", "make_private"]

# A training recipe for private tabular models (``TabularModel(**RECIPE, privacy=...)``; the
# CLI's train --dp-epsilon takes it for the flags left at their defaults). Fewer, larger
# batches than non-private training: the noise is added per step, so a larger expected batch
# averages it down (sampling rate ~0.08 on credit_data.csv). Chosen on a validation split
# of the credit training rows at epsilon 3 (benchmarks/privacy_utility.py --tune); clipping
# norm 1 (the Privacy default) was as good as 0.3 there.
RECIPE = {"batch_size": 256, "epochs": 12, "lr": 0.02, "dropout": 0.0}


class DPOptimizer:
    """Wraps ``optimizer``: ``step()`` replaces each gradient by the clipped, noised average."""

    def __init__(
        self,
        optimizer,
        sampler: GradSampler,
        noise_multiplier: float,
        max_grad_norm: float,
        sample_rate: float,
        n_records: int,
        accountant: RDPAccountant,
        rng: np.random.Generator,
        loss_reduction: str = "mean",
    ):
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        if max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm}")
        if noise_multiplier < 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
        known = {id(p) for p in sampler.params.values()}
        if any(id(p) not in known for p in optimizer.params):
            raise LeptonError("the optimizer updates parameters that are not the model's")
        self.optimizer, self.sampler = optimizer, sampler
        self.noise_multiplier, self.max_grad_norm = float(noise_multiplier), float(max_grad_norm)
        self.sample_rate, self.n_records = float(sample_rate), int(n_records)
        self.expected_batch_size = self.sample_rate * self.n_records
        self.accountant, self.rng, self.loss_reduction = accountant, rng, loss_reduction
        self.last_norms: np.ndarray | None = None
        self._layout: tuple | None = None  # (dtype, size, spans) of the parameters' noise

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer.lr = value

    @property
    def params(self):
        return self.optimizer.params

    @property
    def steps(self) -> int:
        return self.optimizer.steps

    def zero_grad(self) -> None:
        """Clears the gradients; the recorded batch stays for the coming ``step()``."""
        self.optimizer.zero_grad()

    def _release(self, sums: dict[int, np.ndarray]) -> None:
        """Noise, average, inner step, one more step for the accountant. ``sums`` hold
        sum_n c_n g_n already divided by the expected batch size."""
        params = self.optimizer.params
        if self._layout is None:  # one noise draw for every parameter: its slices
            dtype = np.result_type(*[p.dtype for p in params])
            ends = np.cumsum([p.size for p in params]).tolist()
            spans = [(p, a, b, p.shape, p.dtype) for p, a, b in zip(params, [0, *ends[:-1]], ends)]
            self._layout = (dtype, ends[-1] if ends else 0, spans)
        dtype, total, spans = self._layout
        noise = self.rng.standard_normal(total, dtype=dtype)
        noise *= dtype.type(self.noise_multiplier * self.max_grad_norm / self.expected_batch_size)
        for p, a, b, shape, pdt in spans:
            g = noise[a:b].reshape(shape)
            s = sums.get(id(p))
            if s is not None:
                if s.dtype == pdt and s.flags.owndata:  # the rule's fresh sum: add in place
                    s += g
                    g = s
                else:
                    g = np.add(s, g, dtype=pdt)
            elif g.dtype != pdt:
                g = g.astype(pdt)
            p.grad = g
        self.optimizer.step()
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.sampler.clear()

    def step(self) -> None:
        n = self.sampler.batch_size()
        if n == 0:
            raise LeptonError("DP step without a recorded batch: run forward and backward first")
        scale = float(n) if self.loss_reduction == "mean" else 1.0
        norms, sums = self.sampler.clip(self.max_grad_norm, scale, self.expected_batch_size)
        self.last_norms = norms
        self._release(sums)

    def empty_step(self) -> None:
        """The step of an empty Poisson batch: noise only."""
        self.sampler.clear()
        self._release({})

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()


class PoissonLoader:
    """Batches by Poisson sampling: each record enters each batch with probability ``q``,
    ``steps`` batches per pass. An empty batch is not yielded: its noise-only step is taken
    by ``optimizer.empty_step()`` (the accountant counts it)."""

    merged = False  # the trainer's batching protocol

    def __init__(self, arrays, sample_rate: float, steps: int, rng, optimizer=None):
        self.arrays = [np.asarray(a) for a in arrays]
        self.sample_rate, self.steps, self.rng = float(sample_rate), int(steps), rng
        self.optimizer = optimizer

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        n = len(self.arrays[0])
        for _ in range(self.steps):
            idx = np.flatnonzero(self.rng.random(n) < self.sample_rate)
            if idx.size == 0:
                if self.optimizer is not None:
                    self.optimizer.empty_step()
                continue
            yield tuple(a[idx] for a in self.arrays)


class PrivateTraining:
    """What :func:`make_private` returns: ``.optimizer`` (a :class:`DPOptimizer`),
    ``.loader`` (Poisson batches), ``.epsilon(delta)``; ``detach()`` ends the recording."""

    def __init__(self, model, optimizer, sampler, loader, accountant, delta, bounds):
        self.model, self.optimizer, self.sampler = model, optimizer, sampler
        self.loader, self.accountant, self.delta = loader, accountant, float(delta)
        self.preprocessing = bounds
        self.spent_before = (0.0, 0.0)  # (epsilon, delta) of the preprocessing, if private

    @property
    def noise_multiplier(self) -> float:
        return self.optimizer.noise_multiplier

    @property
    def sample_rate(self) -> float:
        return self.optimizer.sample_rate

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far at ``delta`` of the training (default: the target delta),
        plus what private preprocessing spent before it (basic composition)."""
        return (
            self.accountant.get_epsilon(self.delta if delta is None else delta)
            + (self.spent_before[0])
        )

    def detach(self) -> None:
        self.sampler.detach()

    def report(self) -> dict:
        """The record a model file keeps (JSON values)."""
        eps0, delta0 = self.spent_before
        return {
            "mechanism": "DP-SGD (per-example clipping, Gaussian noise, Poisson sampling)",
            "accountant": "rdp",
            "epsilon": self.epsilon(),
            "delta": self.delta + delta0,
            "training_epsilon": self.epsilon() - eps0,
            "training_delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.optimizer.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": self.accountant.steps,
            "n_records": self.optimizer.n_records,
            "unit": "record (one row of the training data)",
            "preprocessing": self.preprocessing,
        }


def make_private(
    model,
    optimizer,
    data,
    batch_size: int,
    epochs: int,
    max_grad_norm: float = 1.0,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    target_delta: float = 1e-5,
    seed: int | None = None,
    loss_reduction: str = "mean",
    preprocessing: str = "not recorded",
) -> PrivateTraining:
    """Private training of ``model`` with ``optimizer`` on ``data`` = (X, y, ...) arrays.

    Give ``noise_multiplier`` (sigma), or ``target_epsilon`` and the smallest sigma spending
    at most that epsilon at ``target_delta`` in ``epochs`` passes is found. Batches are
    Poisson samples with rate q = batch_size / N, round(1 / q) of them per pass. ``seed``
    fixes the sampling and the noise (default: the library's seed, if one is set).

    Usage::

        priv = make_private(model, opt, (X, y), batch_size=64, epochs=5, target_epsilon=3)
        for xb, yb in priv.loader:      # one pass
            loss = losses.bce(model(xb), yb)
            priv.optimizer.zero_grad(); loss.backward(); priv.optimizer.step()
        priv.epsilon(1e-5)
    """
    arrays = [np.asarray(a) for a in data]
    n = len(arrays[0])
    if n == 0 or any(len(a) != n for a in arrays):
        raise ValueError("data must be arrays with the same, positive number of rows")
    if not 0 < batch_size <= n:
        raise ValueError(f"batch_size must be in 1..{n}, got {batch_size}")
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError("give exactly one of noise_multiplier and target_epsilon")
    q = batch_size / n
    steps = max(1, round(1 / q))
    if target_epsilon is not None:
        noise_multiplier = noise_for_epsilon(target_epsilon, target_delta, q, steps * int(epochs))
    if not model.built:
        model.build((None, *arrays[0].shape[1:]))
    sampler = GradSampler(model)
    seed = get_seed() if seed is None else seed
    sample_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    acc = RDPAccountant()
    dp = DPOptimizer(
        optimizer, sampler, noise_multiplier, max_grad_norm, q, n, acc, noise_rng, loss_reduction
    )
    sampler.attach()  # after every check above: a refused call leaves the model as it was
    loader = PoissonLoader(arrays, q, steps, sample_rng, dp)
    return PrivateTraining(model, dp, sampler, loader, acc, target_delta, preprocessing)


class Privacy:
    """A privacy request for :meth:`lepton_nn.train.Trainer.fit` and
    :class:`~lepton_nn.tabular.TabularModel` (``privacy=Privacy(...)``): the arguments of
    :func:`make_private` other than the model, optimizer and data.

    For a TabularModel the preprocessing statistics are made private too
    (:mod:`lepton_nn.privacy.preprocess`): ``bounds`` ({column: (lo, hi)}) and ``categories``
    ({column: [...]}) are public knowledge given by the user; the statistics read from the
    data (quartiles, searched within the bounds where given; categories not named) spend
    ``preprocessing_share`` of the budget (epsilon and delta), the training the rest, so the
    model as a whole is (target_epsilon, target_delta)-DP. ``bounds_scaling="range"`` scales
    bounded columns by their bounds alone (free, but poor for skewed columns).
    ``target_bounds``: the public (lo, hi) of a regression target, which scales it (else it is
    left unscaled). No training profile is written (its deciles and medians are exact
    statistics of the training rows), so monitoring and reason codes are not available.
    """

    def __init__(
        self,
        target_epsilon: float | None = None,
        target_delta: float = 1e-5,
        max_grad_norm: float = 1.0,
        noise_multiplier: float | None = None,
        bounds: dict | None = None,
        categories: dict | None = None,
        preprocessing_share: float = 0.1,
        preprocessing_epsilon: float = 0.1,
        bounds_scaling: str = "quantiles",
        target_bounds: tuple[float, float] | None = None,
    ):
        if not 0 < preprocessing_share < 1:
            raise ValueError(f"preprocessing_share must be in (0, 1), got {preprocessing_share}")
        self.target_epsilon, self.target_delta = target_epsilon, float(target_delta)
        self.max_grad_norm, self.noise_multiplier = float(max_grad_norm), noise_multiplier
        self.bounds, self.categories = dict(bounds or {}), dict(categories or {})
        self.preprocessing_share = float(preprocessing_share)
        self.preprocessing_epsilon = float(preprocessing_epsilon)
        if bounds_scaling not in ("quantiles", "range"):
            raise ValueError(
                f"bounds_scaling must be 'quantiles' or 'range', got {bounds_scaling!r}"
            )
        self.bounds_scaling = bounds_scaling
        if target_bounds is not None and not float(target_bounds[1]) > float(target_bounds[0]):
            raise ValueError(f"target_bounds: need lo < hi, got {target_bounds}")
        self.target_bounds = target_bounds
        self.preprocessing: dict | str = "not recorded (the caller's own preprocessing)"

    def privatize_preprocessor(self, pre, table, kept, seed=None) -> dict:
        """Replace the fitted ``pre``'s statistics (see :mod:`.preprocess`); remembers the
        spent (epsilon, delta) so ``attach`` trains on what is left."""
        from .preprocess import privatize_preprocessor

        if self.target_epsilon is not None:
            eps = self.preprocessing_share * self.target_epsilon
        else:
            eps = self.preprocessing_epsilon
        delta = self.preprocessing_share * self.target_delta
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
        self.preprocessing = privatize_preprocessor(
            pre, table, kept, eps, delta, rng, self.bounds, self.categories, self.bounds_scaling
        )
        return self.preprocessing

    def target_scale(self) -> tuple[float, float]:
        """(center, scale) of a regression target: from the public ``target_bounds`` (their
        middle and half-width), else (0, 1), unscaled: the target's mean and standard
        deviation would be statistics of the training rows."""
        if self.target_bounds is None:
            return 0.0, 1.0
        lo, hi = (float(b) for b in self.target_bounds)
        return (lo + hi) / 2, (hi - lo) / 2

    def _spent_before(self) -> tuple[float, float]:
        if isinstance(self.preprocessing, dict):
            return self.preprocessing["epsilon"], self.preprocessing["delta"]
        return 0.0, 0.0

    def attach(self, model, optimizer, arrays, batch_size: int, epochs: int, seed=None):
        eps0, delta0 = self._spent_before()
        target = None if self.target_epsilon is None else self.target_epsilon - eps0
        priv = make_private(
            model,
            optimizer,
            arrays,
            batch_size=batch_size,
            epochs=epochs,
            max_grad_norm=self.max_grad_norm,
            noise_multiplier=self.noise_multiplier,
            target_epsilon=target,
            target_delta=self.target_delta - delta0,
            seed=seed,
            preprocessing=self.preprocessing,
        )
        priv.spent_before = (eps0, delta0)
        return priv
