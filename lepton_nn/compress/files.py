"""Compressed ``.lnn`` files: a model with int8 and/or CSR weights to a ``"compressed"``
manifest and arrays (schema in :mod:`lepton_nn.runtime.compression`), and back to a float
model or a :class:`QuantizedModel`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import LeptonError, ModelFormatError
from ..nn.conv import Conv2D
from ..nn.layers import Dense
from ..nn.module import Module
from ..runtime.compression import (
    Int8Weight,
    compression_section,
    csr_entry,
    decompress,
    int8_entry,
    parse_compression,
)
from .quantized_layers import (
    RECURRENT,
    QuantizedLayer,
    QuantizedRecurrent,
    _quant_layers,
    _weights_of,
)
from .quantized_model import QuantizedModel

__all__ = [
    "compressed_to_lnn",
    "load_compressed",
    "load_quantized",
    "network_from_lnn",
    "save_compressed",
]


def compressed_to_lnn(
    model: Module,
    int8: dict[str, QuantizedLayer | QuantizedRecurrent] | None = None,
    min_sparsity: float | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """A ``"compressed"`` manifest and arrays for ``model``.

    ``int8``: layers stored as int8 (``{path: QuantizedLayer or QuantizedRecurrent}``).
    ``min_sparsity``: every other Dense weight with at least this fraction of zeros is stored
    as CSR (a pruned model).
    """
    from ..io import module_to_lnn

    int8 = int8 or {}
    section, arrays = module_to_lnn(model)
    entries: list[dict] = []
    stored: set[str] = set()

    def store(name: str, entry: dict, arrs: dict[str, np.ndarray]) -> None:
        entries.append(entry)
        arrays.update(arrs)
        del arrays["params/" + name]
        stored.add(name)

    for path, m in _quant_layers(model):
        if path in int8:
            layer = int8[path]
            for attr, q, scale, acts, shape in layer.entries():
                name = f"{path}.{attr}" if path else attr
                store(name, *int8_entry(path, m.name, name, q, scale, acts, layer.error, shape))
        elif isinstance(m, Dense) and min_sparsity is not None:
            w = m.weight.data
            zeros = 1.0 - np.count_nonzero(w) / w.size if w.size else 0.0
            if w.dtype == np.float32 and w.size and zeros >= min_sparsity:
                name = f"{path}.weight" if path else "weight"
                store(name, *csr_entry(path, m.name, name, w))
    section["params"] = [p for p in section["params"] if p not in stored]
    if entries:
        section["compression"] = compression_section(entries)
    kind = "compressed" if entries else "module"
    return {"kind": kind, "model": section}, arrays


def save_compressed(
    model: Module | QuantizedModel,
    path: str | os.PathLike[str],
    min_sparsity: float | None = 0.5,
    metadata: dict | None = None,
) -> None:
    """Save a (pruned) model with its sparse weights as CSR, or a :class:`QuantizedModel`.

    Dense weights with at least ``min_sparsity`` zeros are stored as CSR (the file shrinks
    with the sparsity; the runtime runs them with the sparse kernel where that is faster).
    """
    from .. import io

    if isinstance(model, QuantizedModel):
        prepared = _Prepared(*compressed_to_lnn(model.model, model.layers, min_sparsity))
    else:
        prepared = _Prepared(*compressed_to_lnn(model, None, min_sparsity))
    io.save(prepared, path, metadata=metadata)


class _Prepared:
    """A manifest and arrays made already, in the shape :func:`lepton_nn.save` takes."""

    def __init__(self, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
        self.manifest, self.arrays = manifest, arrays

    def to_lnn(self) -> tuple[dict, dict[str, np.ndarray]]:
        return self.manifest, self.arrays


def load_compressed(manifest: dict, arrays: dict) -> Module:
    """Loader of ``"compressed"`` files for :func:`lepton_nn.load`: the float model, with
    int8 weights dequantized (W = (q_w s_w)^T) and CSR weights made dense."""
    from ..io import module_from_lnn

    section, full = decompress(manifest.get("model"), arrays)
    return module_from_lnn(section, full)


def load_quantized(path: str | os.PathLike[str] | bytes) -> QuantizedModel:
    """Read a compressed file back as a :class:`QuantizedModel` (its int8 layers exactly)."""
    from ..runtime.format import read_lnn

    manifest, arrays = read_lnn(path)
    if manifest.get("kind") != "compressed":
        raise ModelFormatError(f"not a compressed model file (kind {manifest.get('kind')!r})")
    _, qm = network_from_lnn(manifest.get("model"), arrays)
    if qm is None:
        raise LeptonError(f"{path!r} holds no int8 layers")
    return qm


def network_from_lnn(section: Any, arrays: dict) -> tuple[Module, QuantizedModel | None]:
    """A network section with a ``compression`` value -> (float model, its int8 wrapper).

    The float model has int8 weights dequantized and CSR weights made dense (what
    :func:`lepton_nn.load` gives); the :class:`QuantizedModel` (None when no layer is int8)
    computes its int8 layers exactly as they were saved, with the runtime's kernels.
    """
    from ..io import module_from_lnn

    plain, full = decompress(section, arrays)
    model = module_from_lnn(plain, full)
    weights = parse_compression(section, arrays)
    by_path = dict(_quant_layers(model))
    layers: dict[str, QuantizedLayer | QuantizedRecurrent] = {}
    mode = "dynamic"
    recurrent: dict[str, dict[str, Int8Weight]] = {}
    for w in weights.values():
        if not isinstance(w, Int8Weight):
            continue
        m = by_path.get(w.layer)
        if isinstance(m, RECURRENT) and w.conv_shape is None:
            recurrent.setdefault(w.layer, {})[w.param.rpartition(".")[2]] = w
            continue
        if m is None or isinstance(m, Conv2D) != (w.conv_shape is not None):
            raise ModelFormatError(
                f"compressed weight {w.param!r} belongs to no Dense, Conv2D or recurrent layer "
                "of its shape"
            )
        act = w.meta.get("activations", {})
        mode = w.act_mode
        layers[w.layer] = QuantizedLayer(
            w.layer,
            m.name,
            w.q,
            w.scale,
            None if m.bias is None else np.asarray(m.bias.data, np.float32),
            m.activation,
            w.act_mode,
            w.act_scale,
            w.act_zero_point,
            act.get("method"),
            act.get("percentile"),
            w.meta.get("error"),
            w.conv_shape,
            m.get_config() if isinstance(m, Conv2D) else None,
        )
    for path, ws in recurrent.items():
        m = by_path[path]
        qr = QuantizedRecurrent.of(path, m, "dynamic", True)
        if set(ws) != set(qr.mats):
            raise ModelFormatError(
                f"layer {m.name!r}: int8 needs all of {sorted(qr.mats)}, the file has {sorted(ws)}"
            )
        qr.mats = {a: (w.q, w.scale) for a, w in ws.items()}
        ih = ws["weight_ih"]
        qr.mode, qr.act_scale, qr.act_zero_point = ih.act_mode, ih.act_scale, ih.act_zero_point
        qr.method = ih.meta.get("activations", {}).get("method")
        qr.percentile = ih.meta.get("activations", {}).get("percentile")
        qr.error = ih.meta.get("error")
        mode = ih.act_mode
        layers[path] = qr
    if not layers:
        return model, None
    report = [
        {
            "layer": p,
            "name": m.name,
            "shape": [int(d) for d in _weights_of(m)[0][1].shape],
            "int8": p in layers,
            "error": layers[p].error if p in layers else None,
            "reason": "" if p in layers else "float in file",
        }
        for p, m in by_path.items()
    ]
    return model, QuantizedModel(model, layers, report, mode)
