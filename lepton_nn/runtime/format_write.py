"""Writing an ``.lnn`` file (:mod:`.format` describes the file): the caller's manifest and
arrays checked before anything touches the disk, then a temporary file in the target's
directory, fsynced and renamed over it (atomic), its manifest's digest computed here."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import stat
import time
import zipfile
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from lepton_nn.errors import ModelFormatError

from .format_common import (
    _MANIFEST,
    ALLOWED_DTYPES,
    DEFAULT_MAX_ARRAYS,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_JSON_DEPTH,
    MAX_NDIM,
    _check_name,
    _member_for,
    _stored_dtype,
    manifest_digest,
)

_RESERVED_KEYS = ("format", "format_version", "arrays")
_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamp: same input, same bytes


def write_lnn(
    path: str | os.PathLike[str], manifest: dict, arrays: Mapping[str, np.ndarray]
) -> None:
    """Write ``manifest`` and ``arrays`` to ``path`` as an ``.lnn`` file, atomically.

    ``manifest`` holds JSON-able values only (dict with str keys, list, tuple, str, int, finite
    float, bool, None); ``created_by`` (a str, default ``"unknown"``) goes into the header,
    ``format``, ``format_version`` and ``arrays`` are reserved, and a ``digest`` is replaced
    by the file's own. Array names are ``/``-separated
    segments of ``[A-Za-z0-9_.-]``; dtypes must be in :data:`ALLOWED_DTYPES`. Arrays are stored
    little-endian in C order whatever their layout in memory.

    The file is written to a temporary file in the same directory, fsynced and renamed over
    ``path``: on any error the old file is left untouched and the temporary file removed.
    Temporary files that killed saves of the same ``path`` left behind are removed first
    (those no live writer holds locked).
    Invalid input raises :class:`ModelFormatError` before anything touches the disk.
    """
    created_by, prepared = _prepare(manifest, arrays)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _temp_beside(path, directory)
    try:
        _hold(fd)  # a lock while we write: the next save knows this temp file is alive
        _remove_stale_temps(directory, os.path.basename(path), tmp)
        with os.fdopen(fd, "wb") as fh:
            _write_zip(fh, created_by, manifest, prepared)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _temp_beside(path: str, directory: str) -> tuple[int, str]:
    """``mkstemp`` in ``directory``; a missing folder is named as such, not as the temporary
    file's name (``.NAME.<random>.tmp``), which the user never gave."""
    import tempfile  # only saves need it (with random, weakref...): not at import

    try:
        return tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such folder to save into", directory) from None


#: temporary files of a save of NAME: ``.NAME.<8 chars of mkstemp>.tmp``
_TMP_TAIL = r"\.[a-z0-9_]{8}\.tmp"
#: without file locks (not POSIX), a temp file this old is taken to be a killed save's
_STALE_SECONDS = 3600


