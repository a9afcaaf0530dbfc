"""Reading an ``.lnn`` file and checking everything in it (:mod:`.format` describes the
file): the archive and its members, the manifest and its header, the array table against the
budget, each array's ``.npy`` header, data and SHA-256, and the digest. A damaged or hostile
file raises :class:`~lepton_nn.errors.ModelFormatError` naming the member at fault."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np

from lepton_nn.errors import ModelFormatError

from .format_common import (
    _MANIFEST,
    ALLOWED_DTYPES,
    DEFAULT_MAX_ARRAYS,
    DEFAULT_MAX_BYTES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_MANIFEST_BYTES,
    MAX_NDIM,
    _ArraySpec,
    _check_name,
    _member_for,
    _stored_dtype,
    manifest_digest,
)
from .npy_header import _NPY_MAGIC, _NPY_MAX_PREAMBLE, _check_npy_header, _HashingReader

_ENTRY_KEYS = {"file", "dtype", "shape", "sha256"}
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_ZIP_MAGIC = b"PK\x03\x04"
_CHUNK = 16 * 1024**2

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
                array = _read_array(zf, fp, infos[spec.file], spec, label, load)
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
    zf: zipfile.ZipFile,
    fp: IO[bytes],
    info: zipfile.ZipInfo,
    spec: _ArraySpec,
    label: str,
    load: bool,
) -> np.ndarray | None:
    """Check one member against its spec; with ``load``, read, hash and return its data."""
    where = f"{label}: member {spec.file!r}"
    # Zip-bomb guard: the member's uncompressed size must be the declared data plus a header.
    if not spec.nbytes + len(_NPY_MAGIC) + 4 <= info.file_size <= spec.nbytes + _NPY_MAX_PREAMBLE:
        raise ModelFormatError(
            f"{where}: uncompressed size {info.file_size} does not fit the declared "
            f"{spec.dtype.name} shape {list(spec.shape)} ({spec.nbytes} bytes of data)"
        )
    with zf.open(info) as raw:  # zipfile checks the local header (name, flags, overlap)
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
        if info.compress_type == zipfile.ZIP_STORED and hasattr(fp, "readinto"):
            _read_stored(fp, info, fh, view, where)
        else:
            _read_through(raw, fh, view, spec.nbytes, where)
    if fh.sha.hexdigest() != spec.sha256:
        raise ModelFormatError(f"{where}: SHA-256 mismatch (the file is damaged or was edited)")
    if spec.dtype == np.bool_ and out.size and out.view(np.uint8).max() > 1:
        raise ModelFormatError(f"{where}: bool array holds bytes other than 0 and 1")
    if not out.dtype.isnative:
        out = out.astype(out.dtype.newbyteorder("="))
    return out


def _read_through(raw: IO[bytes], fh: _HashingReader, view: memoryview, n: int, where: str) -> None:
    """The data through zipfile's member reader (deflated, or a source without readinto)."""
    _fill(fh.readinto, view[:n], _CHUNK, where)
    if raw.read(1):  # also lets zipfile finish its CRC check
        raise ModelFormatError(f"{where}: trailing bytes after the array data")


def _read_stored(
    fp: IO[bytes], info: zipfile.ZipInfo, fh: _HashingReader, view: memoryview, where: str
) -> None:
    """A stored member's data straight from the file into ``view`` (the array's bytes): one
    copy, where zipfile's reader makes three (its read, a join, the copy into the array),
    each in fresh memory; a fresh page costs a fault (~10 us here: ~5 ms a W2 load). The
    checks: the stored size, the data inside the file (zipfile has checked the local header
    in ``open``) and the manifest's SHA-256 over the whole member (header and data). The
    zip's CRC-32 is not computed: the SHA-256, itself under the manifest's digest, finds
    every change a CRC would (~1.2 ms less for W2's 2.1 MB); deflated members still get
    zipfile's CRC check, which comes with inflating."""
    if info.compress_size != info.file_size:
        raise ModelFormatError(
            f"{where}: stored member of {info.file_size} bytes takes {info.compress_size}"
        )
    fp.seek(info.header_offset + 26)  # the local header's name and extra lengths
    name_len, extra_len = struct.unpack("<HH", fp.read(4))
    fp.seek(info.header_offset + 30 + name_len + extra_len + info.file_size - fh.remaining)
    n = fh.remaining
    _fill(fp.readinto, view[:n], n, where)
    fh.remaining = 0
    fh.sha.update(view)  # checked by the caller


def _fill(readinto, view: memoryview, chunk: int, where: str) -> None:
    """Fill ``view`` by ``readinto`` calls of at most ``chunk`` bytes; a source that ends
    first is a truncated member."""
    pos, n = 0, len(view)
    while pos < n:
        got = readinto(view[pos : pos + chunk])
        if not got:
            raise ModelFormatError(f"{where}: truncated data ({pos} of {n} bytes)")
        pos += got
