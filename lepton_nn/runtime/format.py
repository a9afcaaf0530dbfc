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
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

import numpy as np

from lepton_nn.errors import ModelFormatError

from .record import FrozenRecord

__all__ = [
    "ALLOWED_DTYPES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "inspect_lnn",
    "manifest_digest",
    "read_lnn",
    "write_lnn",
]

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
_RESERVED_KEYS = ("format", "format_version", "arrays")
#: manifest keys the digest leaves out: itself and the signature made over it
_UNDIGESTED = ("digest", "signature")
_ENTRY_KEYS = {"file", "dtype", "shape", "sha256"}
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_ZIP_MAGIC = b"PK\x03\x04"
_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamp: same input, same bytes
_CHUNK = 16 * 1024**2

# .npy: magic, version (1, 0) with a uint16 header length or (2, 0) with a uint32 one.
_NPY_MAGIC = b"\x93NUMPY"
_NPY_LENGTH_FORMATS = {(1, 0): "<H", (2, 0): "<I"}
_NPY_MAX_HEADER = 64 * 1024
_NPY_MAX_PREAMBLE = len(_NPY_MAGIC) + 2 + 4 + _NPY_MAX_HEADER
_NPY_ITEM_RE = re.compile(
    r"\s*'(descr|fortran_order|shape)'\s*:\s*('[^'\\]*'|True|False|\([0-9,\s]*\))\s*(,|$)"
)

# What a damaged archive can make zipfile, zlib, struct or the decoders raise.
_DAMAGE_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    OSError,
    EOFError,
    ValueError,
    UnicodeError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    SyntaxError,
    IndexError,
    KeyError,
    TypeError,
)

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]


class _ArraySpec(FrozenRecord):
    """One validated row of the manifest's ``arrays`` table."""

    _fields = ("name", "file", "dtype", "shape", "nbytes", "sha256")

    def __init__(self, name: str, file: str, dtype: np.dtype, shape: tuple[int, ...],
                 nbytes: int, sha256: str) -> None:  # fmt: skip
        self._set(name=name, file=file, dtype=dtype, shape=shape, nbytes=nbytes, sha256=sha256)


# --------------------------------------------------------------------------- writing


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
    import tempfile  # only saves need it (with random, weakref...): not at import

    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
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


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the manifest without its ``digest`` and ``signature``, as canonical
    JSON (sorted keys, no spaces, UTF-8). The manifest holds every array's SHA-256, so this
    one value covers the whole file; a signature signs it (:mod:`.signing`)."""
    body = {k: v for k, v in manifest.items() if k not in _UNDIGESTED}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_digest(manifest: dict, where: str) -> None:
    """A file with a digest must match it: an edit by hand (a label, a threshold, an
    activation) is refused. Files written before digests existed have none."""
    if "digest" not in manifest:
        return
    d = manifest["digest"]
    if (
        not isinstance(d, dict)
        or set(d) != {"algorithm", "value"}
        or d["algorithm"] != "sha256"
        or not isinstance(d["value"], str)
        or not _SHA_RE.fullmatch(d["value"])
    ):
        raise ModelFormatError(f"{where}: malformed digest {d!r:.100}")
    if d["value"] != manifest_digest(manifest):
        raise ModelFormatError(
            f"{where}: digest mismatch: the manifest was edited or damaged after it was written"
        )


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


# --------------------------------------------------------------------------- reading


def read_lnn(
    source: Source,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_arrays: int = DEFAULT_MAX_ARRAYS,
    check: Callable[[dict], Any] | None = None,
    trusted_keys: Any = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify an ``.lnn`` file; return ``(manifest, arrays)``.

    ``source`` is a path, the file's bytes, or a seekable binary file object. ``max_bytes``
    caps the total size of the arrays (and the archive), ``max_arrays`` their number; both are
    checked against the manifest before anything large is read or allocated.

    The manifest is returned whole, header (``format``, ``format_version``, ``created_by``,
    ``arrays``) included. Arrays come back in manifest order as fresh, writable, C-contiguous,
    native-endian arrays owned by the caller (nothing shares memory with the file).

    ``check(manifest)``, when given, runs once the manifest and its array table are verified
    and before any array data is read (the loaders' validator and budget: a hostile file
    costs nothing more than its manifest). The manifest's ``digest`` (over the manifest and
    so every array's SHA-256) must match. ``trusted_keys`` (Ed25519 public keys: PEM bytes
    or paths): the file must carry a signature of its digest by one of them
    (:mod:`lepton_nn.runtime.signing`, needs ``cryptography``), checked before any array
    is read.

    Raises :class:`ModelFormatError` for anything wrong with the content. Errors of opening a
    path (``FileNotFoundError`` and other ``OSError``) propagate unchanged; an unsupported
    ``source`` type raises ``TypeError``.
    """
    with _open_source(source) as (fp, label):
        return _read(
            fp, label, max_bytes, max_arrays, load=True, check=check, trusted_keys=trusted_keys
        )


