"""Convolution and pooling layers on NCHW images: ``Conv2D`` (grouped and depthwise too),
``MaxPool2D``, ``AvgPool2D``, ``GlobalAvgPool2D``; ``Conv1D`` on (N, C, L) sequences. The math
lives in :mod:`lepton_nn.ops.conv` and :mod:`lepton_nn.ops.conv_more`."""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..backend.reference import ACT_CODE
from ..errors import ShapeError
from ..ops.conv import POOLED_ACTS, avg_pool2d, conv2d, global_avg_pool2d, max_pool2d, pair
from ..ops.conv_more import conv1d, conv1d_padding
from ..random import rng
from .init import get_initializer
from .layers import _activation_name, apply_activation, as_float_input, as_input
from .module import Module, Parameter

__all__ = ["Conv2D", "Conv1D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D"]

# activation names a fused max pool takes (see Conv2D.call_fused)
_POOLED = {name for name, code in ACT_CODE.items() if code in POOLED_ACTS}


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def _padding(padding):
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid', 'same', an int or a pair, got {padding!r}")
        return padding
    return int(padding) if np.isscalar(padding) else tuple(int(p) for p in padding)


def _check_images(layer: Module, shape, channels: int | None = None) -> None:
    """ShapeError naming the layer unless ``shape`` is (N, C, H, W) with the right C."""
    if len(shape) != 4 or (channels is not None and shape[1] != channels):
        want = f"(batch, {channels if channels is not None else 'channels'}, height, width)"
        raise ShapeError(
            f"layer '{layer.name}' ({type(layer).__name__}) expects input shape {want}, "
            f"got {tuple(shape)}"
        )


