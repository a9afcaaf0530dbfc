"""The ``.lnn`` container's common ground: its names, limits and dtypes, the array table's
row, array names and members, and the manifest digest (:mod:`.format` describes the file;
:mod:`.format_write` writes it, :mod:`.format_read` reads and checks it)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from lepton_nn.errors import ModelFormatError

from .record import FrozenRecord

FORMAT_NAME = "lepton-nn"
FORMAT_VERSION = 1

#: dtypes an array may have, by ``np.dtype(...).name``; stored little-endian.
ALLOWED_DTYPES: tuple[str, ...] = (
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "float16",
    "float32",
    "float64",
)

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MAX_ARRAYS = 10_000
MAX_MANIFEST_BYTES = 16 * 1024**2
MAX_NAME_LENGTH = 200
MAX_NDIM = 64
MAX_JSON_DEPTH = 64

_MANIFEST = "manifest.json"
#: manifest keys the digest leaves out: itself and the signature made over it
_UNDIGESTED = ("digest", "signature")
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*")


class _ArraySpec(FrozenRecord):
    """One validated row of the manifest's ``arrays`` table."""

    _fields = ("name", "file", "dtype", "shape", "nbytes", "sha256")

    def __init__(self, name: str, file: str, dtype: np.dtype, shape: tuple[int, ...],
                 nbytes: int, sha256: str) -> None:  # fmt: skip
        self._set(name=name, file=file, dtype=dtype, shape=shape, nbytes=nbytes, sha256=sha256)


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the manifest without its ``digest`` and ``signature``, as canonical
    JSON (sorted keys, no spaces, UTF-8). The manifest holds every array's SHA-256, so this
    one value covers the whole file; a signature signs it (:mod:`.signing`)."""
    body = {k: v for k, v in manifest.items() if k not in _UNDIGESTED}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_name(name: object, what: str) -> None:
    if (
        not isinstance(name, str)
        or len(name) > MAX_NAME_LENGTH
        or not _NAME_RE.fullmatch(name)
        or any(part in (".", "..") for part in name.split("/"))
    ):
        raise ModelFormatError(
            f"{what} {name!r} is invalid: use '/'-separated segments of [A-Za-z0-9_.-], "
            f"no '.' or '..' segments, at most {MAX_NAME_LENGTH} characters"
        )


def _member_for(name: str) -> str:
    return f"arrays/{name}.npy"


def _stored_dtype(name: str) -> np.dtype:
    """The on-disk (little-endian) dtype for an allowed dtype name."""
    return np.dtype(name).newbyteorder("<")