def inspect_lnn(
    source: Source,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_arrays: int = DEFAULT_MAX_ARRAYS,
) -> dict[str, Any]:
    """Return the manifest of an ``.lnn`` file without loading its arrays.

    Checks everything :func:`read_lnn` checks except the array data and its SHA-256: the
    archive, its members, the manifest and each array's declared size and ``.npy`` header.
    """
    with _open_source(source) as (fp, label):
        manifest, _ = _read(fp, label, max_bytes, max_arrays, load=False)
        return manifest


@contextlib.contextmanager
def _open_source(source: Source) -> Iterator[tuple[IO[bytes], str]]:
    """Yield a seekable binary file for ``source`` and a label for messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source)), "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        with open(path, "rb") as fh:  # FileNotFoundError & co. are not format errors
            yield fh, str(path)
    elif hasattr(source, "read") and hasattr(source, "seek"):
        yield source, str(getattr(source, "name", "<file object>"))
    else:
        raise TypeError(
            f"expected a path, bytes or a binary file object, got {type(source).__name__}"
        )


@contextlib.contextmanager
def _damage(label: str, what: str) -> Iterator[None]:
    """Turn the errors a damaged archive provokes into ModelFormatError naming ``what``."""
    try:
        yield
    except ModelFormatError:
        raise
    except _DAMAGE_ERRORS as exc:
        raise ModelFormatError(f"{label}: {what}: {type(exc).__name__}: {exc}") from exc


def _read(
    fp: IO[bytes],
    label: str,
    max_bytes: int,
    max_arrays: int,
    *,
    load: bool,
    check: Callable[[dict], Any] | None = None,
    trusted_keys: Any = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    def fail(message: str) -> ModelFormatError:
        return ModelFormatError(f"{label}: {message}")

    with _damage(label, "cannot read the file"):
        start = fp.tell()
        head = fp.read(len(_ZIP_MAGIC))
        size = fp.seek(0, io.SEEK_END) - start
        fp.seek(start)
    if size == 0:
        raise fail("the file is empty (not a lepton-nn model file)")
    if head != _ZIP_MAGIC:
        raise fail("not a lepton-nn model file (not a zip archive)")
    # Deflate may grow incompressible data a little; each member costs ~100 bytes of zip headers.
    limit = max_bytes + max_bytes // 64 + MAX_MANIFEST_BYTES + (max_arrays + 1) * 4096
    if size > limit:
        raise fail(f"the file is {size} bytes, more than max_bytes={max_bytes} allows")

    with _damage(label, "not a valid zip archive"):
        zf = zipfile.ZipFile(fp, "r")
    with zf, _damage(label, "damaged zip archive"):
        infos = _check_members(zf, label, max_arrays)
        manifest = _read_manifest(zf, infos, label)
        specs = _check_array_table(manifest, label, max_bytes, max_arrays)
        if trusted_keys is not None:  # who wrote it, before anything else is trusted
            from .signing import verify_manifest  # cryptography: imported only here

            _check_digest(manifest, f"{label}: member {_MANIFEST!r}")
            verify_manifest(manifest, trusted_keys, label)
        expected = {_MANIFEST, *(spec.file for spec in specs)}
        for member in infos:
            if member not in expected:
                raise fail(f"member {member!r}: unexpected member (not declared in the manifest)")
        for spec in specs:
            if spec.file not in infos:
                raise fail(f"member {spec.file!r}: missing (array {spec.name!r} is declared)")
        if check is not None:
            try:
                check(manifest)
            except ModelFormatError as exc:
                raise fail(str(exc)) from exc
        arrays = {}
        for spec in specs:
            with _damage(label, f"member {spec.file!r}"):
                array = _read_array(zf, infos[spec.file], spec, label, load)
            if array is not None:
                arrays[spec.name] = array
    # last, so that the more specific checks above name what is wrong with a damaged file
    _check_digest(manifest, f"{label}: member {_MANIFEST!r}")
    return manifest, arrays


def _check_members(zf: zipfile.ZipFile, label: str, max_arrays: int) -> dict[str, zipfile.ZipInfo]:
    """Refuse unsafe, duplicate, linked, encrypted or oddly compressed members."""
    infos: dict[str, zipfile.ZipInfo] = {}
    entries = zf.infolist()
    if len(entries) > max_arrays + 1:
        raise ModelFormatError(
            f"{label}: {len(entries)} members; max_arrays={max_arrays} allows fewer"
        )
    for info in entries:
        name = info.filename
        where = f"{label}: member {name!r}"
        if (
            not name
            or name.startswith(("/", "\\"))
            or "\\" in name
            or "\x00" in name
            or re.match(r"[A-Za-z]:", name)
            or any(part in ("..", ".") for part in name.split("/"))
        ):
            raise ModelFormatError(f"{where}: unsafe path (absolute or with '..')")
        if name in infos:
            raise ModelFormatError(f"{where}: duplicate member name")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ModelFormatError(f"{where}: symbolic link entries are not allowed")
        if info.flag_bits & 0x1:
            raise ModelFormatError(f"{where}: encrypted entries are not allowed")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFormatError(
                f"{where}: compression method {info.compress_type} is not supported"
            )
        infos[name] = info
    return infos


def _read_manifest(zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], label: str) -> dict:
    """Read, decode and check the manifest's header fields."""
    where = f"{label}: member {_MANIFEST!r}"
    info = infos.get(_MANIFEST)
    if info is None:
        raise ModelFormatError(f"{label}: no {_MANIFEST!r} member (not a lepton-nn model file)")
    if info.file_size > MAX_MANIFEST_BYTES:
        raise ModelFormatError(f"{where}: {info.file_size} bytes, more than {MAX_MANIFEST_BYTES}")
    with _damage(label, f"member {_MANIFEST!r}"), zf.open(info) as fh:
        raw = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ModelFormatError(f"{where}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
        manifest = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{where}: not valid UTF-8 ({exc})") from exc
    except (ValueError, RecursionError) as exc:
        raise ModelFormatError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ModelFormatError(f"{where}: must be a JSON object, got {type(manifest).__name__}")

    fmt = manifest.get("format")
    if fmt != FORMAT_NAME:
        raise ModelFormatError(f"{where}: format is {fmt!r}, expected {FORMAT_NAME!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{where}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{label}: written with format version {version}, but this lepton_nn reads up to "
            f"version {FORMAT_VERSION}; upgrade lepton_nn to read it"
        )
    created_by = manifest.get("created_by", "unknown")
    if not isinstance(created_by, str):
        raise ModelFormatError(f"{where}: 'created_by' must be a string, got {created_by!r}")
    return manifest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def _bounded_int(text: str) -> int:
    """JSON integers are unbounded; the manifest's must fit an int64 (so ``float(v)`` and
    NumPy never overflow on one, and a 10**400 is refused here, by the parser)."""
    if len(text) > 20:
        raise ValueError(f"integer {text[:40]}... is out of range")
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"integer {text} is out of range (int64)")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]!r} is out of range")
    return value


