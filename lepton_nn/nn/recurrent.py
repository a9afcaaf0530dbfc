"""Recurrent layers ``SimpleRNN``, ``LSTM``, ``GRU`` and the ``Embedding`` lookup.

Input (batch, time, features), batch first. Each direction runs the whole sequence as one
differentiable op (:mod:`lepton_nn.ops.recurrent`). Weights use Keras's kernel layout:

============  ===============  ================  ==========================================
layer         ``weight_ih``    ``weight_hh``     biases and gate order
============  ===============  ================  ==========================================
SimpleRNN     (F, U)           (U, U)            ``bias`` (U,);  h = tanh(x W_ih + h W_hh + b)
LSTM          (F, 4U)          (U, 4U)           ``bias`` (4U,);  blocks i, f, g (cell), o
GRU           (F, 3U)          (U, 3U)           ``bias`` (3U,) on x W_ih, ``bias_hh`` (3U,)
                                                 on h W_hh;  blocks z (update), r (reset), n
============  ===============  ================  ==========================================

PyTorch's ``weight_ih_l0`` / ``weight_hh_l0`` are the transposes (and its GRU blocks are in
the order r, z, n; its LSTM bias is ``bias_ih + bias_hh``). The GRU applies the reset gate
*after* the recurrent matmul, n = tanh(x W_in + b_in + r (h W_hn + b_hn)): PyTorch's GRU and
Keras's ``reset_after=True``. With ``bidirectional=True`` a second set of weights
(``weight_ih_reverse``, ...) reads the sequence backwards and the outputs are concatenated
(forward first) along the features.

``call(x, lengths=None, mask=None, initial_state=None)``: ``lengths`` (B,) or ``mask``
(B, T) mark the real steps of a padded batch. Past a sequence's end its state is frozen
and its outputs are 0; the reverse direction starts at each sequence's own last step.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..errors import ShapeError
from ..ops import concat
from ..ops.recurrent import embedding, gru, lengths_to_mask, lstm, simple_rnn
from ..random import rng
from .init import get_initializer
from .layers import as_input
from .module import Module, Parameter

__all__ = ["SimpleRNN", "LSTM", "GRU", "Embedding"]


class _Recurrent(Module):
    """Shared by the three layers: hyperparameters, weights per direction, masks, outputs."""

    gates = 1  # gate blocks of ``units`` columns
    n_states = 1  # state tensors per direction (LSTM: h and c)
    biases = ("bias",)

    def __init__(
        self,
        units: int,
        return_sequences: bool = False,
        return_state: bool = False,
        bidirectional: bool = False,
        input_size: int | None = None,
        kernel_initializer: str = "glorot_uniform",
        recurrent_initializer: str = "orthogonal",
        bias_initializer: str = "zeros",
        use_bias: bool = True,
        dtype="float32",
        name: str | None = None,
    ):
        super().__init__(name)
        if int(units) <= 0:
            raise ValueError(f"{type(self).__name__} units must be positive, got {units}")
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.bidirectional = bool(bidirectional)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.use_bias = bool(use_bias)
        self.dtype = np.dtype(dtype)
        self.input_size: int | None = None
        self._built = False
        if input_size is not None:
            self.build((None, None, int(input_size)))

    @property
    def directions(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def _init_bias(self, f: int) -> np.ndarray:
        g = self.gates * self.units
        return get_initializer(self.bias_initializer)((g,), f, g, rng(), self.dtype)

    def build(self, input_shape) -> _Recurrent:
        if len(input_shape) != 3:
            raise ShapeError(
                f"layer '{self.name}' ({type(self).__name__}) expects input shape "
                f"(batch, time, features), got {tuple(input_shape)}"
            )
        f, u, g = int(input_shape[-1]), self.units, self.gates * self.units
        r = rng()
        self.input_size = f
        for d in self.directions:
            w_ih = get_initializer(self.kernel_initializer)((f, g), f, g, r, self.dtype)
            w_hh = get_initializer(self.recurrent_initializer)((u, g), u, g, r, self.dtype)
            setattr(self, "weight_ih" + d, Parameter(w_ih))
            setattr(self, "weight_hh" + d, Parameter(w_hh))
            for b in self.biases:
                setattr(self, b + d, Parameter(self._init_bias(f)) if self.use_bias else None)
        self._built = True
        return self

    def _run(self, x, d: str, mask, states, reverse: bool):  # pragma: no cover - abstract
        raise NotImplementedError

    def call(self, x, lengths=None, mask=None, initial_state=None):
        """Outputs (B, T, U') if ``return_sequences`` else the final state (B, U');
        with ``return_state``, a tuple (output, *final states of each direction). Without
        ``return_sequences`` the op makes the final states alone (``sequences=False``)."""
        x = as_input(self, x)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ShapeError(
                f"layer '{self.name}' ({type(self).__name__}) expects input shape "
                f"(batch, time, {self.input_size}), got {x.shape}"
            )
        if lengths is not None and mask is not None:
            raise ValueError("give lengths or mask, not both")
        if lengths is not None:
            mask = lengths_to_mask(
                lengths.data if isinstance(lengths, Tensor) else lengths, x.shape[1]
            )
        k = self.n_states
        init = (
            list(initial_state)
            if initial_state is not None
            else [None] * (k * len(self.directions))
        )
        if len(init) != k * len(self.directions):
            raise ValueError(
                f"layer '{self.name}': initial_state needs {k * len(self.directions)} tensors, "
                f"got {len(init)}"
            )
        init = [s if s is None else as_input(self, s) for s in init]
        ys, finals = [], []
        for i, d in enumerate(self.directions):
            y, *st = self._run(x, d, mask, init[i * k : (i + 1) * k], reverse=bool(d))
            ys.append(y)
            finals.extend(st)
        if self.return_sequences:
            out = ys[0] if len(ys) == 1 else concat(ys, axis=-1)
        else:
            hs = finals[::k]
            out = hs[0] if len(hs) == 1 else concat(hs, axis=-1)
        return (out, *finals) if self.return_state else out

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "units": self.units,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "bidirectional": self.bidirectional,
            "input_size": self.input_size,
            "kernel_initializer": self.kernel_initializer,
            "recurrent_initializer": self.recurrent_initializer,
            "bias_initializer": self.bias_initializer,
            "use_bias": self.use_bias,
            "dtype": self.dtype.name,
        }


class SimpleRNN(_Recurrent):
    """Elman RNN: h_t = tanh(x_t W_ih + h_{t-1} W_hh + b). See the module docstring."""

    def _run(self, x, d, mask, states, reverse):
        w = [getattr(self, n + d) for n in ("weight_ih", "weight_hh", "bias")]
        return simple_rnn(x, *w, h0=states[0], mask=mask, reverse=reverse,
                          sequences=self.return_sequences)  # fmt: skip


class LSTM(_Recurrent):
    """Long short-term memory, gate order i, f, g, o (Keras's kernel layout):

    z = x_t W_ih + h_{t-1} W_hh + b;  i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_g)
    c_t = f c_{t-1} + i g;  h_t = o tanh(c_t).
    ``unit_forget_bias=True`` starts the forget-gate bias at 1 (Keras's default).
    ``return_state`` adds the final h and c of each direction. See the module docstring.
    """

    gates = 4
    n_states = 2

    def __init__(
        self,
        units: int,
        return_sequences: bool = False,
        return_state: bool = False,
        bidirectional: bool = False,
        input_size: int | None = None,
        kernel_initializer: str = "glorot_uniform",
        recurrent_initializer: str = "orthogonal",
        bias_initializer: str = "zeros",
        use_bias: bool = True,
        unit_forget_bias: bool = True,
        dtype="float32",
        name: str | None = None,
    ):
        self.unit_forget_bias = bool(unit_forget_bias)  # read by build(), maybe called below
        super().__init__(
            units,
            return_sequences,
            return_state,
            bidirectional,
            input_size,
            kernel_initializer,
            recurrent_initializer,
            bias_initializer,
            use_bias,
            dtype,
            name,
        )

    def _init_bias(self, f):
        b = super()._init_bias(f)
        if self.unit_forget_bias:
            b[self.units : 2 * self.units] = 1
        return b

    def _run(self, x, d, mask, states, reverse):
        w = [getattr(self, n + d) for n in ("weight_ih", "weight_hh", "bias")]
        return lstm(x, *w, h0=states[0], c0=states[1], mask=mask, reverse=reverse,
                    sequences=self.return_sequences)  # fmt: skip

    def get_config(self) -> dict:
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


class GRU(_Recurrent):
    """Gated recurrent unit, reset gate applied after the recurrent matmul (PyTorch; Keras's
    ``reset_after=True``), gate order z, r, n:

    a = h_{t-1} W_hh + bias_hh;  z = sigmoid(xz_z + a_z);  r = sigmoid(xz_r + a_r)
    n = tanh(xz_n + r a_n);  h_t = (1 - z) n + z h_{t-1},  with xz = x_t W_ih + bias.
    See the module docstring.
    """

    gates = 3
    biases = ("bias", "bias_hh")

    def _run(self, x, d, mask, states, reverse):
        w = [getattr(self, n + d) for n in ("weight_ih", "weight_hh", "bias", "bias_hh")]
        return gru(x, *w, h0=states[0], mask=mask, reverse=reverse,
                   sequences=self.return_sequences)  # fmt: skip


class Embedding(Module):
    """Integer ids (...) -> rows of ``weight`` (input_dim, output_dim): (..., output_dim).

    The table starts uniform in [-0.05, 0.05] (Keras's default); its gradient is a
    scatter-add of the output gradients by id.
    """

    def __init__(self, input_dim: int, output_dim: int, dtype="float32", name: str | None = None):
        super().__init__(name)
        if int(input_dim) <= 0 or int(output_dim) <= 0:
            raise ValueError(f"Embedding sizes must be positive, got {input_dim}, {output_dim}")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.dtype = np.dtype(dtype)
        shape = (self.input_dim, self.output_dim)
        self.weight = Parameter(rng().uniform(-0.05, 0.05, shape).astype(self.dtype))

    def call(self, ids) -> Tensor:
        return embedding(ids, self.weight)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "dtype": self.dtype.name,
        }
