"""Floor 3: ``Tensor``, ``Function``, ``backward()``, ``no_grad()`` and ``gradcheck()``."""

from .function import Function
from .grad_mode import enable_grad, is_grad_enabled, no_grad
from .gradcheck import gradcheck
from .tensor import Tensor, as_array

__all__ = [
    "Tensor",
    "Function",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "gradcheck",
    "as_array",
]
