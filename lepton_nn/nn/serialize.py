"""Architecture <-> JSON-able config. Only lepton_nn's own layer classes can be named.

``{"class": "Dense", "config": {"units": 64, ...}}``; containers nest their layers' configs.
Nothing named in a config is imported or evaluated: the class is looked up in a registry of
the library's layers, and an unknown name is a ``ModelFormatError``.
"""

from __future__ import annotations

import inspect

from ..errors import ModelFormatError
from .module import REGISTRY, Module


def layer_to_config(module: Module) -> dict:
    return {"class": type(module).__name__, "config": module.get_config()}


def layer_from_config(cfg: dict) -> Module:
    if not isinstance(cfg, dict) or not isinstance(cfg.get("class"), str):
        raise ModelFormatError(f"a layer entry must be an object with a 'class' name, got {cfg!r}")
    name = cfg["class"]
    cls = REGISTRY.get(name)
    if cls is None or name.startswith("_"):
        raise ModelFormatError(f"unknown layer type {name!r}")
    config = cfg.get("config", {})
    if not isinstance(config, dict):
        raise ModelFormatError(f"config of layer {name!r} must be an object")
    if hasattr(cls, "from_config"):
        return cls.from_config(config)
    params = inspect.signature(cls.__init__).parameters
    unknown = set(config) - set(params)
    if unknown:
        raise ModelFormatError(f"layer {name!r}: unknown settings {sorted(unknown)}")
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"layer {name!r}: bad settings ({exc})") from exc
