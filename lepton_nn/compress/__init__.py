"""Floor 6: model compression as transforms.

Pruning: the masks (``pruning.py``), schedules and the trainer callback (``schedules.py``),
reports (``report.py``), compaction (``compaction.py``), CSR export (``csr.py``), where the
weights are (``layout.py``). int8 quantization: ``quantize`` (``quantization.py``), the int8
layers (``quantized_layers.py``), the wrapper model (``quantized_model.py``), calibration
(``calibration.py``); compressed files (``files.py``); quantization-aware training (``qat.py``).

Names load lazily on first use (PEP 562), so importing this package costs nothing until a
name is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("Pruner", "get_pruner", "prune", "prune_magnitude", "prune_structured"), ".pruning"
    ),
    **dict.fromkeys(
        ("OneShot", "PolynomialDecay", "PruningCallback", "PruningSchedule"), ".schedules"
    ),
    **dict.fromkeys(("SparsityReport", "sparsity_report", "count_flops"), ".report"),
    **dict.fromkeys(("compact", "strip"), ".compaction"),
    **dict.fromkeys(("CSRWeight", "to_sparse"), ".csr"),
}

_LAZY.update(
    {
        "quantize": ".quantization",
        "QuantizedModel": ".quantized_model",
        "QuantizedLayer": ".quantized_layers",
        "QuantizedRecurrent": ".quantized_layers",
        "quantize_weight": ".quantized_layers",
    }
)

_LAZY.update(
    dict.fromkeys(
        (
            "compressed_to_lnn",
            "save_compressed",
            "load_compressed",
            "load_quantized",
            "network_from_lnn",
        ),
        ".files",
    )
)

_LAZY.update(dict.fromkeys(("prepare_qat", "convert_qat", "QATDense", "FakeQuant"), ".qat"))
_LAZY["QuantizeDequantize"] = ".qdq"

__all__ = sorted(_LAZY)


def _load_compressed(manifest: dict, arrays: dict) -> Any:
    """``lepton_nn.load`` of a ``"compressed"`` file: the float model (see files.py)."""
    from .files import load_compressed

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
