"""Shared by tests/test_fuzz_models.py (bounded) and benchmarks/fuzz_models.py (long run).

A few small but varied model files (convolution, recurrent, tabular, int8, CSR, Embedding);
mutations of their manifest *values* (any field replaced by a hostile value, deleted, or a
list grown) and of their bytes; and :func:`outcome`, which loads a case through
``lepton_nn.load``, ``lepton_nn.runtime.load`` and ``runtime.from_manifest``, runs what loaded
on an input of the declared shape, and returns what happened. The only allowed outcomes are
``"ok"`` and ``"ModelFormatError"``; anything else is returned as ``"CRASH <type>: ..."``.
"""

from __future__ import annotations

import copy
import io
import math
from typing import Any

import numpy as np

import lepton_nn as L
from lepton_nn import nn
from lepton_nn.errors import ModelFormatError
from lepton_nn.runtime import from_manifest
from lepton_nn.runtime import load as rt_load
from lepton_nn.runtime.format import write_lnn

HEADER = ("format", "format_version", "arrays", "digest")
#: values a careless or hostile hand puts where a field was (JSON-able)
HOSTILE: list[Any] = [
    0, -1, 1, 2, 3, 7, 2**31, 2**62, -(2**63), 2**63 - 1, 10**12, 0.5, -0.0, 1e-300, 1e300,
    float(np.finfo(np.float32).max) * 2, "", "same", "valid", "relu", "softmax", "sigmoid",
    "log_softmax", "module", "tabular", "compressed", "binary", "multiclass", "regression",
    "float64", "float16", "probabilities", "logits", "int8", "csr", "static", "Dense",
    "Sequential", "LSTM", None, True, False, [], [0], [None], [None, 0], [None, 10**9],
    [1, 1], [2, 2], [10**9, 1], ["a", "b", "c"], {}, {"a": 1}, {"class": "Dense"},
]  # fmt: skip
#: only in memory (from_manifest): JSON files cannot carry them past the parser
UNBOUNDED: list[Any] = [10**400, -(10**400), 10**30]


def _models() -> dict[str, tuple[dict, dict]]:
    from lepton_nn.compress import compressed_to_lnn, quantize
    from lepton_nn.nn.conv import Conv2D, MaxPool2D
    from lepton_nn.nn.norm import BatchNorm
    from lepton_nn.nn.recurrent import GRU, LSTM, Embedding
    from lepton_nn.tabular import TabularModel

    def module(layers, shape):
        L.set_seed(0)
        m = nn.Sequential(layers)
        m.build((None, *shape))
        return m

    out = {}
    cnn = module(
        [Conv2D(2, 3, padding="same", activation="relu"), BatchNorm(), MaxPool2D(2),
         nn.Flatten(), nn.Dense(3, "softmax")], (1, 6, 6),
    )  # fmt: skip
    out["cnn"] = cnn
    out["lstm"] = module([LSTM(3, return_sequences=True), GRU(2, bidirectional=True)], (4, 3))
    out["embedding"] = module([Embedding(5, 2), nn.Flatten(), nn.Dense(1)], (3,))
    mlp = module([nn.Dense(6, "relu"), nn.Dense(3)], (4,))
    files = {k: _save(v) for k, v in out.items()}
    files["int8"] = _save(quantize(mlp))
    w = mlp.layers[0].weight.data
    w[np.random.default_rng(0).random(w.shape) < 0.6] = 0
    files["csr"] = compressed_to_lnn(mlp, None, min_sparsity=0.3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 2))
    tab = TabularModel(hidden=(3,), epochs=1, seed=0, validation_split=0.0)
    cols = {"a": x[:, 0], "b": x[:, 1], "c": np.where(x[:, 0] > 1, "u", "v")}
    files["tabular"] = tab.fit(cols, np.where(x[:, 1] > 0, "yes", "no")).to_lnn()
    for k, (m, a) in files.items():  # what write_lnn takes: no container header
        files[k] = ({kk: vv for kk, vv in m.items() if kk not in HEADER}, a)
    return files


def _save(obj) -> tuple[dict, dict]:
    """(manifest, arrays) as ``lepton_nn.save`` would write them."""
    if hasattr(obj, "to_lnn"):
        return obj.to_lnn()
    from lepton_nn.io import module_to_lnn

    section, arrays = module_to_lnn(obj)
    return {"kind": "module", "model": section}, arrays


MODELS: dict[str, tuple[dict, dict]] = {}


def models() -> dict[str, tuple[dict, dict]]:
    if not MODELS:
        MODELS.update(_models())
    return MODELS


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a JSON value, the root excluded."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*prefix, k))
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((*prefix, i))
            out += paths(v, (*prefix, i))
    return out


def mutate(manifest: dict, path: tuple, how: str, value: Any) -> dict:
    """A copy of ``manifest`` with the node at ``path`` replaced by ``value``, deleted, or
    (a list) grown by ``value``."""
    m = copy.deepcopy(manifest)
    node = m
    for key in path[:-1]:
        node = node[key]
    last = path[-1]
    if how == "delete":
        del node[last]
    elif how == "append" and isinstance(node[last], list):
        node[last].append(value)
    else:
        node[last] = value
    return m


def _probe(model: Any) -> None:
    """Run what a loader returned on an input of its declared shape."""
    if isinstance(model, nn.Module):
        shape = model.input_shape[1:]
        model(np.zeros((2, *shape), np.float32))
    elif hasattr(model, "forward") and hasattr(model, "network"):  # InferenceModel
        model.forward(np.zeros((2, *model.network.input_shape), model._dtype))


def _run(fn) -> str:
    try:
        _probe(fn())
        return "ok"
    except ModelFormatError:
        return "ModelFormatError"
    except Exception as exc:  # noqa: BLE001 - every other outcome is what we look for
        return f"CRASH {type(exc).__name__}: {str(exc)[:200]}"


def outcome(manifest: dict, arrays: dict, data: bytes | None = None) -> dict[str, str]:
    """What each loader does with the case (a manifest and arrays, or a file's bytes)."""
    out = {}
    if data is None:
        in_json = _json_safe(manifest)
        out["memory"] = _run(lambda: from_manifest(copy.deepcopy(manifest), arrays))
        if not in_json:
            return out
        buf = io.BytesIO()
        try:
            _write(buf, manifest, arrays)
        except ModelFormatError:
            out["write"] = "ModelFormatError"
            return out
        data = buf.getvalue()
    out["lepton_nn.load"] = _run(lambda: L.load(data))
    out["runtime.load"] = _run(lambda: rt_load(data))
    return out


def _write(buf: io.BytesIO, manifest: dict, arrays: dict) -> None:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.lnn")
        write_lnn(path, manifest, arrays)
        with open(path, "rb") as fh:
            buf.write(fh.read())


def _json_safe(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(_json_safe(x) for x in v.values())
    if isinstance(v, list):
        return all(_json_safe(x) for x in v)
    return True


def file_bytes(name: str) -> bytes:
    buf = io.BytesIO()
    _write(buf, *models()[name])
    return buf.getvalue()
