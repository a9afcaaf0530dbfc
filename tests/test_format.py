"""The .lnn container: round trips, atomic writes, and a corpus of damaged and hostile files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import time
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_nn.errors import ModelFormatError
from lepton_nn.runtime import format as lnn
from lepton_nn.runtime.format import (
    ALLOWED_DTYPES,
    FORMAT_NAME,
    FORMAT_VERSION,
    inspect_lnn,
    read_lnn,
    write_lnn,
)

# --------------------------------------------------------------------------- helpers


def _base_arrays() -> dict[str, np.ndarray]:
    return {
        "layers/0/W": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        "layers/0/b": np.array([1.5, -2.0, 0.25, 8.0]),
        "mask": np.array([True, False, True]),
    }


_BASE_MANIFEST = {"created_by": "test", "labels": ["cat", "dog"], "threshold": 0.5}


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("valid") / "model.lnn"
    write_lnn(path, _BASE_MANIFEST, _base_arrays())
    return path.read_bytes()


def _unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _zip(
    members: list[tuple[str | zipfile.ZipInfo, bytes]], method: int = zipfile.ZIP_DEFLATED
) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names on purpose
        with zipfile.ZipFile(buf, "w", compression=method) as zf:
            for name, payload in members:
                zf.writestr(name, payload)
    return buf.getvalue()


def _rebuild(
    data: bytes,
    *,
    edit=None,
    replace: dict[str, bytes] | None = None,
    drop: tuple[str, ...] = (),
    extra: tuple[tuple[str | zipfile.ZipInfo, bytes], ...] = (),
    rehash: bool = True,
) -> bytes:
    """Unzip a valid file, change members and/or the manifest, zip it again (CRCs consistent).

    With ``rehash`` the manifest's SHA-256 of every replaced member is updated, so the check
    under test is not simply the hash.
    """
    members = _unzip(data)
    manifest = json.loads(members.pop("manifest.json"))
    for name, payload in (replace or {}).items():
        members[name] = payload
        if rehash:
            for entry in manifest["arrays"].values():
                if entry["file"] == name:
                    entry["sha256"] = hashlib.sha256(payload).hexdigest()
    for name in drop:
        members.pop(name)
    if edit is not None:
        edit(manifest)
    if rehash and isinstance(manifest.get("digest"), dict):  # the digest over it all, too
        manifest["digest"]["value"] = lnn.manifest_digest(manifest)
    return _zip([*members.items(), ("manifest.json", json.dumps(manifest).encode()), *extra])


def _rebuild_manifest_text(data: bytes, text: bytes) -> bytes:
    members = _unzip(data)
    members["manifest.json"] = text
    return _zip(list(members.items()))


def _npy(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _raw_npy(header: str, data: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    encoded = header.encode("latin1")
    length = struct.pack("<H" if version == (1, 0) else "<I", len(encoded))
    return b"\x93NUMPY" + bytes(version) + length + encoded + data


def _central_entry(data: bytes, member: str) -> int:
    """Offset of ``member``'s central-directory record."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        pos = zf.start_dir
    while data[pos : pos + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46 : pos + 46 + name_len].decode() == member:
            return pos
        pos += 46 + name_len + extra_len + comment_len
    raise AssertionError(f"no central entry for {member}")


def _local_entry(data: bytes, member: str) -> int:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.getinfo(member).header_offset


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _refused(source, match: str | None = None, **kwargs) -> ModelFormatError:
    with pytest.raises(ModelFormatError, match=match) as info:
        read_lnn(source, **kwargs)
    return info.value


# --------------------------------------------------------------------------- round trips


_SPECIAL_FLOATS = [0.0, -0.0, 1.0, np.inf, -np.inf, np.nan, 1e-45, 5e-324, 65504.0, 6e-8]


