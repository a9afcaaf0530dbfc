"""The models a server holds: loading, request rows -> network input, outputs -> JSON.

Plain Python on the runtime (floor 8: :mod:`lepton_nn.runtime` only, no web framework here).
A :class:`ServedModel` keeps the *current* version of one file; a reload replaces its
:class:`Version` in one assignment, and every request keeps the version it started with
(its rows transformed by that version's preprocessing, run by that version's network).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_nn.errors import DataError, LeptonError
from lepton_nn.runtime import InferenceModel, load

__all__ = [
    "ServedModel",
    "Version",
    "answers",
    "network_input",
    "parse_specs",
    "run_batch",
    "step_batch",
]


def parse_specs(specs: list[str]) -> list[tuple[str, str]]:
    """``MODEL.lnn`` or ``NAME=MODEL.lnn`` -> (name, path); the name defaults to the file's
    stem. Names are unique and URL-safe (letters, digits, ``-``, ``_``, ``.``)."""
    out: list[tuple[str, str]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            path = spec
            name = os.path.splitext(os.path.basename(spec))[0]
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise LeptonError(f"{spec}: the model name {name!r} must be letters, digits, -_.")
        if any(name == n for n, _ in out):
            raise LeptonError(f"two models are named {name!r}: give one NAME=PATH")
        out.append((name, path))
    if not out:
        raise LeptonError("give at least one model file")
    return out


@dataclass
class Version:
    """One loaded file: its runtime model, digest, and streaming session (or why none)."""

    model: InferenceModel
    sha256: str
    stat: tuple[int, int]  # (mtime_ns, size) when read: what --reload compares
    loaded_at: float = field(default_factory=time.time)
    session: Any = None
    no_stream: str = ""  # why the network cannot stream (when session is None)


class ServedModel:
    """One model file served under ``name``; ``current`` is the version new requests use."""

    def __init__(self, name: str, path: str, max_streams: int, idle_seconds: float | None):
        self.name, self.path = name, path
        self.max_streams, self.idle_seconds = max_streams, idle_seconds
        self.current = self.read()
        self.reloads = 0

    def stat(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size)

    def read(self, previous: Version | None = None) -> Version:
        """Load the file now (a ``LeptonError`` for a bad one); streams carry over from
        ``previous`` when the new network has the same state shapes."""
        stat = self.stat()
        with open(self.path, "rb") as f:
            data = f.read()
        try:
            model = load(data)
        except LeptonError as exc:  # the runtime names bytes "<bytes>": name the file
            raise type(exc)(str(exc).replace("<bytes>", self.path, 1)) from None
        v = Version(model, hashlib.sha256(data).hexdigest(), stat)
        try:
            v.session = model.stream(max_streams=self.max_streams, idle_seconds=self.idle_seconds)
        except LeptonError as exc:
            v.no_stream = str(exc)
        if v.session is not None and previous is not None and previous.session is not None:
            try:
                v.session.import_state(previous.session.export_state())
            except LeptonError:
                pass  # another architecture: its streams start afresh
        return v

    def describe(self) -> dict:
        """What ``GET /v1/models`` says about this model."""
        v = self.current
        m = v.model
        info: dict[str, Any] = {
            "name": self.name,
            "version": v.sha256[:12],
            "sha256": v.sha256,
            "file": os.path.basename(self.path),
            "kind": m.kind,
            "loaded_at": v.loaded_at,
            "reloads": self.reloads,
        }
        if m.preprocessing is not None:
            info["inputs"] = {"columns": list(m.preprocessing.names)}
        else:
            info["inputs"] = {"shape": list(m.input_shape)}
        if m.kind == "tabular":
            info["task"] = m.task
            if m.classes is not None:
                info["outputs"] = {"classes": m.classes.tolist(), "threshold": m.threshold}
            else:
                info["outputs"] = {"prediction": "value"}
        else:
            info["outputs"] = {"shape": list(m.output_shape)}
        info["streaming"] = v.session is not None
        return info


def run_batch(version: Version, requests: list[list]) -> list:
    """The answers of several requests' rows (each a list), run as one batch: preprocessing
    and network over all rows at once, answers split back per request. A request whose rows
    cannot be read gets its own error (its row numbers its own) and the others their
    answers: each row's numbers are those of a run of that request alone (every step is
    row-wise; BLAS may round the network's sums differently at another batch size)."""
    model = version.model
    try:
        x = network_input(model, [r for rows in requests for r in rows])
        counts = [len(rows) for rows in requests]
        out: list = [None] * len(requests)
    except LeptonError:  # find the culprits: each request alone
        out, xs, counts = [], [], []
        for rows in requests:
            try:
                xs.append(network_input(model, rows))
                out.append(None)
                counts.append(len(rows))
            except LeptonError as exc:
                out.append(exc)
        if not xs:
            return out
        x = np.concatenate(xs)
    doc = answers(model, model.forward(x))
    start = 0
    n_out = iter(counts)
    for i, slot in enumerate(out):
        if slot is None:
            n = next(n_out)
            out[i] = {k: v[start : start + n] for k, v in doc.items()}
            start += n
    return out


