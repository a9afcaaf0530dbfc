"""Optimizers, in order of increasing complexity, then gradient clipping and LR schedules.

Each ``step()`` applies PyTorch's documented update rule (written in its docstring) to every
parameter with a gradient; ``zero_grad()`` drops the gradients (``.grad = None``). The Adam
family runs one fused backend kernel per parameter (one pass over its memory).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .backend import get_backend
from .backend.threads import threads_for
from .nn.module import Module, Parameter

__all__ = [
    "Optimizer",
    "SGD",
    "RMSprop",
    "Adam",
    "AdamW",
    "clip_grad_norm_",
    "clip_grad_value_",
    "LRScheduler",
    "StepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "LinearWarmup",
]


class Optimizer:
    """Holds the parameters, the learning rate and per-parameter state."""

    def __init__(self, params: Iterable[Parameter] | Module, lr: float):
        if isinstance(params, Module):
            params = params.parameters()
        self.params: list[Parameter] = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        self.lr = float(lr)
        self.state: dict[int, dict[str, np.ndarray]] = {}
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _buffer(self, p: Parameter, key: str) -> np.ndarray:
        """Per-parameter state (zeros at first), following the parameter's shape and dtype."""
        st = self.state.setdefault(id(p), {})
        buf = st.get(key)
        if buf is None or buf.shape != p.data.shape or buf.dtype != p.data.dtype:
            buf = st[key] = np.zeros_like(p.data)
        return buf

    def _grads(self):
        """(parameter, gradient) pairs, the gradient as a C array of the parameter's dtype."""
        for p in self.params:
            g = p.grad
            if g is not None:
                if g.dtype != p.data.dtype or not g.flags.c_contiguous:
                    g = np.ascontiguousarray(g, dtype=p.data.dtype)
                yield p, g

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"lr": self.lr, "steps": self.steps}


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and Nesterov momentum.

    g <- g + wd p;  with momentum mu: b <- mu b + g (b = g at the first step);
    g <- g + mu b (Nesterov) or g <- b;  p <- p - lr g.
    """

    def __init__(
        self,
        params,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def step(self) -> None:
        self.steps += 1
        for p, g in self._grads():
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                first = id(p) not in self.state
                b = self._buffer(p, "momentum")
                if first:
                    b[...] = g
                else:
                    b *= self.momentum
                    b += g
                g = g + self.momentum * b if self.nesterov else b
            p.data -= self.lr * g


class RMSprop(Optimizer):
    """RMSprop (PyTorch's form).

    g <- g + wd p;  v <- a v + (1 - a) g^2;  d = sqrt(v) + eps
    (centered: m <- a m + (1 - a) g, d = sqrt(v - m^2) + eps);
    with momentum mu: b <- mu b + g / d, p <- p - lr b;  else p <- p - lr g / d.
    """

    def __init__(
        self,
        params,
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ):
        super().__init__(params, lr)
        self.alpha, self.eps, self.weight_decay = alpha, eps, weight_decay
        self.momentum, self.centered = momentum, centered

    def step(self) -> None:
        self.steps += 1
        a = self.alpha
        for p, g in self._grads():
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            v = self._buffer(p, "square_avg")
            v *= a
            v += (1 - a) * g * g
            if self.centered:
                m = self._buffer(p, "grad_avg")
                m *= a
                m += (1 - a) * g
                d = np.sqrt(v - m * m) + self.eps
            else:
                d = np.sqrt(v) + self.eps
            if self.momentum:
                b = self._buffer(p, "momentum")
                b *= self.momentum
                b += g / d
                p.data -= self.lr * b
            else:
                p.data -= self.lr * g / d


class Adam(Optimizer):
    """Adam (Kingma & Ba), with L2 weight decay added to the gradient (PyTorch's ``Adam``).

    g <- g + wd p;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    decoupled = False

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        self.betas, self.eps, self.weight_decay = (float(b1), float(b2)), float(eps), weight_decay

    def step(self) -> None:
        self.steps += 1
        kernel = get_backend().adam_step
        (b1, b2), lr, eps = self.betas, self.lr, self.eps
        wd, decoupled = float(self.weight_decay), self.decoupled
        for p, g in self._grads():
            data = p.data
            st = self.state.get(id(p))
            if st is None or st["m"].shape != data.shape or st["m"].dtype != data.dtype:
                st = self.state[id(p)] = {
                    "m": np.zeros(data.shape, data.dtype),  # C order, as the kernel reads
                    "v": np.zeros(data.shape, data.dtype),
                    "t": 0,
                }
            st["t"] += 1
            flags = data.flags  # checked here: a compiled kernel would not
            if not flags.writeable:
                raise ValueError(f"Adam: parameter of shape {p.shape} is a read-only array")
            # the kernel walks flat C arrays: a strided or Fortran-ordered p runs on a copy
            buf = data if flags.c_contiguous else np.ascontiguousarray(data)
            # memory-bound (p, g, m, v: 28 bytes an element in float32): a share of 16384
            # elements or more per thread is worth the hand-off, as a GEMM of 4 MFLOP is
            threads = threads_for(32 * buf.size, -(-buf.size // 16384))
            kernel(buf, g, st["m"], st["v"], lr, b1, b2, eps, wd, st["t"], decoupled, threads)
            if buf is not data:
                data[...] = buf


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter; PyTorch's ``AdamW``).

    p <- p (1 - lr wd), then the Adam update without decay in the gradient. Default wd 0.01.
    """

    decoupled = True

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        super().__init__(params, lr, betas, eps, weight_decay)


# -- gradient clipping -----------------------------------------------------------------------


def clip_grad_norm_(params: Iterable[Parameter], max_norm: float, norm_type: float = 2.0) -> float:
    """Scale all gradients together so their joint norm is at most ``max_norm``.

    Returns the norm before clipping. coef = max_norm / (norm + 1e-6), applied when < 1.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if math.isinf(norm_type):
        total = max(float(np.abs(g).max(initial=0)) for g in grads)
    else:
        total = sum(float(np.sum(np.abs(g) ** norm_type)) for g in grads) ** (1 / norm_type)
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g *= coef
    return total


def clip_grad_value_(params: Iterable[Parameter], clip_value: float) -> None:
    """Clamp every gradient element to [-clip_value, clip_value], in place."""
    for p in params:
        if p.grad is not None:
            np.clip(p.grad, -clip_value, clip_value, out=p.grad)


# -- learning-rate schedules ---------------------------------------------------------------------


class LRScheduler:
    """Sets ``optimizer.lr`` from a rule of the step count; call ``step()`` once per epoch
    (or per batch, if the schedule is counted in batches)."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.count = 0

    def rule(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> float:
        self.count += 1
        self.optimizer.lr = self.rule(self.count)
        return self.optimizer.lr


class StepLR(LRScheduler):
    """lr_t = lr_0 * gamma ** floor(t / step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        self.step_size, self.gamma = step_size, gamma

    def rule(self, t: int) -> float:
        return self.base_lr * self.gamma ** (t // self.step_size)


class ExponentialLR(LRScheduler):
    """lr_t = lr_0 * gamma ** t."""

    def __init__(self, optimizer: Optimizer, gamma: float):
        super().__init__(optimizer)
        self.gamma = gamma

    def rule(self, t: int) -> float:
        return self.base_lr * self.gamma**t


class CosineAnnealingLR(LRScheduler):
    """lr_t = eta_min + (lr_0 - eta_min) (1 + cos(pi t / T_max)) / 2, held at eta_min after."""

    def __init__(self, optimizer: Optimizer, t_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        self.t_max, self.eta_min = t_max, eta_min

    def rule(self, t: int) -> float:
        t = min(t, self.t_max)
        return (
            self.eta_min
            + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.t_max)) / 2
        )


class LinearWarmup(LRScheduler):
    """lr rises linearly from lr_0 / warmup_steps to lr_0 over ``warmup_steps``, then follows
    ``after`` (another scheduler on the same optimizer), or stays at lr_0."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, after: LRScheduler | None = None):
        super().__init__(optimizer)
        self.warmup_steps, self.after = max(int(warmup_steps), 1), after
        optimizer.lr = self.base_lr / self.warmup_steps

    def rule(self, t: int) -> float:
        if t < self.warmup_steps:
            return self.base_lr * (t + 1) / self.warmup_steps
        if self.after is not None:
            return self.after.rule(t - self.warmup_steps + 1)
        return self.base_lr
