"""Normalization layers: ``BatchNorm`` (1-D or 2-D by input rank) and ``LayerNorm``."""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..errors import ShapeError
from ..ops.norm import batch_norm, layer_norm
from .layers import as_input
from .module import Module, Parameter

__all__ = ["BatchNorm", "LayerNorm"]


class BatchNorm(Module):
    """Batch normalization per channel (axis 1): y = weight (x - mu) / sqrt(var + eps) + bias.

    Input (N, C) (1-D: features) or (N, C, H, W) (2-D: images; any rank >= 2 works).
    ``weight`` (gamma) and ``bias`` (beta) have shape (C,). Training uses the batch's mean
    and (biased) variance and updates the buffers ``running_mean`` / ``running_var``
    (running = (1 - momentum) running + momentum batch, unbiased variance: PyTorch's rule;
    Keras's momentum m is 1 - ours). Eval uses the running statistics.
    """

    def __init__(
        self,
        momentum: float = 0.1,
        eps: float = 1e-5,
        num_features: int | None = None,
        dtype="float32",
        name: str | None = None,
    ):
        super().__init__(name)
        if not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm momentum must be in [0, 1], got {momentum}")
        self.momentum, self.eps = float(momentum), float(eps)
        self.dtype = np.dtype(dtype)
        self.num_features: int | None = None
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        self.running_mean: np.ndarray | None = None
        self.running_var: np.ndarray | None = None
        self._built = False
        if num_features is not None:
            self.build((None, int(num_features)))

    def build(self, input_shape) -> BatchNorm:
        if len(input_shape) < 2:
            raise ShapeError(
                f"layer '{self.name}' (BatchNorm) expects input shape (batch, channels, ...), "
                f"got {tuple(input_shape)}"
            )
        c = int(input_shape[1])
        self.num_features = c
        self.weight = Parameter(np.ones(c, self.dtype))
        self.bias = Parameter(np.zeros(c, self.dtype))
        self.running_mean = np.zeros(c, self.dtype)
        self.running_var = np.ones(c, self.dtype)
        self._built = True
        return self

    def call(self, x) -> Tensor:
        x = as_input(self, x)
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ShapeError(
                f"layer '{self.name}' (BatchNorm) expects input shape "
                f"(batch, {self.num_features}, ...), got {x.shape}"
            )
        if self.running_mean.dtype != x.dtype:
            self.running_mean = self.running_mean.astype(x.dtype)
            self.running_var = self.running_var.astype(x.dtype)
        return batch_norm(
            x,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            training=self.training,
            momentum=self.momentum,
            eps=self.eps,
        )

    def buffers(self) -> dict[str, np.ndarray]:
        if not self._built:
            return {}
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def load_buffers(self, values: dict[str, np.ndarray]) -> None:
        unknown = set(values) - {"running_mean", "running_var"}
        if unknown:
            raise KeyError(f"BatchNorm has no buffers {sorted(unknown)}")
        for k, v in values.items():
            v = np.asarray(v)
            if v.shape != (self.num_features,):
                raise ShapeError(
                    f"layer '{self.name}' (BatchNorm): {k} of shape ({self.num_features},) "
                    f"expected, got {v.shape}"
                )
            setattr(self, k, v.astype(self.dtype, copy=True))

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "momentum": self.momentum,
            "eps": self.eps,
            "num_features": self.num_features,
            "dtype": self.dtype.name,
        }


class LayerNorm(Module):
    """Layer normalization over the last axis: y = weight (x - mu) / sqrt(var + eps) + bias.

    x: (..., D); ``weight`` (gamma) and ``bias`` (beta): (D,); mu and the (biased) var are
    each row's own, the same in training and eval.
    """

    def __init__(
        self,
        eps: float = 1e-5,
        features: int | None = None,
        dtype="float32",
        name: str | None = None,
    ):
        super().__init__(name)
        self.eps = float(eps)
        self.dtype = np.dtype(dtype)
        self.features: int | None = None
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        self._built = False
        if features is not None:
            self.build((None, int(features)))

    def build(self, input_shape) -> LayerNorm:
        d = int(input_shape[-1])
        self.features = d
        self.weight = Parameter(np.ones(d, self.dtype))
        self.bias = Parameter(np.zeros(d, self.dtype))
        self._built = True
        return self

    def call(self, x) -> Tensor:
        x = as_input(self, x)
        if x.ndim < 1 or x.shape[-1] != self.features:
            raise ShapeError(
                f"layer '{self.name}' (LayerNorm) expects input shape (..., {self.features}), "
                f"got {x.shape}"
            )
        return layer_norm(x, self.weight, self.bias, self.eps)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "eps": self.eps,
            "features": self.features,
            "dtype": self.dtype.name,
        }
