"""The wrapper: a float model run with some of its layers in int8 (:class:`QuantizedModel`)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..autograd import Tensor, no_grad
from ..errors import LeptonError
from ..nn.conv import Conv2D
from ..nn.module import Module
from ..ops.recurrent import lengths_to_mask
from .quantized_layers import (
    QuantizedLayer,
    QuantizedRecurrent,
    _as_array,
    _quant_layers,
    _weights_of,
)

__all__ = ["QuantizedModel"]


class _RecurrentCall:
    """While a QuantizedModel runs: ``module.call`` is its int8 form (no initial_state)."""

    def __init__(self, module: Module, layer: QuantizedRecurrent) -> None:
        self.module = module

        def call(x, lengths=None, mask=None, initial_state=None):
            if initial_state is not None:
                raise LeptonError(
                    f"layer {layer.name!r} in int8 starts from a zero state (as the runtime "
                    "does): initial_state is not supported"
                )
            if lengths is not None and mask is not None:
                raise ValueError("give lengths or mask, not both")
            x = _as_array(x)
            if lengths is not None:
                mask = lengths_to_mask(_as_array(lengths), x.shape[1])
            return Tensor(layer.forward(x, None if mask is None else _as_array(mask)))

        module.call = call  # an instance attribute: found before the class's call

    def remove(self) -> None:
        del self.module.call


class QuantizedModel:
    """A float model plus the int8 form of some of its Dense, Conv2D and recurrent layers.

    ``qm(x)`` runs ``model`` with those layers computed in int8 (returns a Tensor, like the
    model); ``qm.predict(x)`` returns an array. ``layers``: ``{path: QuantizedLayer or
    QuantizedRecurrent}``; ``report``: one dict per quantizable layer (``layer``, ``name``,
    ``shape``, ``int8``, ``error``, ``reason``); ``scores``: the metric of the float and the
    final model when a budget was used.
    """

    def __init__(
        self,
        model: Module,
        layers: dict[str, QuantizedLayer],
        report: list[dict[str, Any]],
        mode: str = "dynamic",
        method: str | None = None,
    ) -> None:
        self.model = model
        self.layers = layers
        self.report = report
        self.mode = mode
        self.method = method
        self.scores: dict[str, float] = {}

    # -- running ----------------------------------------------------------------------------
    def _hooks(self) -> list[Any]:
        handles: list[Any] = []
        by_id = {id(m): p for p, m in _quant_layers(self.model)}
        for module in self.model.modules():
            path = by_id.get(id(module))
            if path in self.layers:
                layer = self.layers[path]
                if isinstance(layer, QuantizedRecurrent):
                    handles.append(_RecurrentCall(module, layer))
                    continue

                def hook(mod, args, out, layer=layer):
                    return Tensor(layer.forward(_as_array(args[0])))

                handles.append(module.register_forward_hook(hook))
        return handles

    def __call__(self, x: Any) -> Tensor:
        handles = self._hooks()
        was = self.model.training
        self.model.eval()
        try:
            with no_grad():
                return self.model(x)
        finally:
            for h in handles:
                h.remove()
            self.model.train(was)

    def predict(self, x: Any, batch_size: int = 1024) -> np.ndarray:
        """The int8 model's output for ``x`` (N, ...) as an array, in batches."""
        x = np.asarray(x)
        if x.shape[0] <= batch_size:
            return _as_array(self(x))
        return np.concatenate(
            [_as_array(self(x[i : i + batch_size])) for i in range(0, x.shape[0], batch_size)]
        )

    def eval(self) -> QuantizedModel:
        self.model.eval()
        return self

    # -- information ------------------------------------------------------------------------
    def dequantized(self) -> Module:
        """A float copy of the model whose quantized weights are replaced by q_w s_w."""
        out = copy.deepcopy(self.model)
        for path, m in _quant_layers(out):
            if path in self.layers:
                for attr, w in self.layers[path].dequantized_weights().items():
                    p = getattr(m, attr)
                    p.data = w.reshape(p.shape).astype(p.dtype)
        return out

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of the Dense, Conv2D and recurrent weight matrices: ``float`` (all float32)
        and ``quantized`` (as stored: int8 plus a float32 scale per output channel)."""
        total = quant = 0
        for path, m in _quant_layers(self.model):
            for _, p in _weights_of(m):
                size = p.data.size
                total += 4 * size
                outs = p.shape[0] if isinstance(m, Conv2D) else p.shape[-1]
                quant += size + 4 * outs if path in self.layers else 4 * size
        return {"float": total, "quantized": quant}

    def summary(self) -> str:
        """A table of the quantizable layers: shape, int8 or float (why), relative error."""
        rows = [("layer", "name", "shape", "kept as", "rel. error")]
        for r in self.report:
            err = "-" if r["error"] is None else f"{r['error']:.2e}"
            kind = "int8" if r["int8"] else f"float ({r['reason']})"
            rows.append(
                (r["layer"] or "<root>", r["name"], "x".join(map(str, r["shape"])), kind, err)
            )
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
        head = f"QuantizedModel: {len(self.layers)} int8 layers, {self.mode} activations"
        if self.scores:
            head += ", metric " + ", ".join(f"{k} {v:.4f}" for k, v in self.scores.items())
        return "\n".join([head, *lines])

    def __repr__(self) -> str:
        return f"QuantizedModel({len(self.layers)} int8 layers, mode={self.mode!r})"

    # -- file -------------------------------------------------------------------------------
    def to_lnn(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Manifest and arrays of a ``"compressed"`` file (what ``lepton_nn.save`` writes)."""
        from .files import compressed_to_lnn

        return compressed_to_lnn(self.model, self.layers)