def _check_array_table(
    manifest: dict, label: str, max_bytes: int, max_arrays: int
) -> list[_ArraySpec]:
    """Validate the ``arrays`` table; the declared sizes must fit ``max_bytes`` in total."""
    where = f"{label}: member {_MANIFEST!r}"
    table = manifest.get("arrays")
    if not isinstance(table, dict):
        raise ModelFormatError(f"{where}: 'arrays' must be an object, got {type(table).__name__}")
    if len(table) > max_arrays:
        raise ModelFormatError(f"{where}: {len(table)} arrays, more than max_arrays={max_arrays}")
    specs = []
    total = 0
    for name, entry in table.items():
        at = f"{where}: array {name!r}"
        _check_name(name, at)
        if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
            raise ModelFormatError(f"{at}: entry must have exactly the keys {sorted(_ENTRY_KEYS)}")
        if entry["file"] != _member_for(name):
            raise ModelFormatError(f"{at}: file {entry['file']!r} should be {_member_for(name)!r}")
        dtype_name = entry["dtype"]
        if not isinstance(dtype_name, str) or dtype_name not in ALLOWED_DTYPES:
            raise ModelFormatError(
                f"{at}: dtype {dtype_name!r} is not allowed (allowed: {', '.join(ALLOWED_DTYPES)})"
            )
        shape = entry["shape"]
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_NDIM
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise ModelFormatError(f"{at}: shape {shape!r} is not a list of non-negative ints")
        sha = entry["sha256"]
        if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
            raise ModelFormatError(f"{at}: sha256 {sha!r} is not 64 lowercase hex digits")
        dtype = _stored_dtype(dtype_name)
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        total += nbytes
        if total > max_bytes:
            raise ModelFormatError(
                f"{at}: declared shape {shape} ({nbytes} bytes) takes the arrays past "
                f"max_bytes={max_bytes}"
            )
        specs.append(_ArraySpec(name, entry["file"], dtype, tuple(shape), nbytes, sha))
    return specs


