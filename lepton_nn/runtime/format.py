"""The ``.lnn`` model file: a zip holding a JSON manifest and named ``.npy`` arrays.

The container knows nothing about layers. Callers put whatever JSON they like in the manifest
and whatever arrays they like in the array table; the container adds its header and checks
everything on the way back in::

    model.lnn (zip: float arrays stored, the rest deflated)
    ├── arrays/<name>.npy      one per array, little-endian, C order, never pickled
    └── manifest.json          {"format": "lepton-nn", "format_version": 1,
                                "created_by": "0.1.0",
                                "arrays": {name: {"file", "dtype", "shape", "sha256"}},
                                ...caller's keys...,
                                "digest": {"algorithm": "sha256", "value": hex},
                                "signature": {...}}          # optional, see .signing

``digest`` is the SHA-256 of the manifest without ``digest`` and ``signature``, as canonical
JSON (:func:`manifest_digest`); since the manifest lists every array's SHA-256 it covers the
whole file, and an edit by hand is refused. Integers in the manifest must fit an int64.

Reading never unpickles, never imports and never evaluates anything from the file (the ``.npy``
header is parsed here by a strict pattern, not by ``ast``). Every size is checked before it is
allocated, so a zip bomb or a huge declared shape is refused cheaply. A damaged or hostile file
raises :class:`~lepton_nn.errors.ModelFormatError` naming the member at fault; only the errors
of *opening* a path (``FileNotFoundError``, ``PermissionError``, ``IsADirectoryError``) pass
through unchanged, since those are not format problems.

The code, by responsibility: :mod:`.format_common` (names, limits, the digest),
:mod:`.format_write` (writing), :mod:`.format_read` (reading and checking) and
:mod:`.npy_header` (the strict ``.npy`` header parser). Every name is importable from here.
"""

from __future__ import annotations

# re-exported as before the split: the limits, the source type, the writer's lock (its test)
# and the modules the writer uses (tests patch os.replace and json.dumps through this module)
import json  # noqa: F401
import os  # noqa: F401

from .format_common import (  # noqa: F401
    ALLOWED_DTYPES,
    DEFAULT_MAX_ARRAYS,
    DEFAULT_MAX_BYTES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_JSON_DEPTH,
    MAX_MANIFEST_BYTES,
    MAX_NAME_LENGTH,
    MAX_NDIM,
    manifest_digest,
)
from .format_read import Source, inspect_lnn, read_lnn  # noqa: F401
from .format_write import _hold, write_lnn  # noqa: F401

__all__ = [
    "ALLOWED_DTYPES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "inspect_lnn",
    "manifest_digest",
    "read_lnn",
    "write_lnn",
]