def step_batch(version: Version, requests: list[tuple[list, np.ndarray]]) -> list:
    """One streaming step for several requests ``(keys, x)`` (x (S, F)): their streams step
    together, in groups of requests with no stream in common (a stream named by two requests
    steps twice, in order). A group that fails steps request by request, so that only the
    request at fault gets the error (a failed step changes no state)."""
    session = version.session
    out: list = [None] * len(requests)

    def run(group: list[int]) -> None:
        keys = [k for i in group for k in requests[i][0]]
        try:  # x of different widths do not concatenate: each alone then, for its own error
            y = session.step(np.concatenate([requests[i][1] for i in group]), keys)
        except (LeptonError, ValueError):
            for i in group:
                try:
                    out[i] = session.step(requests[i][1], requests[i][0])
                except LeptonError as exc:
                    out[i] = exc
            return
        start = 0
        for i in group:
            n = len(requests[i][0])
            out[i] = y[start : start + n]
            start += n

    group: list[int] = []
    seen: set = set()
    for i, (keys, _) in enumerate(requests):
        if not seen.isdisjoint(keys):
            run(group)
            group, seen = [], set()
        group.append(i)
        seen.update(keys)
    run(group)
    return out


def network_input(model: InferenceModel, rows: Any, name: str = "") -> np.ndarray:
    """Request rows -> the network's input (N, *input_shape). Tabular files: rows as objects
    of raw columns or arrays in training column order, through the file's preprocessing;
    bare networks: numeric arrays. ``DataError`` / ``ShapeError`` name the row and column."""
    if not isinstance(rows, list) or not rows:
        raise DataError("'rows' must be a non-empty list of rows (objects or arrays)")
    if model.preprocessing is not None:
        if not all(isinstance(r, (dict, list)) for r in rows):
            raise DataError("each row must be an object of columns or an array of values")
        if isinstance(rows[0], list) and _rectangular(rows):
            rows = np.array(rows, dtype=object)
        return model.transform(rows)
    if any(isinstance(r, dict) for r in rows):
        raise DataError(
            f"model {name!r} is a bare network: rows must be arrays of shape "
            f"{list(model.input_shape[1:])}, not objects"
        )
    try:
        x = np.asarray(rows, dtype=model.network.dtype)
    except (ValueError, TypeError) as exc:
        raise DataError(f"rows must be numeric arrays of one shape: {exc}") from None
    return model._check(x)


def answers(model: InferenceModel, out: np.ndarray) -> dict:
    """The network's output for some rows -> ``{"predictions", "probabilities"}`` (tabular
    classification), ``{"predictions"}`` (regression) or ``{"outputs"}`` (bare network):
    the numbers ``predict`` / ``predict_proba`` give for the same rows."""
    if model.kind != "tabular":
        return {"outputs": out.tolist()}
    if model.task == "regression":
        mu, sd = model.target_scale
        flat = out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out
        return {"predictions": (flat.astype(np.float64) * sd + mu).tolist()}
    proba = model._proba(out)  # the runtime's own: binary sigmoid in float64, softmax
    if model.task == "binary":
        codes = (proba[:, 1] >= model.threshold).astype(np.intp)
    else:
        codes = proba.argmax(axis=1)
    labels = model.classes[codes] if model.classes is not None else codes
    return {"predictions": labels.tolist(), "probabilities": proba.tolist()}


def _rectangular(rows: list) -> bool:
    n = len(rows[0])
    return all(isinstance(r, list) and len(r) == n for r in rows)
