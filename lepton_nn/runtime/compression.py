"""The ``compression`` section of a network in an ``.lnn`` file: int8 and sparse weights.

A compressed network is an ordinary network section (``architecture``, ``input_shape``,
``output_shape``, ``dtype``, ``params``) whose listed ``params`` are the arrays still stored in
float (under ``params/<name>``), plus one entry per compressed weight. Files holding a bare
compressed network have ``"kind": "compressed"``; :func:`lepton_nn.load` turns them back into
a float model (dequantized / densified weights), :func:`lepton_nn.runtime.load` runs them with
the int8 and sparse kernels. Schema (format ``"lepton_nn.compression"``, version 1)::

    "model": {..., "params": ["layers.0.bias", ...],          # float arrays params/<name>
      "compression": {"format": "lepton_nn.compression", "version": 1, "layers": [
        {"layer": "layers.0", "name": "dense", "param": "layers.0.weight", "method": "int8",
         "weight": {"q": "compressed/layers.0.weight/q",        # int8 (N, K) = rint(W^T / s)
                    "scale": "compressed/layers.0.weight/scale",  # float32 (N,), s > 0
                    "zero_point": 0, "axis": 0,                 # symmetric, per output channel
                    "shape": [K, N]},                           # the float weight W (in, out)
         "activations": {"mode": "dynamic"}                     # uint8 per row, from each batch
                      | {"mode": "static", "scale": s_x, "zero_point": z_x,   # per tensor
                         "method": "minmax" | "percentile", "percentile": p},
         "error": 0.004},                                        # optional: calibration report
        {"layer": "layers.2", "name": "conv2d", "param": "layers.2.weight", "method": "int8",
         "weight": {"q": ..., "scale": ..., "zero_point": 0, "axis": 0,
                    "shape": [F, C, kh, kw]},                   # a Conv2D weight: q int8
         "activations": {...}},                                  #   (F, C*kh*kw), scale (F,)
        {"layer": "layers.3", "name": "lstm", "param": "layers.3.weight_hh", "method": "int8",
         "weight": {..., "shape": [U, 4 U]},                    # a recurrent matrix (in, out)
         "activations": {"mode": "dynamic"}},                   #   h: per row, every step
        {"layer": "layers.1", "param": "layers.1.weight", "method": "csr",
         "weight": {"data": "compressed/layers.1.weight/data",       # float32 (nnz,)
                    "indices": "compressed/layers.1.weight/indices", # int32 (nnz,), in [0, K)
                    "indptr": "compressed/layers.1.weight/indptr",   # int32 (N + 1,)
                    "shape": [K, N]}}]}}                         # CSR of W^T: row n = unit n

int8 Dense, y = f(x W + b), with x quantized to uint8 (q_x, s_x, z_x) and W^T to int8 (q_w, s_w):
``y[m, n] = f(s_x[m] s_w[n] sum_k (q_x[m, k] - z_x[m]) q_w[n, k] + b[n])``, the sum exact in
int32. Dynamic activations: per row m, lo = min(0, min x_m), hi = max(0, max x_m),
s_x = (hi - lo) / 255, z_x = clip(rint(-lo / s_x), 0, 255); static: one (s_x, z_x) fixed by
calibration, q_x = clip(rint(x / s_x) + z_x, 0, 255).

int8 Conv2D (a 4-entry weight ``shape``; stride, padding, dilation and activation come from the
architecture) is the same product on the unfolded image: with X (OH OW, kh kw C) the windows
of image n (one row per output pixel), y[n, :, oy, ox] = f(s_x s_w sum (q_x - z_x) q_w^T + b),
activations quantized with one (s_x, z_x) per image (dynamic, from the image's own range) or
with the calibrated (s_x, z_x) of the conv's input (static); the padding zeros are exact (the
range holds 0, which quantizes to z_x).

int8 LSTM / GRU / SimpleRNN: entries for ``weight_ih`` and ``weight_hh`` (``_reverse`` too when
bidirectional), each (in, out) like a Dense weight. The input product of all steps,
x W_ih + b, is an int8 product as above (dynamic per row, or static with the calibrated pair
of the layer's input); at every step h W_hh is another, h quantized per row (always dynamic:
its range changes from step to step); the gates are computed in float.

Everything read here comes from an untrusted file: every name, dtype, shape and index range is
checked, and a mistake raises :class:`~lepton_nn.errors.ModelFormatError`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lepton_nn.errors import ModelFormatError, ShapeError

from .kernels import kernels
from .record import Record

__all__ = [
    "COMPRESSION_FORMAT",
    "COMPRESSION_VERSION",
    "CSRWeight",
    "INT8_ATTRS",
    "Int8Weight",
    "csr_arrays",
    "csr_density",
    "csr_entry",
    "csr_to_dense",
    "decompress",
    "int8_entry",
    "parse_compression",
]

COMPRESSION_FORMAT = "lepton_nn.compression"
COMPRESSION_VERSION = 1
PREFIX = "compressed/"
ACT_MODES = ("dynamic", "static")
#: the parameters an int8 entry may hold: a Dense / Conv2D ``weight``, or a recurrent
#: layer's input and recurrent matrices (each direction); CSR holds Dense weights only
INT8_ATTRS = ("weight", "weight_ih", "weight_hh", "weight_ih_reverse", "weight_hh_reverse")


class Int8Weight(Record):
    """Symmetric per-output-channel int8 weight of a Dense or Conv2D layer, or one matrix of
    a recurrent layer (module docstring): ``q`` int8 (N, K), W^T quantized; ``scale``
    float32 (N,); ``act_scale`` and ``act_zero_point`` for the static mode only.

    ``conv_shape``: the Conv2D weight's shape (F, C, kh, kw), q being (F, C*kh*kw); None for
    a Dense weight.
    """

    _fields = ("layer", "param", "q", "scale", "act_mode", "act_scale", "act_zero_point",
               "meta", "conv_shape")  # fmt: skip

    def __init__(
        self, layer: str, param: str, q: np.ndarray, scale: np.ndarray,
        act_mode: str = "dynamic", act_scale: float = 1.0, act_zero_point: int = 0,
        meta: dict[str, Any] | None = None,
        conv_shape: tuple[int, int, int, int] | None = None,
    ) -> None:  # fmt: skip
        self.layer, self.param, self.q, self.scale = layer, param, q, scale
        self.act_mode, self.act_scale, self.act_zero_point = act_mode, act_scale, act_zero_point
        self.meta = {} if meta is None else meta
        self.conv_shape = conv_shape

    @property
    def shape(self) -> tuple[int, ...]:
        """The float weight's shape: (in, out) = (K, N) for Dense, (F, C, kh, kw) for Conv2D."""
        if self.conv_shape is not None:
            return self.conv_shape
        return (int(self.q.shape[1]), int(self.q.shape[0]))

    def dequantize(self) -> np.ndarray:
        """W float32: (K, N) = (q_w * s_w[:, None])^T, or that product reshaped (F, C, kh, kw)."""
        w = self.q.astype(np.float32) * self.scale[:, None]
        if self.conv_shape is not None:
            return np.ascontiguousarray(w.reshape(self.conv_shape))
        return np.ascontiguousarray(w.T)


