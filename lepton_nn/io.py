"""``save`` / ``load``: models and pipelines to and from one safe ``.lnn`` file.

The container (zip + JSON manifest + ``.npy`` arrays, hashes, atomic writes, every check on
the way in) is :mod:`lepton_nn.runtime.format`. This module maps objects onto it:

- a network (any :class:`~lepton_nn.nn.Module`): ``{"kind": "module", "model": {...}}`` with
  the architecture as layer configs, the input shape and the parameter names; arrays under
  ``params/<dotted name>``;
- an object with ``to_lnn() -> (manifest, arrays)`` and a registered loader (the tabular
  pipeline, compressed models): its own ``kind``.

Loading builds the architecture only from lepton_nn's own layer registry, under a parameter
budget equal to what the file stores, then copies the arrays in; every inconsistency is a
:class:`~lepton_nn.errors.ModelFormatError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from . import __version__
from .errors import LeptonError, ModelFormatError
from .nn.init import parameter_budget
from .nn.module import Module
from .nn.serialize import layer_from_config, layer_to_config
from .random import get_seed
from .runtime.format import read_lnn, write_lnn
from .runtime.validate import Limits, validate

__all__ = ["save", "load", "module_to_lnn", "module_from_lnn", "register_loader"]

MAX_INPUT_ELEMENTS = 10_000_000
_LOADERS: dict[str, Callable[[dict, dict], Any]] = {}


def register_loader(kind: str, fn: Callable[[dict, dict], Any]) -> None:
    """Teach :func:`load` a new ``kind`` (called by the modules that define such objects)."""
    _LOADERS[kind] = fn


def module_to_lnn(model: Module, prefix: str = "params/") -> tuple[dict, dict[str, np.ndarray]]:
    """Manifest section and arrays of a built network."""
    if model.input_shape is None and hasattr(model, "record_shapes"):
        model.record_shapes()  # a Sequential of layers built with their input sizes
    if model.input_shape is None:
        raise LeptonError(
            "save(): the model has never seen an input; call model.build(input_shape) first"
        )
    state = model.state_dict()
    one_in = model.input_shape and not isinstance(model.input_shape[0], (list, tuple))
    one_out = model.output_shape and not isinstance(model.output_shape[0], (list, tuple))
    section = {  # a graph model with several inputs / outputs: its config holds their shapes
        "architecture": layer_to_config(model),
        "input_shape": list(model.input_shape) if one_in else None,
        "output_shape": list(model.output_shape) if one_out else None,
        "dtype": _plan_dtype(model, state),
        "params": list(state),
    }
    return section, {prefix + k: v for k, v in state.items()}


def _plan_dtype(model: Module, state: dict[str, np.ndarray]) -> str:
    """The dtype the runtime computes in: the parameters' when they all share one (a
    container of float64 layers is float64 even if the container itself says float32), else
    the model's."""
    kinds = {a.dtype for a in state.values() if a.dtype.kind == "f"}
    if len(kinds) == 1:
        return kinds.pop().name
    return model.dtype.name if hasattr(model, "dtype") else "float32"


def module_from_lnn(section: Any, arrays: dict, prefix: str = "params/") -> Module:
    """Rebuild a network from its manifest section and arrays (never trusting either)."""
    if not isinstance(section, dict):
        raise ModelFormatError("model section must be an object")
    shape = section.get("input_shape")
    arch = section.get("architecture")
    graph = isinstance(arch, dict) and arch.get("class") == "Model"
    if graph and shape is None:
        shape = [None, 1]  # several inputs: the graph's config gives their shapes
    if (
        not isinstance(shape, list)
        or not shape
        or shape[0] is not None
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d for d in shape[1:])
        or int(np.prod(shape[1:], dtype=np.float64)) > MAX_INPUT_ELEMENTS
    ):
        raise ModelFormatError(f"bad input_shape {shape!r}")
    names = section.get("params")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ModelFormatError("params must be a list of names")
    missing = [n for n in names if prefix + n not in arrays]
    if missing:
        raise ModelFormatError(f"arrays missing for parameters {missing[:5]}")
    state = {n: arrays[prefix + n] for n in names}
    stored = sum(int(a.size) for a in state.values())
    import lepton_nn.compress.qdq  # noqa: F401 - registers QuantizeDequantize (imported files)

    try:
        with parameter_budget(stored):
            model = layer_from_config(arch)
            if graph:  # built by replaying its calls on the shapes it declares
                if section.get("input_shape") not in (None, list(model.input_shape)):
                    raise ModelFormatError("input_shape does not match the graph's input")
            elif model.built:  # every layer knew its input size
                model.input_shape = model.input_shape or (None, *shape[1:])
            else:
                model.build((None, *shape[1:]))
        model.load_state_dict(state, strict=True)
        if section.get("dtype") == "float64":  # layers without weights (ReLU) compute in it too
            model.astype("float64")
    except ModelFormatError:
        raise
    except (LeptonError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ModelFormatError(f"architecture and arrays do not fit together: {exc}") from exc
    model.eval()
    return model


def save(obj: Any, path: str | os.PathLike[str], metadata: dict | None = None) -> None:
    """Write a network or pipeline to ``path`` (atomically; never pickled).

    ``metadata`` (JSON-able) is stored under ``"metadata"`` in the manifest (e.g. a metrics
    card or notes).
    """
    if isinstance(obj, Module):
        section, arrays = module_to_lnn(obj)
        manifest: dict[str, Any] = {"kind": "module", "model": section}
    elif hasattr(obj, "to_lnn"):
        manifest, arrays = obj.to_lnn()
        manifest = dict(manifest)
    else:
        raise TypeError(f"save(): cannot save a {type(obj).__name__}")
    manifest.setdefault("seed", get_seed())
    manifest["created_by"] = f"lepton_nn {__version__}"
    if metadata is not None:
        manifest["metadata"] = metadata
    write_lnn(path, manifest, arrays)


def load(
    path: str | os.PathLike[str] | bytes, *, limits: Any = None, trusted_keys: Any = None
) -> Any:
    """Read a file written by :func:`save`: a network (in eval mode) or a pipeline.

    A damaged, hand-edited or hostile file raises ``ModelFormatError``; nothing in it is
    imported, evaluated or unpickled. The manifest goes through the same validator and
    resource budget as :func:`lepton_nn.runtime.load` (``limits``: see
    :class:`~lepton_nn.runtime.validate.Limits`) before any array is read.
    ``trusted_keys``: Ed25519 public keys (PEM bytes or paths); the file must be signed by
    one of them (:mod:`lepton_nn.runtime.signing`).
    """
    limits = Limits.of(limits)
    check = lambda m: validate(m, None, limits)  # noqa: E731
    manifest, arrays = read_lnn(path, check=check, trusted_keys=trusted_keys)
    kind = manifest.get("kind")
    if kind == "module":
        return module_from_lnn(manifest.get("model"), arrays)
    if isinstance(kind, str) and kind not in _LOADERS:
        _import_loader(kind)
    if kind in _LOADERS:
        try:
            return _LOADERS[kind](manifest, arrays)
        except ModelFormatError:
            raise
        except (LeptonError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise ModelFormatError(f"{kind} model: {exc}") from exc
    raise ModelFormatError(f"unknown model kind {kind!r}")


# kinds defined higher up register their loader when imported; map each to its module
_KIND_MODULES = {"tabular": "lepton_nn.tabular", "compressed": "lepton_nn.compress"}


def _import_loader(kind: str) -> None:
    module = _KIND_MODULES.get(kind)
    if module is not None:
        import importlib

        importlib.import_module(module)
