"""The ``.npy`` preamble of each array in an ``.lnn`` file, parsed strictly without ``eval``
(:func:`_parse_npy_header`), read through a member view that hashes what it reads and never
reads past the member's declared size (:class:`_HashingReader`)."""

from __future__ import annotations

import hashlib
import re
import struct
from typing import IO

import numpy as np

from lepton_nn.errors import ModelFormatError

from .format_common import MAX_NDIM, _ArraySpec

# .npy: magic, version (1, 0) with a uint16 header length or (2, 0) with a uint32 one.
_NPY_MAGIC = b"\x93NUMPY"
_NPY_LENGTH_FORMATS = {(1, 0): "<H", (2, 0): "<I"}
_NPY_MAX_HEADER = 64 * 1024
_NPY_MAX_PREAMBLE = len(_NPY_MAGIC) + 2 + 4 + _NPY_MAX_HEADER
_NPY_ITEM_RE = re.compile(
    r"\s*'(descr|fortran_order|shape)'\s*:\s*('[^'\\]*'|True|False|\([0-9,\s]*\))\s*(,|$)"
)


class _HashingReader:
    """A read-only view of a member that hashes what is read and never reads past ``limit``
    (SHA-256; the header is read here, a stored member's data by
    :func:`.format_read._read_stored`, which goes on with the same hash)."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.raw = raw
        self.remaining = limit
        self.sha = hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = self.raw.read(max(0, min(n, self.remaining)))
        self.remaining -= len(data)
        self.sha.update(data)
        return data

    def readinto(self, buf: memoryview) -> int:
        n = self.raw.readinto(buf[: self.remaining])
        self.remaining -= n
        self.sha.update(buf[:n])
        return n

    def read_exactly(self, n: int, what: str, where: str) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.read(n - len(data))
            if not chunk:
                raise ModelFormatError(f"{where}: truncated .npy {what}")
            data += chunk
        return data


def _check_npy_header(fh: _HashingReader, spec: _ArraySpec, where: str) -> None:
    """Parse the ``.npy`` preamble strictly and require the declared dtype, shape, C order."""
    magic = fh.read_exactly(len(_NPY_MAGIC) + 2, "magic", where)
    if magic[:6] != _NPY_MAGIC:
        raise ModelFormatError(f"{where}: not a .npy array (bad magic)")
    version = (magic[6], magic[7])
    length_format = _NPY_LENGTH_FORMATS.get(version)
    if length_format is None:
        raise ModelFormatError(f"{where}: unsupported .npy version {version[0]}.{version[1]}")
    (length,) = struct.unpack(
        length_format, fh.read_exactly(struct.calcsize(length_format), "header length", where)
    )
    if length > _NPY_MAX_HEADER:
        raise ModelFormatError(f"{where}: .npy header of {length} bytes is too long")
    try:
        text = fh.read_exactly(length, "header", where).decode("ascii")
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{where}: .npy header is not ASCII") from exc
    descr, fortran_order, shape = _parse_npy_header(text, where)
    expected = np.lib.format.dtype_to_descr(spec.dtype)
    if descr != expected:
        raise ModelFormatError(
            f"{where}: .npy dtype {descr!r} does not match the declared {spec.dtype.name} "
            f"({expected!r})"
        )
    if fortran_order:
        raise ModelFormatError(f"{where}: .npy data is in Fortran order; C order is required")
    if shape != spec.shape:
        raise ModelFormatError(
            f"{where}: .npy shape {list(shape)} does not match the declared {list(spec.shape)}"
        )


def _parse_npy_header(text: str, where: str) -> tuple[str, bool, tuple[int, ...]]:
    """Parse ``{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`` without eval."""
    bad = ModelFormatError(f"{where}: malformed .npy header {text[:200]!r}")
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise bad
    body = body[1:-1]
    values: dict[str, str] = {}
    pos = 0
    while body[pos:].strip():
        match = _NPY_ITEM_RE.match(body, pos)
        if match is None or match.group(1) in values:
            raise bad
        values[match.group(1)] = match.group(2)
        pos = match.end()
    if set(values) != {"descr", "fortran_order", "shape"} or not values["descr"].startswith("'"):
        raise bad
    if values["fortran_order"] not in ("True", "False"):
        raise bad
    shape_text = values["shape"]
    if not shape_text.startswith("("):
        raise bad
    parts = [p.strip() for p in shape_text[1:-1].split(",")]
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # trailing comma
    elif parts == [""]:
        parts = []
    elif len(parts) == 1:
        raise bad  # "(3)" is not a tuple
    if len(parts) > MAX_NDIM or not all(p.isdigit() and len(p) <= 20 for p in parts):
        raise bad
    return values["descr"][1:-1], values["fortran_order"] == "True", tuple(int(p) for p in parts)