class CSRWeight(Record):
    """A pruned Dense weight W (K, N) as the CSR of W^T (row n lists the inputs of unit n):
    ``indptr`` int32 (N + 1,), ``indices`` int32 (nnz,), ``data`` float32 (nnz,), ``shape``
    (K, N)."""

    _fields = ("layer", "param", "indptr", "indices", "data", "shape", "meta")

    def __init__(
        self, layer: str, param: str, indptr: np.ndarray, indices: np.ndarray,
        data: np.ndarray, shape: tuple[int, int], meta: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.layer, self.param = layer, param
        self.indptr, self.indices, self.data, self.shape = indptr, indices, data, shape
        self.meta = {} if meta is None else meta

    @property
    def density(self) -> float:
        return csr_density(self.data, self.shape)

    def to_dense(self) -> np.ndarray:
        """W (K, N), zeros where pruned."""
        return csr_to_dense(self.indptr, self.indices, self.data, self.shape)


# ------------------------------------------------------------------------- writing


def int8_entry(
    layer: str,
    name: str,
    param: str,
    q: np.ndarray,
    scale: np.ndarray,
    activations: dict[str, Any],
    error: float | None = None,
    shape: tuple[int, ...] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Manifest entry and arrays for an int8 weight: q int8 (N, K), scale float32 (N,).

    ``shape``: the float weight's shape when it is not (K, N), i.e. (F, C, kh, kw) for Conv2D.
    """
    base = f"{PREFIX}{param}/"
    entry: dict[str, Any] = {
        "layer": layer,
        "name": name,
        "param": param,
        "method": "int8",
        "weight": {
            "q": base + "q",
            "scale": base + "scale",
            "zero_point": 0,
            "axis": 0,
            "shape": [int(d) for d in shape]
            if shape is not None
            else [int(q.shape[1]), int(q.shape[0])],
        },
        "activations": dict(activations),
    }
    if error is not None and math.isfinite(error):
        entry["error"] = float(error)
    arrays = {
        base + "q": np.ascontiguousarray(q, dtype=np.int8),
        base + "scale": np.ascontiguousarray(scale, dtype=np.float32),
    }
    return entry, arrays


def csr_entry(
    layer: str, name: str, param: str, w: np.ndarray
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Manifest entry and arrays storing the Dense weight ``w`` (K, N) as the CSR of W^T."""
    indptr, indices, data = csr_arrays(w)
    base = f"{PREFIX}{param}/"
    entry = {
        "layer": layer,
        "name": name,
        "param": param,
        "method": "csr",
        "weight": {
            "data": base + "data",
            "indices": base + "indices",
            "indptr": base + "indptr",
            "shape": [int(w.shape[0]), int(w.shape[1])],
        },
    }
    arrays = {base + "data": data, base + "indices": indices, base + "indptr": indptr}
    return entry, arrays


def csr_arrays(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W (K, N) -> CSR of W^T: indptr int32 (N + 1,), indices int32 (nnz,), data float32.

    Checks the shape, then packs with the backend's ``to_csr`` (kernels/sparse.pyx, or its
    reference twin): the one CSR packer, also behind :func:`lepton_nn.compress.to_sparse`.
    """
    w = np.asarray(w)
    if w.ndim != 2 or w.size >= 2**31:
        raise ShapeError(
            f"CSR needs a 2-D weight (in, out) with < 2**31 entries, got shape {w.shape}"
        )
    return kernels().to_csr(w)


def csr_to_dense(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """W (K, N) from the CSR of W^T (the inverse of :func:`csr_arrays`), data's dtype."""
    k, n = shape
    w = np.zeros((k, n), dtype=data.dtype)
    w[indices, np.repeat(np.arange(n), np.diff(indptr))] = data
    return w


def csr_density(data: np.ndarray, shape: tuple[int, int]) -> float:
    """nnz / (K N): the fraction of W that is stored (0 for an empty W)."""
    size = shape[0] * shape[1]
    return data.size / size if size else 0.0


def compression_section(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``compression`` value of a network section holding ``entries``."""
    return {"format": COMPRESSION_FORMAT, "version": COMPRESSION_VERSION, "layers": entries}


# ------------------------------------------------------------------------- reading


def _fail(msg: str) -> ModelFormatError:
    return ModelFormatError(f"compression section: {msg}")


def _array(arrays: dict, spec: dict, key: str, dtype: str, shape: tuple | None, where: str):
    name = spec.get(key)
    if not isinstance(name, str) or name not in arrays:
        raise _fail(f"{where}: array {key!r} ({name!r}) is not in the file")
    a = arrays[name]
    if a.dtype != np.dtype(dtype):
        raise _fail(f"{where}: array {name!r} is {a.dtype}, expected {dtype}")
    if shape is not None and a.shape != shape:
        raise _fail(f"{where}: array {name!r} has shape {a.shape}, expected {shape}")
    return np.ascontiguousarray(a)


def _shape(spec: dict, where: str, ranks: tuple[int, ...] = (2,)) -> tuple[int, ...]:
    s = spec.get("shape")
    if (
        not isinstance(s, list)
        or len(s) not in ranks
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s)
        or math.prod(s) >= 2**31
    ):
        what = " or ".join(map(str, ranks))
        raise _fail(f"{where}: weight shape {s!r} is not {what} positive ints")
    return tuple(int(d) for d in s)


def _number(v: Any, what: str, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _fail(f"{what} must be a finite number, got {v!r}")
    if positive and not v > 0:
        raise _fail(f"{what} must be positive, got {v!r}")
    return float(v)


def _parse_int8(e: dict, arrays: dict, where: str) -> Int8Weight:
    w = e.get("weight")
    if not isinstance(w, dict):
        raise _fail(f"{where}: 'weight' must be an object")
    shape = _shape(w, where, (2, 4))
    if len(shape) == 4:  # Conv2D (F, C, kh, kw): q is (F, C*kh*kw)
        n, k = shape[0], shape[1] * shape[2] * shape[3]
    else:
        k, n = shape
    if w.get("zero_point", 0) != 0 or w.get("axis", 0) != 0:
        raise _fail(f"{where}: only symmetric per-output-channel weights (zero_point 0, axis 0)")
    q = _array(arrays, w, "q", "int8", (n, k), where)
    scale = _array(arrays, w, "scale", "float32", (n,), where)
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise _fail(f"{where}: weight scales must be finite and positive")
    if (q == -128).any():
        raise _fail(f"{where}: int8 weights must lie in [-127, 127]")
    act = e.get("activations", {"mode": "dynamic"})
    if not isinstance(act, dict) or act.get("mode") not in ACT_MODES:
        raise _fail(f"{where}: activations mode must be one of {ACT_MODES}, got {act!r}")
    out = Int8Weight(e["layer"], e["param"], q, scale, act["mode"], meta=dict(e))
    if len(shape) == 4:
        out.conv_shape = shape  # type: ignore[assignment]
    if act["mode"] == "static":
        out.act_scale = _number(act.get("scale"), f"{where}: activation scale", positive=True)
        zp = act.get("zero_point")
        if isinstance(zp, bool) or not isinstance(zp, int) or not 0 <= zp <= 255:
            raise _fail(f"{where}: activation zero_point must be an int in [0, 255], got {zp!r}")
        out.act_zero_point = zp
    return out


def _parse_csr(e: dict, arrays: dict, where: str) -> CSRWeight:
    w = e.get("weight")
    if not isinstance(w, dict):
        raise _fail(f"{where}: 'weight' must be an object")
    k, n = _shape(w, where)
    indptr = _array(arrays, w, "indptr", "int32", (n + 1,), where)
    indices = _array(arrays, w, "indices", "int32", None, where)
    data = _array(arrays, w, "data", "float32", None, where)
    nnz = data.shape[0] if data.ndim == 1 else -1
    if indices.ndim != 1 or indices.shape[0] != nnz:
        raise _fail(f"{where}: data and indices must be 1-D of the same length")
    if indptr[0] != 0 or indptr[-1] != nnz or (np.diff(indptr) < 0).any():
        raise _fail(f"{where}: indptr must start at 0, never decrease and end at nnz={nnz}")
    if nnz and (indices.min() < 0 or indices.max() >= k):
        raise _fail(f"{where}: an index lies outside [0, {k})")
    # within a row, indices strictly increase (kernels differ on repeats: one sums them, one
    # keeps the last); a step that is not positive must be where a new row begins
    if nnz > 1:
        bad = np.flatnonzero(np.diff(indices) <= 0) + 1
        starts = np.zeros(nnz + 1, bool)
        starts[indptr[:-1]] = True
        bad = bad[~starts[bad]]
        if bad.size:
            row = int(np.searchsorted(indptr, bad[0], side="right")) - 1
            raise _fail(f"{where}: row {row} has duplicate or unsorted column indices")
    if not np.isfinite(data).all():
        raise _fail(f"{where}: sparse weights must be finite")
    return CSRWeight(e["layer"], e["param"], indptr, indices, data, (k, n), meta=dict(e))


def parse_compression(section: Any, arrays: dict) -> dict[str, Int8Weight | CSRWeight]:
    """Validate a network section's ``compression`` value; ``{param name: weight}``.

    Returns ``{}`` when the section has none.
    """
    comp = section.get("compression") if isinstance(section, dict) else None
    if comp is None:
        return {}
    if not isinstance(comp, dict) or comp.get("format") != COMPRESSION_FORMAT:
        raise _fail(f"not a {COMPRESSION_FORMAT} section")
    if comp.get("version") != COMPRESSION_VERSION:
        raise _fail(f"version {comp.get('version')!r} is not supported")
    entries = comp.get("layers")
    if not isinstance(entries, list):
        raise _fail("'layers' must be a list")
    out: dict[str, Int8Weight | CSRWeight] = {}
    for i, e in enumerate(entries):
        where = f"entry {i}"
        if not isinstance(e, dict) or not all(
            isinstance(e.get(k), str) for k in ("layer", "param", "method")
        ):
            raise _fail(f"{where}: needs string 'layer', 'param' and 'method'")
        attrs = INT8_ATTRS if e["method"] == "int8" else ("weight",)
        if e["param"] not in [f"{e['layer']}.{a}" if e["layer"] else a for a in attrs]:
            raise _fail(f"{where}: param {e['param']!r} is not a weight of {e['layer']!r}")
        if e["param"] in out:
            raise _fail(f"{where}: {e['param']!r} is compressed twice")
        where = f"{where} ({e['param']})"
        if e["method"] == "int8":
            out[e["param"]] = _parse_int8(e, arrays, where)
        elif e["method"] == "csr":
            out[e["param"]] = _parse_csr(e, arrays, where)
        else:
            raise _fail(f"{where}: unknown method {e['method']!r} (int8, csr)")
    return out


def decompress(section: Any, arrays: dict, prefix: str = "params/") -> tuple[dict, dict]:
    """A plain float network section and arrays: int8 weights dequantized, CSR densified.

    What :func:`lepton_nn.io.module_from_lnn` reads; the section's other keys are kept.
    """
    weights = parse_compression(section, arrays)
    if not weights:
        return section, arrays
    plain = {k: v for k, v in section.items() if k != "compression"}
    names = plain.get("params")
    if not isinstance(names, list):
        raise ModelFormatError("params must be a list of names")
    out = dict(arrays)
    for param, w in weights.items():
        if param in names:
            raise _fail(f"{param!r} is stored both in float and compressed")
        out[prefix + param] = (
            w.dequantize() if isinstance(w, Int8Weight) else w.to_dense().astype(np.float32)
        )
    plain["params"] = [*names, *weights]
    return plain, out