def _example(dtype_name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype_name)
    n = int(np.prod(shape))
    if dtype.kind == "b":
        flat = rng.integers(0, 2, n).astype(bool)
    elif dtype.kind == "f":
        with np.errstate(over="ignore", under="ignore"):
            flat = rng.standard_normal(n).astype(dtype)
            special = np.array(_SPECIAL_FLOATS).astype(dtype)
        flat[: min(n, special.size)] = special[: min(n, special.size)]
    else:
        info = np.iinfo(dtype)
        flat = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
        flat[:1] = info.min
        flat[1:2] = info.max
    return flat.reshape(shape)


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype.newbyteorder("=")
    assert got.shape == want.shape
    assert got.tobytes() == np.ascontiguousarray(want, dtype=got.dtype).tobytes()  # bit-exact


def test_round_trip_every_dtype_and_shape(tmp_path: Path) -> None:
    shapes = [(13,), (3, 4), (), (0,), (2, 0, 3), (1, 1, 1, 2)]
    arrays = {
        f"{name}/s{i}": _example(name, shape, i)
        for name in ALLOWED_DTYPES
        for i, shape in enumerate(shapes)
    }
    path = tmp_path / "all.lnn"
    write_lnn(path, {"created_by": "0.1.0", "nested": {"a": [1, 2.5, None, True, "é"]}}, arrays)
    manifest, got = read_lnn(path)
    assert list(got) == list(arrays)
    for name, want in arrays.items():
        _assert_same(got[name], want)
        assert got[name].flags.writeable and got[name].flags.c_contiguous
        assert manifest["arrays"][name]["dtype"] == want.dtype.name
        assert manifest["arrays"][name]["shape"] == list(want.shape)
    assert manifest["format"] == FORMAT_NAME
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["created_by"] == "0.1.0"
    assert manifest["nested"] == {"a": [1, 2.5, None, True, "é"]}


def test_layouts_and_byte_orders_are_normalised(tmp_path: Path) -> None:
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    arrays = {
        "fortran": np.asfortranarray(base),
        "strided": base[::2, ::3],
        "transposed": base.T,
        "big_endian": base.astype(">f8"),
        "big_int": np.arange(5, dtype=">i2"),
    }
    path = tmp_path / "m.lnn"
    write_lnn(path, {}, arrays)
    manifest, got = read_lnn(path)
    for name, want in arrays.items():
        np.testing.assert_array_equal(got[name], want)
        assert got[name].dtype.isnative
    assert manifest["created_by"] == "unknown"
    assert manifest["arrays"]["big_int"]["dtype"] == "int16"


def test_results_are_private_copies(tmp_path: Path, valid_bytes: bytes) -> None:
    _, first = read_lnn(valid_bytes)
    first["layers/0/W"][0, 0] = 99.0
    _, second = read_lnn(valid_bytes)
    assert second["layers/0/W"][0, 0] == 0.0


def test_sources_path_bytes_and_file_object(tmp_path: Path, valid_bytes: bytes) -> None:
    path = tmp_path / "m.lnn"
    path.write_bytes(valid_bytes)
    results = [
        read_lnn(path),
        read_lnn(str(path)),
        read_lnn(valid_bytes),
        read_lnn(bytearray(valid_bytes)),
    ]
    with open(path, "rb") as fh:
        results.append(read_lnn(fh))
    results.append(read_lnn(io.BytesIO(valid_bytes)))
    for manifest, arrays in results:
        assert manifest == results[0][0]
        for name, want in _base_arrays().items():
            _assert_same(arrays[name], want)


def test_output_is_deterministic(tmp_path: Path) -> None:
    write_lnn(tmp_path / "a.lnn", _BASE_MANIFEST, _base_arrays())
    time.sleep(0.01)
    write_lnn(tmp_path / "b.lnn", _BASE_MANIFEST, _base_arrays())
    assert (tmp_path / "a.lnn").read_bytes() == (tmp_path / "b.lnn").read_bytes()


