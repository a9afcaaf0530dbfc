"""Floor 6: model compression as transforms -- pruning (``pruning.py``), quantization.

Names load lazily on first use (PEP 562), so importing this package costs nothing until a
name is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    name: ".pruning"
    for name in (
        "Pruner",
        "get_pruner",
        "prune",
        "prune_magnitude",
        "prune_structured",
        "OneShot",
        "PolynomialDecay",
        "PruningCallback",
        "PruningSchedule",
        "SparsityReport",
        "sparsity_report",
        "count_flops",
        "compact",
        "strip",
        "CSRWeight",
        "to_sparse",
    )
}

_LAZY.update(
    dict.fromkeys(
        (
            "quantize",
            "QuantizedModel",
            "QuantizedLayer",
            "QuantizedRecurrent",
            "quantize_weight",
            "compressed_to_lnn",
            "save_compressed",
            "load_compressed",
            "load_quantized",
            "network_from_lnn",
        ),
        ".quantization",
    )
)

_LAZY.update(dict.fromkeys(("prepare_qat", "convert_qat", "QATDense", "FakeQuant"), ".qat"))
_LAZY["QuantizeDequantize"] = ".qdq"

__all__ = sorted(_LAZY)


def _load_compressed(manifest: dict, arrays: dict) -> Any:
    """``lepton_nn.load`` of a ``"compressed"`` file: the float model (see quantization.py)."""
    from .quantization import load_compressed

    return load_compressed(manifest, arrays)


def _register_loader() -> None:
    from ..io import register_loader

    register_loader("compressed", _load_compressed)


_register_loader()


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'lepton_nn.compress' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
