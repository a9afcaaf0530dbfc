"""Core layers: ``Dense`` (y = f(x W + b)), activations, Dropout, Flatten, Permute,
``Sequential``."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..autograd import Tensor
from ..backend.geometry import permute_dims
from ..backend.reference import ACT_CODE, IDENTITY
from ..errors import LeptonError, ShapeError
from ..ops.elementwise import Cast
from ..ops.linalg import Linear
from ..random import rng
from .init import get_initializer
from .module import Module, Parameter, WeightsDtype

_ALIASES = {None: "identity", "linear": "identity", "none": "identity"}
#: the five the dense/conv kernels fuse, the two along the last axis, then the elementwise
#: ones of :mod:`lepton_nn.ops.activation` (with their default parameters; "gelu" is the tanh
#: approximation, "gelu_erf" the exact form)
ACTIVATION_NAMES = (
    "identity", "relu", "sigmoid", "tanh", "gelu", "softmax", "log_softmax",
    "leaky_relu", "relu6", "elu", "selu", "hard_sigmoid", "hard_swish", "softplus", "mish",
    "gelu_erf",
)  # fmt: skip


def _activation_name(activation) -> str:
    name = _ALIASES.get(activation, activation)
    if name not in ACTIVATION_NAMES:
        raise ValueError(f"unknown activation {activation!r}; choose one of {ACTIVATION_NAMES}")
    return name


def apply_activation(x: Tensor, name: str) -> Tensor:
    """The activation ``name`` as a differentiable op."""
    if name == "identity":
        return x
    if name == "softmax":
        return x.softmax(axis=-1)
    if name == "log_softmax":
        return x.log_softmax(axis=-1)
    if name == "gelu_erf":
        return x.gelu(approximate="none")
    return getattr(x, name)()


def as_input(layer: Module, x) -> Tensor:
    """``x`` as a Tensor of the layer's dtype: numbers are cast, other data refused clearly."""
    if isinstance(x, Tensor):
        if x.dtype != layer.dtype:
            return Cast.apply(x, dtype=layer.dtype)
        return x
    if type(x) is np.ndarray and x.dtype == layer.dtype:
        return Tensor._wrap(x, False, None)  # already numbers of the layer's dtype: no checks
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise LeptonError(
            f"layer '{layer.name}' ({type(layer).__name__}) needs numeric input, got an array "
            f"of dtype {arr.dtype}; encode text columns first (lepton_nn.data.Preprocessor)"
        )
    return Tensor(arr, dtype=layer.dtype)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_input(layer: Module, x) -> Tensor:
    """``x`` as a Tensor for a layer without weights (Flatten, pooling, activations, merges):
    float32 and float64 pass in their own dtype, so a float64 model stays float64 through
    them; other numbers (ints, bools, float16) become the layer's dtype (float32 unless
    ``astype`` said otherwise), as :func:`as_input` does."""
    if isinstance(x, Tensor):
        return x if x.dtype in _FLOATS else Cast.apply(x, dtype=layer.dtype)
    if type(x) is np.ndarray and x.dtype in _FLOATS:
        return Tensor._wrap(x, False, None)
    return as_input(layer, x)


class Dense(Module):
    """Fully connected layer: y = f(x W + b).

    x: (..., in_features) -> y: (..., units); ``weight`` (in_features, units), ``bias`` (units,).
    Weights are created at the first call unless ``in_features`` is given.
    """

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        use_bias: bool = True,
        in_features: int | None = None,
        kernel_initializer: str = "glorot_uniform",
        bias_initializer: str = "zeros",
        dtype="float32",
        name: str | None = None,
    ):
        super().__init__(name)
        if int(units) <= 0:
            raise ValueError(f"Dense units must be positive, got {units}")
        self.units = int(units)
        self.activation = _activation_name(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self.dtype = np.dtype(dtype)
        self.in_features = None
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        self._built = False
        if in_features is not None:
            self.build((None, int(in_features)))

    def build(self, input_shape) -> Dense:
        shape = (None, input_shape) if isinstance(input_shape, int) else tuple(input_shape)
        if len(shape) < 2 or shape[-1] is None:
            raise ShapeError(
                f"layer '{self.name}' (Dense) builds from a batch shape (batch, ..., features), "
                f"got {shape}"
            )
        n_in = int(shape[-1])
        r = rng()
        w = get_initializer(self.kernel_initializer)(
            (n_in, self.units), n_in, self.units, r, self.dtype
        )
        self.in_features = n_in
        self.input_shape, self.output_shape = (None, n_in), (None, self.units)
        self.weight = Parameter(w)
        if self.use_bias:
            b = get_initializer(self.bias_initializer)(
                (self.units,), n_in, self.units, r, self.dtype
            )
            self.bias = Parameter(b)
        self._built = True
        return self

    def call(self, x) -> Tensor:
        x = as_input(self, x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ShapeError(
                f"layer '{self.name}' (Dense) expects input shape (batch, {self.in_features}), "
                f"got {x.shape}"
            )
        act = ACT_CODE.get(self.activation)  # None: not fused (softmax, log_softmax)
        if self.bias is None:
            y = Linear.apply(x, self.weight, act=act or IDENTITY)
        else:
            y = Linear.apply(x, self.weight, self.bias, act=act or IDENTITY)
        return y if act is not None else apply_activation(y, self.activation)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "in_features": self.in_features,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
            "dtype": self.dtype.name,
        }


class Activation(Module):
    """Applies an activation by name: relu, sigmoid, tanh, gelu, softmax, log_softmax."""

    fixed: str | None = None  # subclasses such as ReLU fix the activation

    def __init__(self, activation: str | None = None, name: str | None = None):
        super().__init__(name)
        self.activation = _activation_name(self.fixed or activation)

    def call(self, x) -> Tensor:
        return apply_activation(as_float_input(self, x), self.activation)

    def get_config(self) -> dict:
        if self.fixed:
            return {"name": self.name}
        return {"name": self.name, "activation": self.activation}


class ReLU(Activation):
    """y = max(x, 0)."""

    fixed = "relu"


class Sigmoid(Activation):
    """y = 1 / (1 + exp(-x))."""

    fixed = "sigmoid"


class Tanh(Activation):
    """y = tanh(x)."""

    fixed = "tanh"


class GELU(Activation):
    """``approximate="tanh"`` (the default, as the "gelu" activation):
    y = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); ``"none"``: y = x/2 (1 + erf(x/sqrt 2))
    (PyTorch's default GELU, the "gelu_erf" activation)."""

    def __init__(self, approximate: str = "tanh", name: str | None = None):
        if approximate not in ("tanh", "none"):
            raise ValueError(f"GELU approximate must be 'tanh' or 'none', got {approximate!r}")
        super().__init__("gelu" if approximate == "tanh" else "gelu_erf", name)
        self.approximate = approximate

    def get_config(self) -> dict:
        return {"name": self.name, "approximate": self.approximate}


class Softmax(Activation):
    """y = exp(x) / sum(exp(x)) over the last axis."""

    fixed = "softmax"


class Dropout(Module):
    """Inverted dropout: in training, zero each value with probability ``rate`` and scale the
    rest by 1 / (1 - rate); in eval mode the identity."""

    def __init__(self, rate: float, name: str | None = None):
        super().__init__(name)
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)

    def call(self, x) -> Tensor:
        x = as_float_input(self, x)
        if not self.training or self.rate == 0:
            return x
        keep = rng().random(x.shape) >= self.rate
        return x * Tensor(keep.astype(x.dtype) / np.asarray(1 - self.rate, x.dtype))

    def get_config(self) -> dict:
        return {"name": self.name, "rate": self.rate}


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    def call(self, x) -> Tensor:
        x = as_float_input(self, x)
        return x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))


