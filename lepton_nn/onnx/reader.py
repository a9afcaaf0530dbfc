"""Reading an ONNX file that may be hostile: parse with the ``onnx`` package, then check.

``read_onnx(source) -> (ModelProto, {initializer name: ndarray})``. The checks, all before
any array is built:

- the file is at most ``MAX_FILE_BYTES``; a damaged protobuf is a ``ModelFormatError``;
- every node is in the default domain (``""``/``ai.onnx``), ``ai.onnx.ml`` or ONNX Runtime's
  built-in ``com.microsoft`` (whose quantized operators :mod:`.qoperator` reads as their
  definition; any other of its operators is listed as unsupported): no custom-op library is
  named, no model-local function is ever run (their nodes would call them by
  domain), and graphs nested in attributes (``If``/``Loop``) are not entered;
- every tensor: an allowed dtype, non-negative dims, at most ``MAX_TENSOR_BYTES``, the graph's
  tensors together at most ``MAX_TOTAL_BYTES``, at most ``MAX_NODES`` nodes;
- external data: only a relative ``location`` naming a regular file inside the model's own
  folder (no absolute path, no ``..``, no symbolic link leading out), whose ``offset`` and
  ``length`` fit the file and the declared shape; read here, never by the ``onnx`` helpers.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lepton_nn.errors import MissingExtraError, ModelFormatError

__all__ = ["read_onnx", "MAX_FILE_BYTES", "MAX_TENSOR_BYTES", "MAX_TOTAL_BYTES", "MAX_NODES"]

MAX_FILE_BYTES = 2 * 1024**3
MAX_TENSOR_BYTES = 1024**3
MAX_TOTAL_BYTES = 2 * 1024**3
MAX_NODES = 100_000
DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")

# TensorProto data type -> NumPy dtype, for the types a model may hold here
_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
           10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}  # fmt: skip


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # a LeptonError too: the CLI prints it as one line
        raise MissingExtraError(
            'ONNX import and export need the onnx package: pip install "lepton-nn[onnx]"'
        ) from exc
    return onnx


def read_onnx(source: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """Parse and check an ONNX model (a path, bytes or a ``ModelProto``); return the model
    and its initializers as NumPy arrays."""
    onnx = _onnx()
    folder = None
    label = "ONNX model"
    if isinstance(source, onnx.ModelProto):
        model = source
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        else:
            path = os.fspath(source)
            label, folder = path, os.path.dirname(os.path.abspath(path))
            size = os.path.getsize(path)
            if size > MAX_FILE_BYTES:
                raise ModelFormatError(f"{label}: {size} bytes, more than {MAX_FILE_BYTES}")
            with open(path, "rb") as fh:
                data = fh.read()
        if not data:
            raise ModelFormatError(f"{label}: the file is empty")
        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except Exception as exc:  # protobuf's DecodeError and friends
            raise ModelFormatError(f"{label}: not a valid ONNX file ({exc})") from exc
    if not model.HasField("graph") or not model.graph.output:
        raise ModelFormatError(f"{label}: not an ONNX model (no graph or no output)")
    _check_graph(model, label)
    arrays = _initializers(model, folder, label)
    return model, arrays


def _check_graph(model, label: str) -> None:
    graph = model.graph
    if len(graph.node) > MAX_NODES:
        raise ModelFormatError(f"{label}: {len(graph.node)} nodes, more than {MAX_NODES}")
    for op in model.opset_import:
        if op.domain not in DOMAINS:
            raise ModelFormatError(
                f"{label}: imports the custom operator domain {op.domain!r}; only the standard "
                "ONNX operators are run here"
            )
    for fn in model.functions:  # a local function could stand in for a built-in operator
        if fn.domain in DOMAINS:
            raise ModelFormatError(
                f"{label}: the local function {fn.name!r} is in the built-in domain {fn.domain!r}"
            )
    for node in graph.node:
        if node.domain not in DOMAINS:
            raise ModelFormatError(
                f"{label}: node {node.name!r} ({node.op_type}) is in the custom domain "
                f"{node.domain!r}; only the standard ONNX operators are run here"
            )


def _initializers(model, folder: str | None, label: str) -> dict[str, np.ndarray]:
    """Every initializer and Constant tensor, checked, as arrays (Constants by output name)."""
    onnx = _onnx()
    tensors = [(t.name, t) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and node.output:
                    tensors.append((node.output[0], attr.t))
    total = 0
    out = {}
    for name, t in tensors:
        where = f"{label}: tensor {name!r}"
        dtype = _DTYPES.get(t.data_type) or ("object" if t.data_type == 8 else None)
        if t.data_type == 8 and t.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelFormatError(f"{where}: external string data is not supported")
        if dtype is None:
            raise ModelFormatError(f"{where}: data type {t.data_type} is not supported")
        dims = list(t.dims)
        if any(d < 0 for d in dims):
            raise ModelFormatError(f"{where}: negative dimension in {dims}")
        nbytes = int(np.prod(dims, dtype=object)) * np.dtype(dtype).itemsize if dims else 8
        nbytes += sum(len(v) for v in t.string_data)  # text (class names)
        if nbytes > MAX_TENSOR_BYTES:
            raise ModelFormatError(f"{where}: declared shape {dims} takes {nbytes} bytes")
        total += nbytes
        if total > MAX_TOTAL_BYTES:
            raise ModelFormatError(f"{label}: the tensors take more than {MAX_TOTAL_BYTES} bytes")
        if t.data_location == onnx.TensorProto.EXTERNAL:
            out[name] = _external(t, dims, np.dtype(dtype), folder, where)
            continue
        try:
            arr = onnx.numpy_helper.to_array(t)
        except Exception as exc:
            raise ModelFormatError(f"{where}: damaged tensor data ({exc})") from exc
        if list(arr.shape) != dims:
            raise ModelFormatError(f"{where}: holds {arr.shape}, declares {dims}")
        out[name] = np.array(arr, order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
    return out


def _external(t, dims: list[int], dtype: np.dtype, folder: str | None, where: str) -> np.ndarray:
    """Read one tensor's external data after checking where it points."""
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    if folder is None:
        raise ModelFormatError(f"{where}: external data, but the model was not read from a file")
    parts = location.replace("\\", "/").split("/")
    if (
        not location
        or os.path.isabs(location)
        or location.startswith(("/", "\\"))
        or (len(location) > 1 and location[1] == ":")
        or any(p in ("..", "") for p in parts)
        or "\x00" in location
    ):
        raise ModelFormatError(
            f"{where}: external data location {location!r} is outside the model's folder"
        )
    path = os.path.realpath(os.path.join(folder, *parts))
    if os.path.commonpath([path, os.path.realpath(folder)]) != os.path.realpath(folder):
        raise ModelFormatError(
            f"{where}: external data location {location!r} leads outside the model's folder"
        )
    if not os.path.isfile(path):
        raise ModelFormatError(f"{where}: external data file {location!r} does not exist")
    try:
        offset = int(info.get("offset", 0))
        nbytes = int(np.prod(dims, dtype=object)) * dtype.itemsize
        length = int(info.get("length", nbytes))
    except ValueError as exc:
        raise ModelFormatError(f"{where}: bad external data offset or length") from exc
    size = os.path.getsize(path)
    if offset < 0 or length != nbytes or offset + length > size:
        raise ModelFormatError(
            f"{where}: external data ({offset}+{length} bytes) does not fit {location!r} "
            f"({size} bytes) or the declared shape {dims}"
        )
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(length)
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(dims)