def test_layout_of_the_archive(valid_bytes: bytes) -> None:
    members = _unzip(valid_bytes)
    assert set(members) == {
        "manifest.json",
        "arrays/layers/0/W.npy",
        "arrays/layers/0/b.npy",
        "arrays/mask.npy",
    }
    with zipfile.ZipFile(io.BytesIO(valid_bytes)) as zf:
        methods = {info.filename: info.compress_type for info in zf.infolist()}
    # float arrays are stored (they barely deflate; inflating them slowed loads), others deflated
    assert methods == {
        "manifest.json": zipfile.ZIP_DEFLATED,
        "arrays/layers/0/W.npy": zipfile.ZIP_STORED,
        "arrays/layers/0/b.npy": zipfile.ZIP_STORED,
        "arrays/mask.npy": zipfile.ZIP_DEFLATED,
    }
    manifest = json.loads(members["manifest.json"].decode("utf-8"))
    entry = manifest["arrays"]["layers/0/W"]
    assert entry == {
        "file": "arrays/layers/0/W.npy",
        "dtype": "float32",
        "shape": [2, 3],
        "sha256": hashlib.sha256(members["arrays/layers/0/W.npy"]).hexdigest(),
    }
    loaded = np.load(io.BytesIO(members["arrays/layers/0/W.npy"]), allow_pickle=False)
    np.testing.assert_array_equal(loaded, _base_arrays()["layers/0/W"])


def test_inspect_reads_the_manifest_only(valid_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "m.lnn"
    path.write_bytes(valid_bytes)
    assert inspect_lnn(path) == read_lnn(path)[0]
    # Damaged data (consistent CRC, wrong SHA-256) is only found when the arrays are loaded.
    member = "arrays/layers/0/b.npy"
    payload = bytearray(_unzip(valid_bytes)[member])
    payload[-1] ^= 0xFF
    damaged = _rebuild(valid_bytes, replace={member: bytes(payload)}, rehash=False)
    assert inspect_lnn(damaged)["labels"] == ["cat", "dog"]
    _refused(damaged, "SHA-256 mismatch")
    # Header-level problems are found by inspect too.
    with pytest.raises(ModelFormatError, match="format version 999"):
        inspect_lnn(_rebuild(valid_bytes, edit=lambda m: m.update(format_version=999)))


def test_missing_file_is_not_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_lnn(tmp_path / "nope.lnn")
    with pytest.raises(FileNotFoundError):
        inspect_lnn(tmp_path / "nope.lnn")
    with pytest.raises(TypeError):
        read_lnn(42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- writing: refusals


@pytest.mark.parametrize(
    "name",
    ["", "../x", "/abs", "a//b", "a/./b", "a/../b", "a/", "a b", "a\\b", "é", "x" * 201, 3],
)
def test_write_refuses_bad_names(tmp_path: Path, name) -> None:
    with pytest.raises(ModelFormatError, match="invalid"):
        write_lnn(tmp_path / "m.lnn", {}, {name: np.zeros(2)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "arr",
    [
        np.array([{"a": 1}, None], dtype=object),
        np.zeros(2, dtype=np.complex128),
        np.zeros(2, dtype=np.uint64),
        np.zeros(2, dtype="U3"),
        np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]),
        np.zeros(2, dtype="datetime64[s]"),
        [1.0, 2.0],
    ],
)
def test_write_refuses_bad_arrays(tmp_path: Path, arr) -> None:
    with pytest.raises(ModelFormatError):
        write_lnn(tmp_path / "m.lnn", {}, {"a": arr})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "manifest, match",
    [
        ({"x": float("nan")}, "finite"),
        ({"x": [1.0, float("inf")]}, "finite"),
        ({"x": {1: "a"}}, "non-str key"),
        ({"x": {("a",): 1}}, "non-str key"),
        ({"x": {1, 2}}, "not JSON"),
        ({"x": np.int64(3)}, "not JSON"),
        ({"x": b"bytes"}, "not JSON"),
        ({"format": "mine"}, "reserved"),
        ({"format_version": 2}, "reserved"),
        ({"arrays": {}}, "reserved"),
        ({"created_by": 1}, "created_by"),
        ([("a", 1)], "must be a dict"),
    ],
)
def test_write_refuses_bad_manifests(tmp_path: Path, manifest, match: str) -> None:
    with pytest.raises(ModelFormatError, match=match):
        write_lnn(tmp_path / "m.lnn", manifest, {"a": np.zeros(2)})
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_too_deep_manifest(tmp_path: Path) -> None:
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ModelFormatError, match="nested"):
        write_lnn(tmp_path / "m.lnn", {"deep": deep}, {})