def _hold(fd: int) -> None:
    """Lock the temp file being written (released when the writer closes it or dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: stale files are judged by age
        return
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _remove_stale_temps(directory: str, base: str, mine: str) -> None:
    """Delete the temp files that killed saves of the same target left behind.

    A temp file is stale when no live writer holds its lock (``flock``: released by the
    kernel when a process dies); without ``fcntl``, when it is over an hour old. Only names
    of exactly the form our own saves use are touched; errors are ignored (best effort).
    """
    pattern = re.compile(re.escape(f".{base}") + _TMP_TAIL)
    try:
        names = [n for n in os.listdir(directory) if pattern.fullmatch(n)]
    except OSError:
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        fcntl = None  # type: ignore[assignment]
    for name in names:
        full = os.path.join(directory, name)
        if os.path.abspath(full) == os.path.abspath(mine):
            continue
        with contextlib.suppress(OSError):
            if fcntl is None:
                if time.time() - os.stat(full).st_mtime > _STALE_SECONDS:
                    os.unlink(full)
                continue
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while a writer lives
                os.unlink(full)
            finally:
                os.close(fd)


def _write_zip(
    fh: IO[bytes], created_by: str, manifest: dict, prepared: list[tuple[str, np.ndarray]]
) -> None:
    """Write the arrays, then the manifest (which needs their hashes), into ``fh``."""
    zf = zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED)
    try:
        table = {name: _write_array(zf, name, arr) for name, arr in prepared}
        full = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created_by": created_by,
            "arrays": table,
            **{k: v for k, v in manifest.items() if k not in ("created_by", "digest")},
        }
        full["digest"] = {"algorithm": "sha256", "value": manifest_digest(full)}
        text = json.dumps(full, ensure_ascii=False, allow_nan=False, indent=1)
        zf.writestr(_zip_info(_MANIFEST), text.encode("utf-8"))
    except BaseException:
        # Release the ZipFile without letting its close() mask the original error; the
        # temporary file it was writing is discarded by the caller.
        with contextlib.suppress(Exception):
            zf.close()
        raise
    zf.close()


def _prepare(
    manifest: dict, arrays: Mapping[str, np.ndarray]
) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """Validate the caller's input; return ``created_by`` and (name, LE C-order array) pairs."""
    if not isinstance(manifest, dict):
        raise ModelFormatError(f"manifest must be a dict, got {type(manifest).__name__}")
    if not isinstance(arrays, Mapping):
        raise ModelFormatError(f"arrays must be a mapping, got {type(arrays).__name__}")
    for key in _RESERVED_KEYS:
        if key in manifest:
            raise ModelFormatError(f"manifest key {key!r} is reserved for the container header")
    _check_json_value(manifest, "manifest", 0)
    created_by = manifest.get("created_by", "unknown")
    if not isinstance(created_by, str):
        raise ModelFormatError(f"manifest 'created_by' must be a str, got {created_by!r}")
    if len(arrays) > DEFAULT_MAX_ARRAYS:
        raise ModelFormatError(f"{len(arrays)} arrays; at most {DEFAULT_MAX_ARRAYS} are allowed")
    prepared = []
    for name, arr in arrays.items():
        _check_name(name, "array name")
        if not isinstance(arr, np.ndarray):
            raise ModelFormatError(
                f"array {name!r} must be a numpy.ndarray, got {type(arr).__name__}"
            )
        if arr.dtype.name not in ALLOWED_DTYPES or arr.dtype.fields is not None:
            raise ModelFormatError(
                f"array {name!r} has dtype {arr.dtype}; allowed: {', '.join(ALLOWED_DTYPES)}"
            )
        if arr.ndim > MAX_NDIM:
            raise ModelFormatError(f"array {name!r} has {arr.ndim} dimensions (max {MAX_NDIM})")
        prepared.append((name, np.asarray(arr, dtype=_stored_dtype(arr.dtype.name), order="C")))
    return created_by, prepared


def _write_array(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> dict[str, Any]:
    """Stream one array into the zip as ``arrays/<name>.npy``; return its table entry."""
    member = _member_for(name)
    # Float weights barely deflate (~8 %) but inflating them is most of a load's reading time:
    # they are stored; ints and bools (indices, int8 codes, masks) deflate well and are not.
    stored = arr.dtype.kind == "f"
    with zf.open(_zip_info(member, stored), "w", force_zip64=arr.nbytes > 1 << 30) as dst:
        sink = _HashingWriter(dst)
        np.lib.format.write_array(sink, arr, allow_pickle=False)
    return {
        "file": member,
        "dtype": arr.dtype.name,
        "shape": list(arr.shape),
        "sha256": sink.sha.hexdigest(),
    }


class _HashingWriter:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.target.write(data)


def _zip_info(member: str, stored: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(member, date_time=_DATE)
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, so that the mode below means what it says
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def _new_file_mode(path: str) -> int:
    """The old file's mode if it exists, else what ``open()`` would give under the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)  # reading the umask means setting it; restored at once
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(directory: str) -> None:
    """Make the rename durable where the platform allows it (best effort)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_json_value(value: Any, where: str, depth: int) -> None:
    """Refuse anything ``json`` would not round-trip exactly (NaN, non-str keys, objects)."""
    if depth > MAX_JSON_DEPTH:
        raise ModelFormatError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ModelFormatError(f"{where} is {value}; JSON allows finite numbers only")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ModelFormatError(f"{where} has a non-str key {key!r}")
            _check_json_value(item, f"{where}[{key!r}]", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_value(item, f"{where}[{i}]", depth + 1)
        return
    raise ModelFormatError(f"{where} is a {type(value).__name__}, which is not JSON")