class Permute(Module):
    """(N, d1, ..., dk) -> the axes after the batch reordered: output axis i is input axis
    ``dims[i - 1]`` (1-based, as Keras's ``Permute``). ``Permute((2, 3, 1))`` takes
    (N, C, H, W) to (N, H, W, C); ``Permute((3, 1, 2))`` takes it back."""

    def __init__(self, dims, name: str | None = None):
        super().__init__(name)
        self.dims = permute_dims(dims)

    def call(self, x) -> Tensor:
        x = as_float_input(self, x)
        if x.ndim != len(self.dims) + 1:
            raise ShapeError(
                f"{self.name}: dims {list(self.dims)} need {len(self.dims) + 1}-D input, "
                f"got shape {x.shape}"
            )
        return x.transpose((0, *self.dims))

    def get_config(self) -> dict:
        return {"name": self.name, "dims": list(self.dims)}


def _plain(layer: Module) -> bool:
    """Built, called before (shapes recorded), no hooks: its __call__ would only compute."""
    return (
        layer._built
        and layer.input_shape is not None
        and not (layer._forward_hooks or layer._backward_hooks)
    )


class Sequential(Module):
    """Layers applied in order: ``Sequential([Dense(64, "relu"), Dense(1)])``.

    Two neighbours that one op computes faster than two (``Module.call_fused``: a Conv2D and
    the MaxPool2D after it) run fused once both have been called, unless either has hooks;
    ``fuse=False`` runs every layer on its own.
    """

    dtype = WeightsDtype()  # its weights' (layers without weights follow their input)

    def __init__(self, layers: Iterable[Module] = (), name: str | None = None, fuse=True):
        super().__init__(name)
        self.layers: list[Module] = list(layers)
        self.fuse = bool(fuse)

    def add(self, layer: Module) -> Sequential:
        self.layers.append(layer)
        return self

    def record_shapes(self) -> bool:
        """A model whose layers were all built with their input sizes is built: record its
        input and output shapes (one zero sample through, eval mode, no gradient) so it can be
        saved without ``build``. Returns whether the shapes are known."""
        first = self.layers[0] if self.layers else None
        if self.input_shape is None and first is not None and first.input_shape is not None:
            if self.built:
                self.build(first.input_shape)
        return self.input_shape is not None

    def call(self, x):
        layers, i = self.layers, 0
        while i < len(layers):
            layer = layers[i]
            if self.fuse and i + 1 < len(layers) and _plain(layer) and _plain(layers[i + 1]):
                y = layer.call_fused(x, layers[i + 1])
                if y is not None:
                    x, i = y, i + 2
                    continue
            x, i = layer(x), i + 1
        return x

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def get_config(self) -> dict:
        from .serialize import layer_to_config

        return {"name": self.name, "layers": [layer_to_config(m) for m in self.layers]}

    @classmethod
    def from_config(cls, config: dict) -> Sequential:
        from .serialize import layer_from_config

        return cls(
            [layer_from_config(c) for c in config.get("layers", [])], name=config.get("name")
        )

    def __repr__(self) -> str:
        inner = "".join(f"\n  {m!r}," for m in self.layers)
        return f"Sequential([{inner}\n])"