# --------------------------------------------------------------------------- atomic writes


@pytest.fixture()
def old_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.lnn"
    write_lnn(path, {"created_by": "old"}, {"w": np.ones(3)})
    return path


def _assert_untouched(path: Path, old: bytes) -> None:
    assert path.read_bytes() == old
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    assert read_lnn(path)[0]["created_by"] == "old"


def test_failure_mid_array_keeps_old_file(old_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = old_file.read_bytes()
    real = np.lib.format.write_array
    calls = []

    def failing(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # second array: write part of it, then the disk "fills up"
            fp.write(b"\x93NUMPY partial")
            raise OSError(28, "No space left on device")
        return real(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="No space"):
        write_lnn(old_file, {"created_by": "new"}, {"a": np.zeros(1000), "b": np.zeros(1000)})
    assert len(calls) == 2
    _assert_untouched(old_file, old)


@pytest.mark.parametrize("target", ["fsync", "replace"])
def test_failure_at_commit_keeps_old_file(
    old_file: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    old = old_file.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(5, f"simulated {target} failure")

    monkeypatch.setattr(lnn.os, target, boom)
    with pytest.raises(OSError, match="simulated"):
        write_lnn(old_file, {"created_by": "new"}, {"w": np.zeros(3)})
    monkeypatch.undo()
    _assert_untouched(old_file, old)


def test_interrupt_keeps_old_file(old_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = old_file.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lnn.json, "dumps", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_lnn(old_file, {"created_by": "new"}, {"w": np.zeros(3)})
    monkeypatch.undo()
    _assert_untouched(old_file, old)


def test_overwrite_replaces_and_keeps_mode(old_file: Path) -> None:
    os.chmod(old_file, 0o640)
    write_lnn(old_file, {"created_by": "new"}, {"w": np.zeros(2)})
    assert read_lnn(old_file)[0]["created_by"] == "new"
    assert (os.stat(old_file).st_mode & 0o777) == 0o640
    assert [p.name for p in old_file.parent.iterdir()] == [old_file.name]


# --------------------------------------------------------------------------- damaged files


@pytest.mark.parametrize("fraction", [0.0, 0.002, 0.01, 0.05, 0.25, 0.5, 0.75, 0.9, 0.99])
def test_truncated(valid_bytes: bytes, fraction: float) -> None:
    cut = max(1, int(len(valid_bytes) * fraction))
    _refused(valid_bytes[:cut])


@pytest.mark.parametrize("back", [1, 10, 22, 60])
def test_truncated_at_the_end(valid_bytes: bytes, back: int) -> None:
    _refused(valid_bytes[:-back])


def test_truncated_file_on_disk(valid_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "m.lnn"
    path.write_bytes(valid_bytes[: len(valid_bytes) // 3])
    _refused(path)


def test_empty_and_not_a_zip(tmp_path: Path) -> None:
    _refused(b"", "empty")
    _refused(b"hello, world" * 10, "not a zip")
    _refused(b"\x80\x04\x95" + b"\x00" * 40, "not a zip")  # the start of a pickle
    _refused(b"PK\x03\x04" + b"\x00" * 10, "not a valid zip")
    _refused(_zip([]), "not a zip")  # an empty zip is just an end record
    _refused(_zip([("readme.txt", b"hi")]), "no 'manifest.json'")
    empty = tmp_path / "empty.lnn"
    empty.write_bytes(b"")
    _refused(empty, "empty")


def test_bit_flip_in_array_data_is_a_hash_mismatch(valid_bytes: bytes) -> None:
    member = "arrays/layers/0/W.npy"
    payload = bytearray(_unzip(valid_bytes)[member])
    payload[-3] ^= 0x01  # one bit of one float
    err = _refused(_rebuild(valid_bytes, replace={member: bytes(payload)}, rehash=False), "SHA-256")
    assert member in str(err)


def test_bit_flips_in_the_compressed_file(valid_bytes: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(valid_bytes)) as zf:
        info = zf.getinfo("arrays/layers/0/b.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for offset in range(start, start + info.compress_size, 3):
        damaged = bytearray(valid_bytes)
        damaged[offset] ^= 0x10
        _refused(bytes(damaged))


# --------------------------------------------------------------------------- hand-edited manifests


def _set(name: str, **fields):
    def edit(manifest: dict) -> None:
        manifest["arrays"][name].update(fields)

    return edit


@pytest.mark.parametrize(
    "edit, match",
    [
        (_set("layers/0/W", shape=[3, 2]), "shape"),
        (_set("layers/0/W", shape=[6]), "shape"),
        (_set("layers/0/W", dtype="int32"), "dtype"),
        (_set("layers/0/W", dtype="float64"), "does not match the declared float64"),
        (_set("layers/0/W", dtype="object"), "not allowed"),
        (_set("layers/0/W", dtype="O"), "not allowed"),
        (_set("layers/0/W", dtype="<f4"), "not allowed"),
        (_set("layers/0/W", dtype=None), "not allowed"),
        (_set("layers/0/W", shape=[10**12]), "max_bytes"),
        (_set("layers/0/W", shape=[10**6, 10**6, 10**6]), "max_bytes"),
        (_set("layers/0/W", shape=[-1, 3]), "non-negative"),
        (_set("layers/0/W", shape=[2, 3.0]), "non-negative"),
        (_set("layers/0/W", shape=[True, 3]), "non-negative"),
        (_set("layers/0/W", shape="(2, 3)"), "non-negative"),
        (_set("layers/0/W", shape=[1] * 65), "non-negative"),
        (_set("layers/0/W", sha256="0" * 64), "SHA-256 mismatch"),
        (_set("layers/0/W", sha256="XYZ"), "sha256"),
        (_set("layers/0/W", file="arrays/layers/0/b.npy"), "should be"),
        (_set("layers/0/W", file="../x.npy"), "should be"),
        (_set("layers/0/W", extra=1), "exactly the keys"),
        (
            lambda m: m["arrays"].update(
                {"ghost": dict(m["arrays"]["mask"], file="arrays/ghost.npy")}
            ),
            "missing",
        ),
        (lambda m: m["arrays"].pop("mask"), "unexpected member"),
        (lambda m: m["arrays"].update({"../up": m["arrays"].pop("mask")}), "invalid"),
        (lambda m: m.update(arrays=[]), "'arrays' must be an object"),
        (lambda m: m.pop("arrays"), "'arrays' must be an object"),
        (lambda m: m.update(format_version=999), "upgrade lepton_nn"),
        (lambda m: m.update(format_version=0), "format_version"),
        (lambda m: m.update(format_version="1"), "format_version"),
        (lambda m: m.update(format_version=True), "format_version"),
        (lambda m: m.update(format_version=1.0), "format_version"),
        (lambda m: m.pop("format_version"), "format_version"),
        (lambda m: m.update(format="pickle"), "format is 'pickle'"),
        (lambda m: m.pop("format"), "format is None"),
        (lambda m: m.update(created_by=["x"]), "created_by"),
    ],
)
def test_hand_edited_manifest(valid_bytes: bytes, edit, match: str) -> None:
    err = _refused(_rebuild(valid_bytes, edit=edit), match)
    assert str(err).startswith("<bytes>: ")


def test_newer_format_version_says_upgrade(valid_bytes: bytes) -> None:
    err = _refused(_rebuild(valid_bytes, edit=lambda m: m.update(format_version=999)))
    assert "999" in str(err) and "upgrade" in str(err)


@pytest.mark.parametrize(
    "text, match",
    [
        (b"[1, 2, 3]", "JSON object"),
        (b'"lepton-nn"', "JSON object"),
        (b"null", "JSON object"),
        (b'{"format": "lepton-nn", "format_version": 1, "x": NaN}', "NaN"),
        (b'{"format": "lepton-nn", "format_version": 1, "x": Infinity}', "Infinity"),
        (b'{"format": "lepton-nn", "format_version": 1, "x": -Infinity}', "Infinity"),
        (b'{"format": "lepton-nn", "format_version": 1, "x": 1e999}', "out of range"),
        (b'{"format": "lepton-nn", "format": "lepton-nn", "format_version": 1}', "duplicate key"),
        (b'{"format": "lepton-nn", ', "not valid JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"x": "\xc3\x28"}', "UTF-8"),
        (b"", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON|JSON object"),
        (b'{"x": ' + b"9" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_broken_manifest_text(valid_bytes: bytes, text: bytes, match: str) -> None:
    _refused(_rebuild_manifest_text(valid_bytes, text), match)


def test_manifest_size_cap(valid_bytes: bytes) -> None:
    manifest = json.loads(_unzip(valid_bytes)["manifest.json"])
    text = json.dumps(manifest).encode()
    text = (
        text[:-1] + b"," + b" " * lnn.MAX_MANIFEST_BYTES + b"}"
    )  # valid JSON, compresses to ~16 KB
    _refused(_rebuild_manifest_text(valid_bytes, text), "more than")


# --------------------------------------------------------------------------- hostile members


@pytest.mark.parametrize(
    "name, match",
    [
        ("../x.npy", "unsafe path"),
        ("/abs.npy", "unsafe path"),
        ("arrays/../../etc/passwd", "unsafe path"),
        ("arrays\\..\\x.npy", "unsafe path"),
        ("C:/x.npy", "unsafe path"),
        ("./manifest.json", "unsafe path"),
        ("evil.txt", "unexpected member"),
        ("arrays/", "unexpected member"),
        ("arrays/extra.npy", "unexpected member"),
        ("manifest.json", "duplicate"),
        ("arrays/mask.npy", "duplicate"),
    ],
)
def test_extra_and_unsafe_members(valid_bytes: bytes, name: str, match: str) -> None:
    err = _refused(_rebuild(valid_bytes, extra=((name, _npy(np.zeros(3))),)), match)
    assert repr(name) in str(err)


def test_symlink_member(valid_bytes: bytes) -> None:
    link = zipfile.ZipInfo("arrays/mask.npy")
    link.create_system = 3
    link.external_attr = (0o120777) << 16
    data = _rebuild(valid_bytes, drop=("arrays/mask.npy",), extra=((link, b"/etc/passwd"),))
    _refused(data, "symbolic link")


def test_encrypted_member(valid_bytes: bytes) -> None:
    pos = _central_entry(valid_bytes, "arrays/mask.npy")
    (flags,) = struct.unpack_from("<H", valid_bytes, pos + 8)
    _refused(_patch(valid_bytes, pos + 8, "<H", flags | 0x1), "encrypted")


def test_unsupported_compression(valid_bytes: bytes) -> None:
    members = _unzip(valid_bytes)
    _refused(_zip(list(members.items()), method=zipfile.ZIP_BZIP2), "compression method")
    stored = _zip(list(members.items()), method=zipfile.ZIP_STORED)  # stored is fine
    assert read_lnn(stored)[0] == read_lnn(valid_bytes)[0]


def test_too_many_members_or_arrays(valid_bytes: bytes) -> None:
    _refused(valid_bytes, "max_arrays", max_arrays=2)
    _refused(valid_bytes, "max_arrays", max_arrays=1)
    assert len(read_lnn(valid_bytes, max_arrays=3)[1]) == 3


def test_max_bytes(valid_bytes: bytes) -> None:
    _refused(valid_bytes, "max_bytes", max_bytes=40)  # 24 + 32 + 3 bytes of array data
    assert len(read_lnn(valid_bytes, max_bytes=59)[1]) == 3


# --------------------------------------------------------------------------- hostile .npy members


_W = "arrays/layers/0/W.npy"
_W_DATA = (np.arange(6, dtype=np.float32).reshape(2, 3) / 7).tobytes()


@pytest.mark.parametrize(
    "payload, match",
    [
        (_npy(np.arange(6, dtype=np.int32).reshape(2, 3)), "dtype '<i4'"),
        (_npy(np.arange(6, dtype=">f4").reshape(2, 3)), "dtype '>f4'"),
        (_npy(np.arange(6, dtype=np.float32).reshape(3, 2)), r"shape \[3, 2\]"),
        (_npy(np.arange(6, dtype=np.float32)), r"shape \[6\]"),
        (_npy(np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))), "Fortran"),
        (
            _raw_npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", _W_DATA, (2, 0)
            ),
            None,
        ),
        (
            _raw_npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", _W_DATA, (3, 0)
            ),
            "version 3.0",
        ),
        (_raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", _W_DATA), None),
        (_raw_npy("{'shape': (2, 3), 'descr': '<f4', 'fortran_order': False}", _W_DATA), None),
        (
            _raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (6), }", _W_DATA),
            "malformed",
        ),
        (_raw_npy("{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3), }", _W_DATA), "malformed"),
        (_raw_npy("{'descr': '<f4', 'shape': (2, 3), }", _W_DATA), "malformed"),
        (
            _raw_npy(
                "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", _W_DATA
            ),
            "malformed",
        ),
        (
            _raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", _W_DATA),
            "malformed",
        ),
        (
            _raw_npy("{'descr': __import__('os').system('echo hi'), 'shape': (2, 3)}", _W_DATA),
            "malformed",
        ),
        (_raw_npy("[" * 5000 + "]" * 5000, _W_DATA), "malformed"),
        (
            _raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", _W_DATA[:-4]),
            "20 bytes of data",
        ),
        (
            _raw_npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", _W_DATA + b"\0" * 4
            ),
            "bytes of data",
        ),
        (
            _raw_npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" + " " * 70_000,
                _W_DATA,
                (2, 0),
            ),
            "size",
        ),
        (
            _raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\xe9", _W_DATA),
            "ASCII",
        ),
        (b"\x93NUMPX\x01\x00" + b"\0" * 150, "bad magic"),
        (b"\x93NUMPY\x01\x00\xff\xff" + b"\0" * 140, "too long|truncated"),
    ],
)
def test_hostile_npy_members(valid_bytes: bytes, payload: bytes, match: str | None) -> None:
    data = _rebuild(valid_bytes, replace={_W: payload})
    if match is None:  # unusual but legitimate headers are accepted
        _assert_same(read_lnn(data)[1]["layers/0/W"], _base_arrays()["layers/0/W"])
    else:
        err = _refused(data, match)
        assert repr(_W) in str(err)


class _Payload:
    """Unpickling this creates ``path`` (open(path, "w")): proof that unpickling happened."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_payload_is_never_unpickled(valid_bytes: bytes, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = np.empty((2, 3), dtype=object)
    hostile[0, 0] = _Payload(marker)
    payload = _npy(hostile, allow_pickle=True)

    # The payload is live: numpy with allow_pickle=True runs it.
    np.load(io.BytesIO(payload), allow_pickle=True)
    assert marker.exists()
    marker.unlink()

    declared_float = _rebuild(valid_bytes, replace={_W: payload})  # shape and SHA-256 consistent
    declared_object = _rebuild(
        valid_bytes, replace={_W: payload}, edit=_set("layers/0/W", dtype="object")
    )
    for data in (declared_float, declared_object):
        _refused(data)
        with pytest.raises(ModelFormatError):
            inspect_lnn(data)
    assert not marker.exists()


def test_bool_array_with_non_boolean_bytes(valid_bytes: bytes) -> None:
    payload = _npy(np.array([True, False, True]))
    payload = payload[:-1] + b"\x02"
    _refused(_rebuild(valid_bytes, replace={"arrays/mask.npy": payload}), "other than 0 and 1")


# --------------------------------------------------------------------------- zip bombs


_BOMB_SIZE = 64 * 1024**2


@pytest.fixture(scope="module")
def bomb(valid_bytes: bytes) -> bytes:
    """A valid file whose W member is a valid header followed by 64 MiB of zeros."""
    members = _unzip(valid_bytes)
    members[_W] = members[_W] + bytes(_BOMB_SIZE)
    return _zip(list(members.items()))


def _fast_and_small(fn) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - start < 2.0
    assert peak < 8 * 1024**2, f"peak {peak} bytes"


def test_zip_bomb_refused_before_inflating(bomb: bytes) -> None:
    assert len(bomb) < _BOMB_SIZE // 100
    _fast_and_small(lambda: _refused(bomb, "uncompressed size"))


def test_zip_bomb_with_lying_sizes_is_read_with_a_cap(bomb: bytes, valid_bytes: bytes) -> None:
    """The zip headers claim the honest size; the deflate stream inflates to 64 MiB more."""
    honest = len(_unzip(valid_bytes)[_W])
    data = bomb
    data = _patch(data, _central_entry(data, _W) + 24, "<I", honest)
    data = _patch(data, _local_entry(data, _W) + 22, "<I", honest)
    _fast_and_small(lambda: _refused(data))  # CRC of the capped read does not match
    # With the CRC patched too, the reader sees exactly the honest bytes and nothing more.
    crc = zlib.crc32(_unzip(valid_bytes)[_W])
    data = _patch(data, _central_entry(data, _W) + 16, "<I", crc)
    data = _patch(data, _local_entry(data, _W) + 14, "<I", crc)
    result: list = []
    _fast_and_small(lambda: result.append(read_lnn(data)))
    _assert_same(result[0][1]["layers/0/W"], _base_arrays()["layers/0/W"])


def test_huge_declared_shape_is_refused_before_allocating(valid_bytes: bytes) -> None:
    data = _rebuild(valid_bytes, edit=_set("layers/0/W", shape=[10**12]))
    _fast_and_small(lambda: _refused(data, "max_bytes"))


# --------------------------------------------------------------------------- fuzzing


def _mutations():
    pos = st.integers(0, 10**6)
    return st.lists(
        st.one_of(
            st.tuples(st.just("flip"), pos, st.integers(0, 7)),
            st.tuples(st.just("truncate"), pos),
            st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=8)),
            st.tuples(st.just("delete"), pos, st.integers(1, 16)),
            st.tuples(st.just("overwrite"), pos, st.binary(min_size=1, max_size=8)),
        ),
        min_size=1,
        max_size=4,
    )


def _mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for kind, where, *args in mutations:
        i = where % max(1, len(out))
        if kind == "flip" and out:
            out[i] ^= 1 << args[0]
        elif kind == "truncate":
            del out[i:]
        elif kind == "insert":
            out[i:i] = args[0]
        elif kind == "delete":
            del out[i : i + args[0]]
        elif kind == "overwrite":
            out[i : i + len(args[0])] = args[0]
    return bytes(out)


def _only_format_errors_or_identical(data: bytes, want_manifest: dict | None) -> None:
    try:
        manifest, arrays = read_lnn(data)
    except ModelFormatError:
        pass
    else:
        if want_manifest is not None:
            assert manifest == want_manifest
        assert list(arrays) == list(_base_arrays())
        for name, want in _base_arrays().items():
            _assert_same(arrays[name], want)
    try:
        inspect_lnn(data)
    except ModelFormatError:
        pass


_FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@_FUZZ
@given(mutations=_mutations())
def test_fuzz_file_bytes(valid_bytes: bytes, mutations) -> None:
    """Random flips, truncations, insertions anywhere in the file: ModelFormatError or intact."""
    _only_format_errors_or_identical(_mutate(valid_bytes, mutations), read_lnn(valid_bytes)[0])


@_FUZZ
@given(member=st.sampled_from(["manifest.json", _W, "arrays/mask.npy"]), mutations=_mutations())
def test_fuzz_member_bytes(valid_bytes: bytes, member: str, mutations) -> None:
    """Mutate one member and re-zip it with a correct CRC, so the parsers see the damage."""
    members = _unzip(valid_bytes)
    members[member] = _mutate(members[member], mutations)
    _only_format_errors_or_identical(_zip(list(members.items())), None)


def test_a_save_into_a_missing_folder_names_the_folder_not_a_temporary_file(tmp_path):
    """It raised "No such file or directory: '.../nodir/.m.lnn.k2j3h4g5.tmp'"."""
    import lepton_nn as ln
    from lepton_nn import nn

    model = nn.Sequential([nn.Dense(2)])
    model.build((None, 3))
    with pytest.raises(FileNotFoundError) as err:
        ln.save(model, tmp_path / "nodir" / "m.lnn")
    assert err.value.filename == str(tmp_path / "nodir") and ".tmp" not in str(err.value)
