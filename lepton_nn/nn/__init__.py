"""Floor 5: modules with parameters. Stateless math lives in :mod:`lepton_nn.ops`."""

from .activation import (
    ELU,
    SELU,
    Clip,
    HardSigmoid,
    HardSwish,
    LeakyReLU,
    Mish,
    ReLU6,
    Sign,
    Softplus,
)
from .conv import AvgPool2D, Conv1D, Conv2D, GlobalAvgPool2D, MaxPool2D
from .graph import Input, Model, Symbol
from .init import INITIALIZERS, get_initializer
from .layers import (
    GELU,
    Activation,
    Dense,
    Dropout,
    Flatten,
    Permute,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
)
from .merge import Add, Average, Concatenate, Maximum, Merge, Multiply, Subtract
from .module import Module, Parameter
from .norm import BatchNorm, LayerNorm
from .padding import Pad1D, Pad2D
from .recurrent import GRU, LSTM, Embedding, SimpleRNN
from .serialize import layer_from_config, layer_to_config

__all__ = [
    "Module",
    "Parameter",
    "Dense",
    "Sequential",
    "Dropout",
    "Flatten",
    "Permute",
    "Activation",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "GELU",
    "Softmax",
    "LeakyReLU",
    "ReLU6",
    "ELU",
    "SELU",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Mish",
    "Sign",
    "Clip",
    "INITIALIZERS",
    "get_initializer",
    "layer_to_config",
    "layer_from_config",
    "Conv2D",
    "Conv1D",
    "Pad1D",
    "Pad2D",
    "MaxPool2D",
    "AvgPool2D",
    "GlobalAvgPool2D",
    "BatchNorm",
    "LayerNorm",
    "Embedding",
    "SimpleRNN",
    "LSTM",
    "GRU",
    "Input",
    "Model",
    "Symbol",
    "Merge",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Concatenate",
]