class Conv2D(Module):
    """2-D convolution: y = f(W * x + b), NCHW, cross-correlation as in PyTorch.

    x: (N, C, H, W) -> y: (N, filters, OH, OW), OH = (H + pads - d (kh - 1) - 1) // s + 1.
    ``weight`` (filters, C / groups, kh, kw) and ``bias`` (filters,): PyTorch's layout, so
    weights can be exchanged. ``padding``: "valid", "same" (OH = ceil(H / s)), an int, a pair
    (rows, columns) or four ints (top, bottom, left, right). ``groups`` = G: output group g
    (filters / G channels) sees input group g (C / G channels) only; ``groups`` = C (with
    filters a multiple of C) is a depthwise convolution.
    Weights are created at the first call unless ``in_channels`` is given.
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        stride=1,
        padding="valid",
        dilation=1,
        activation: str | None = None,
        use_bias: bool = True,
        in_channels: int | None = None,
        kernel_initializer: str = "glorot_uniform",
        bias_initializer: str = "zeros",
        dtype="float32",
        name: str | None = None,
        groups: int = 1,
    ):
        super().__init__(name)
        if int(filters) <= 0:
            raise ValueError(f"Conv2D filters must be positive, got {filters}")
        if int(groups) != groups or groups < 1 or filters % groups:
            raise ValueError(f"Conv2D groups must be a positive divisor of filters, got {groups}")
        self.filters = int(filters)
        self.groups = int(groups)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        self.padding = _padding(padding)
        self.activation = _activation_name(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.dtype = np.dtype(dtype)
        self.in_channels: int | None = None
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        self._built = False
        if in_channels is not None:
            self.build((None, int(in_channels), None, None))

    def build(self, input_shape) -> Conv2D:
        _check_images(self, input_shape)
        c = int(input_shape[1])
        _check_groups(self, c)
        kh, kw = self.kernel_size
        fan_in, fan_out = c // self.groups * kh * kw, self.filters * kh * kw
        shape = (self.filters, c // self.groups, kh, kw)
        r = rng()
        self.in_channels = c
        self.weight = Parameter(
            get_initializer(self.kernel_initializer)(shape, fan_in, fan_out, r, self.dtype)
        )
        if self.use_bias:
            b = get_initializer(self.bias_initializer)(
                (self.filters,), fan_in, fan_out, r, self.dtype
            )
            self.bias = Parameter(b)
        self._built = True
        return self

    def call(self, x) -> Tensor:
        x = as_input(self, x)
        _check_images(self, x.shape, self.in_channels)
        fused = self.activation if self.activation in ACT_CODE else "identity"
        y = conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, fused, self.name,
            groups=self.groups,
        )  # fmt: skip
        return y if fused == self.activation else apply_activation(y, self.activation)

    def call_fused(self, x, following: Module):
        """A MaxPool2D after this layer runs in the same op: the activation is pooled chunk
        by chunk while in cache, never stored (activations identity, relu, sigmoid, tanh)."""
        if type(following) is not MaxPool2D or self.activation not in _POOLED:
            return None
        x = as_input(self, x)
        _check_images(self, x.shape, self.in_channels)
        pool = (following.pool_size, following.stride, following.padding, following.name)
        return conv2d(
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.activation,
            self.name,
            max_pool=pool,
            groups=self.groups,
        )

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": _jsonable(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "in_channels": self.in_channels,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "dtype": self.dtype.name,
        }


def _check_groups(layer: Module, channels: int) -> None:
    if channels % layer.groups:
        raise ShapeError(
            f"layer '{layer.name}' ({type(layer).__name__}): {channels} input channels do not "
            f"split into {layer.groups} groups"
        )


class Conv1D(Module):
    """1-D convolution over (N, C, L) sequences: y = f(W * x + b), cross-correlation as in
    PyTorch's Conv1d -> (N, filters, OL), OL = (L + pads - d (k - 1) - 1) // s + 1.

    ``weight`` (filters, C / groups, k), ``bias`` (filters,); ``padding``: "valid", "same"
    (OL = ceil(L / s)), an int or a pair (left, right); ``groups`` as in :class:`Conv2D`.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        stride: int = 1,
        padding="valid",
        dilation: int = 1,
        activation: str | None = None,
        use_bias: bool = True,
        in_channels: int | None = None,
        groups: int = 1,
        kernel_initializer: str = "glorot_uniform",
        bias_initializer: str = "zeros",
        dtype="float32",
        name: str | None = None,
    ):
        super().__init__(name)
        if int(filters) <= 0:
            raise ValueError(f"Conv1D filters must be positive, got {filters}")
        if int(groups) != groups or groups < 1 or filters % groups:
            raise ValueError(f"Conv1D groups must be a positive divisor of filters, got {groups}")
        self.filters, self.groups = int(filters), int(groups)
        self.kernel_size = pair(kernel_size, "kernel_size")[0]
        self.stride = pair(stride, "stride")[0]
        self.dilation = pair(dilation, "dilation")[0]
        self.padding = _padding(padding)
        conv1d_padding(self.padding)  # checks its form
        self.activation = _activation_name(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.dtype = np.dtype(dtype)
        self.in_channels: int | None = None
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        self._built = False
        if in_channels is not None:
            self.build((None, int(in_channels), None))

    def _check(self, shape, channels=None) -> None:
        if len(shape) != 3 or (channels is not None and shape[1] != channels):
            want = f"(batch, {channels if channels is not None else 'channels'}, length)"
            raise ShapeError(
                f"layer '{self.name}' (Conv1D) expects input shape {want}, got {tuple(shape)}"
            )

    def build(self, input_shape) -> Conv1D:
        self._check(input_shape)
        c = int(input_shape[1])
        _check_groups(self, c)
        k, r = self.kernel_size, rng()
        fan_in, fan_out = c // self.groups * k, self.filters * k
        init = get_initializer(self.kernel_initializer)
        self.weight = Parameter(
            init((self.filters, c // self.groups, k), fan_in, fan_out, r, self.dtype)
        )
        if self.use_bias:
            init = get_initializer(self.bias_initializer)
            self.bias = Parameter(init((self.filters,), fan_in, fan_out, r, self.dtype))
        self.in_channels = c
        self._built = True
        return self

    def call(self, x) -> Tensor:
        x = as_input(self, x)
        self._check(x.shape, self.in_channels)
        fused = self.activation if self.activation in ACT_CODE else "identity"
        y = conv1d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, fused,
            self.groups, self.name,
        )  # fmt: skip
        return y if fused == self.activation else apply_activation(y, self.activation)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": _jsonable(self.padding),
            "dilation": self.dilation,
            "groups": self.groups,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "in_channels": self.in_channels,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "dtype": self.dtype.name,
        }


class _Pool2D(Module):
    def __init__(self, pool_size=2, stride=None, padding="valid", name: str | None = None):
        super().__init__(name)
        self.pool_size = pair(pool_size, "pool_size")
        self.stride = self.pool_size if stride is None else pair(stride, "stride")
        self.padding = _padding(padding)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "pool_size": list(self.pool_size),
            "stride": list(self.stride),
            "padding": _jsonable(self.padding),
        }


class MaxPool2D(_Pool2D):
    """Max over ``pool_size`` windows moved by ``stride`` (default: the pool size); NCHW.

    ``padding``: "valid", "same" or an int/pair (at most half the pool size; counts as -inf).
    """

    def call(self, x) -> Tensor:
        x = as_float_input(self, x)
        _check_images(self, x.shape)
        return max_pool2d(x, self.pool_size, self.stride, self.padding, self.name)


class AvgPool2D(_Pool2D):
    """Mean over ``pool_size`` windows moved by ``stride`` (default: the pool size); NCHW.

    With padding, ``count_include_pad=True`` (PyTorch's default) divides by the full window
    size; False divides by the number of cells inside the image (Keras's "same").
    """

    def __init__(
        self,
        pool_size=2,
        stride=None,
        padding="valid",
        count_include_pad: bool = True,
        name: str | None = None,
    ):
        super().__init__(pool_size, stride, padding, name)
        self.count_include_pad = bool(count_include_pad)

    def call(self, x) -> Tensor:
        x = as_float_input(self, x)
        _check_images(self, x.shape)
        return avg_pool2d(
            x, self.pool_size, self.stride, self.padding, self.count_include_pad, self.name
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "count_include_pad": self.count_include_pad}


class GlobalAvgPool2D(Module):
    """(N, C, H, W) -> (N, C): the mean of each channel."""

    def call(self, x) -> Tensor:
        x = as_float_input(self, x)
        _check_images(self, x.shape)
        return global_avg_pool2d(x)