def _read_array(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, spec: _ArraySpec, label: str, load: bool
) -> np.ndarray | None:
    """Check one member against its spec; with ``load``, read, hash and return its data."""
    where = f"{label}: member {spec.file!r}"
    # Zip-bomb guard: the member's uncompressed size must be the declared data plus a header.
    if not spec.nbytes + len(_NPY_MAGIC) + 4 <= info.file_size <= spec.nbytes + _NPY_MAX_PREAMBLE:
        raise ModelFormatError(
            f"{where}: uncompressed size {info.file_size} does not fit the declared "
            f"{spec.dtype.name} shape {list(spec.shape)} ({spec.nbytes} bytes of data)"
        )
    with zf.open(info) as raw:
        fh = _HashingReader(raw, info.file_size)
        _check_npy_header(fh, spec, where)
        if fh.remaining != spec.nbytes:
            raise ModelFormatError(
                f"{where}: {fh.remaining} bytes of data after the header, expected {spec.nbytes}"
            )
        if not load:
            return None
        out = np.empty(spec.shape, dtype=spec.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos = 0
        while pos < spec.nbytes:
            got = fh.readinto(view[pos : pos + _CHUNK])
            if not got:
                raise ModelFormatError(f"{where}: truncated data ({pos} of {spec.nbytes} bytes)")
            pos += got
        if raw.read(1):  # also lets zipfile finish its CRC check
            raise ModelFormatError(f"{where}: trailing bytes after the array data")
    if fh.sha.hexdigest() != spec.sha256:
        raise ModelFormatError(f"{where}: SHA-256 mismatch (the file is damaged or was edited)")
    if spec.dtype == np.bool_ and out.size and out.view(np.uint8).max() > 1:
        raise ModelFormatError(f"{where}: bool array holds bytes other than 0 and 1")
    if not out.dtype.isnative:
        out = out.astype(out.dtype.newbyteorder("="))
    return out


class _HashingReader:
    """A read-only view of a member that hashes what is read and never reads past ``limit``."""

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


# --------------------------------------------------------------------------- shared helpers


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
