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
from lepton_nn.runtime.reasons import Reasons

__all__ = [
    "Ask",
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
    stat: tuple[int, int, int]  # (inode, mtime_ns, size) when read: what --reload compares
    loaded_at: float = field(default_factory=time.time)
    session: Any = None
    no_stream: str = ""  # why the network cannot stream (when session is None)
    reasons: Reasons | None = None  # the reason-code explainer (tabular classifiers)
    no_reasons: str = ""  # why the model cannot give reasons (when reasons is None)


@dataclass
class Ask:
    """One predict request: its rows, and ``reasons`` > 0 asks for that many reason codes
    per row (toward the class ``adverse``; None: the positive class)."""

    rows: list
    reasons: int = 0
    adverse: Any = None


class ServedModel:
    """One model file served under ``name``; ``current`` is the version new requests use."""

    def __init__(
        self,
        name: str,
        path: str,
        max_streams: int,
        idle_seconds: float | None,
        max_plans: int = 8,
    ) -> None:
        self.name, self.path = name, path
        self.max_streams, self.idle_seconds = max_streams, idle_seconds
        self.max_plans = max_plans  # the runtime's cached plans (one per batch size)
        self.current = self.read()
        self.reloads = 0

    def stat(self) -> tuple[int, int, int]:
        """What tells a new file: an atomic save (temp file + rename) brings a new inode,
        even when size and mtime match (mtime ticks with the kernel's coarse clock)."""
        st = os.stat(self.path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def read(self, previous: Version | None = None) -> Version:
        """Load the file now (a ``LeptonError`` for a bad one); streams carry over from
        ``previous`` when the new network has the same state shapes."""
        stat = self.stat()
        with open(self.path, "rb") as f:
            data = f.read()
        try:
            model = load(data, max_plans=self.max_plans)
        except LeptonError as exc:  # the runtime names bytes "<bytes>": name the file
            raise type(exc)(str(exc).replace("<bytes>", self.path, 1)) from None
        v = Version(model, hashlib.sha256(data).hexdigest(), stat)
        try:
            v.session = model.stream(max_streams=self.max_streams, idle_seconds=self.idle_seconds)
        except LeptonError as exc:
            v.no_stream = str(exc)
        try:
            v.reasons = Reasons(model, "reasons")
        except LeptonError as exc:
            v.no_reasons = str(exc)
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
        info["reasons"] = v.reasons is not None
        return info


def run_batch(version: Version, requests: list) -> list:
    """The answers of several requests (each an :class:`Ask`, or a plain list of rows), run
    as one batch: preprocessing and network over all rows at once, answers split back per
    request. A request whose rows cannot be read gets its own error (its row numbers its
    own) and the others their answers: each row's numbers are those of a run of that request
    alone (every step is row-wise; BLAS may round the network's sums differently at another
    batch size). Reason codes, for the requests that ask, are computed per request on its
    own slice of the network input (the occlusion is already a batch of C + 1 copies of its
    rows): exactly those of :func:`lepton_nn.risk.reason_codes` on the same rows."""
    model = version.model
    asks = [r if isinstance(r, Ask) else Ask(r) for r in requests]
    try:
        x = network_input(model, [r for a in asks for r in a.rows])
        counts = [len(a.rows) for a in asks]
        out: list = [None] * len(asks)
    except LeptonError:  # find the culprits: each request alone
        out, xs, counts = [], [], []
        for a in asks:
            try:
                xs.append(network_input(model, a.rows))
                out.append(None)
                counts.append(len(a.rows))
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
            if asks[i].reasons:
                try:
                    out[i]["reasons"] = _reasons(version, x[start : start + n], asks[i])
                except LeptonError as exc:
                    out[i] = exc
            start += n
    return out


def _reasons(version: Version, x: np.ndarray, ask: Ask) -> list:
    """Per row, ``[column, value, contribution]`` for the request's top ``ask.reasons``."""
    if version.reasons is None:
        raise DataError(f"this model cannot give reasons: {version.no_reasons}")
    rv = version.reasons
    rows = _fill_left_out(version.model, table_rows(version.model, ask.rows))
    codes = rv.top(rv.matrix(x, ask.adverse), rows, ask.reasons)
    return [[list(t) for t in row] for row in codes]


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
        rows = table_rows(model, rows)
        try:
            return model.transform(rows)
        except DataError:  # a left-out column (cheaper here than a check of every request)
            filled = _fill_left_out(model, rows)
            if filled is rows:
                raise
        return model.transform(filled)
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


def table_rows(model: InferenceModel, rows: list) -> Any:
    """A tabular request's rows in a form the preprocessing reads: objects as they are,
    arrays (in training column order) as one object array."""
    if not all(isinstance(r, (dict, list)) for r in rows):
        raise DataError("each row must be an object of columns or an array of values")
    if isinstance(rows[0], list) and _rectangular(rows):
        return np.array(rows, dtype=object)
    return rows


def _fill_left_out(model: InferenceModel, rows: Any) -> Any:
    """``rows`` (:func:`table_rows`) with each column a row object leaves out set to None
    (missing, as an empty CSV cell in ``predict``) when the preprocessing imputes it: a
    numeric column (its fill) or a categorical one with a fill; ``rows`` itself when no row
    leaves one out. A left-out column without a fill (missing would encode as all zeros, not
    as a value) is a DataError naming the row and column, and so is one whose name the row has
    in another case or with spaces (``age`` for ``Age``: a typo, not a missing value)."""
    if not isinstance(rows, list) or all(type(r) is not dict for r in rows):
        return rows
    columns = model.preprocessing.columns
    imputed = {s["name"] for s in columns if s["kind"] == "numeric" or s["fill"] is not None}
    out, changed = [], False
    for i, r in enumerate(rows):
        gone = [c for c in model.preprocessing.names if c not in r] if type(r) is dict else []
        for c in gone:
            key = c.strip().casefold()
            near = [k for k in r if isinstance(k, str) and k.strip().casefold() == key]
            if near:
                raise DataError(
                    f"row index {i}, column {c!r}: missing from this row, which has "
                    f"{near[0]!r} (column names are matched exactly)"
                )
            if c not in imputed:
                raise DataError(
                    f"row index {i}, column {c!r}: missing from this row (the model has no "
                    "fill for it: give its value)"
                )
        out.append({**r, **dict.fromkeys(gone)} if gone else r)
        changed = changed or bool(gone)
    return out if changed else rows


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
