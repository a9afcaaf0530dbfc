"""Ed25519 signatures of model files (the optional extra ``sign``: ``cryptography``).

Every ``.lnn`` manifest carries a ``digest``: the SHA-256 of the manifest without itself
(:func:`~lepton_nn.runtime.format.manifest_digest`), which holds each array's SHA-256, so it
covers the whole file. A signed file adds::

    "signature": {"algorithm": "ed25519", "key_id": "<16 hex: SHA-256 of the raw public key>",
                  "value": "<base64 of Ed25519(private key, CONTEXT + digest)>"}

What it protects against (threat model): the digest alone catches *accidental* edits and
damage (anyone can recompute it, so it proves nothing about who wrote the file). A signature
checked against keys the loader trusts (``load(path, trusted_keys=[...])``) proves the
file's manifest and arrays are exactly what a holder of the private key signed: a file
swapped, edited or re-signed by someone else is refused before any array is read. It does
not make a signed model correct or keep the private key safe (keep ``NAME.key`` secret,
distribute ``NAME.pub``), and an unsigned file is still loaded when no ``trusted_keys`` are
given. Whatever the signature, loading never unpickles or runs anything from the file.

``cryptography`` is imported inside these functions only: the runtime imports this module
lazily, when a caller passes ``trusted_keys`` or signs.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from lepton_nn.errors import LeptonError, ModelFormatError

__all__ = [
    "CONTEXT",
    "generate_keypair",
    "key_id",
    "keygen",
    "load_private_key",
    "load_public_key",
    "sign_file",
    "sign_manifest",
    "verify_file",
    "verify_manifest",
]

#: prefixed to the digest before signing: a signature of a model file means nothing else
CONTEXT = b"lepton-nn model digest v1\n"


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise LeptonError(
            "signed model files need the 'cryptography' package: pip install 'lepton-nn[sign]'"
        ) from exc
    return serialization, ed25519


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def keygen(name: str | os.PathLike[str]) -> tuple[str, str]:
    """Write ``NAME.key`` (private, mode 0600) and ``NAME.pub``; never overwrites either."""
    base = os.fspath(name)
    paths = (base + ".key", base + ".pub")
    for p in paths:
        if os.path.exists(p):
            raise FileExistsError(f"{p} exists; not overwriting a key")
    private, public = generate_keypair()
    fd = os.open(paths[0], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    with open(paths[1], "xb") as fh:
        fh.write(public)
    return paths


def _pem(key: Any, what: str) -> bytes:
    if isinstance(key, (bytes, bytearray)):
        return bytes(key)
    if isinstance(key, str) and key.lstrip().startswith("-----BEGIN"):
        return key.encode("ascii")
    if isinstance(key, (str, os.PathLike)):
        with open(key, "rb") as fh:
            return fh.read(64 * 1024)
    raise TypeError(f"{what} must be PEM bytes or a path, got {type(key).__name__}")


def load_public_key(key: Any):
    """An Ed25519 public key from PEM bytes/text, a path, or a key object."""
    serialization, ed25519 = _crypto()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    try:
        out = serialization.load_pem_public_key(_pem(key, "a public key"))
    except ValueError as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    if not isinstance(out, ed25519.Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 public key ({type(out).__name__})")
    return out


def load_private_key(key: Any):
    """An Ed25519 private key from PEM bytes/text (unencrypted), a path, or a key object."""
    serialization, ed25519 = _crypto()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    try:
        out = serialization.load_pem_private_key(_pem(key, "a private key"), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(out, ed25519.Ed25519PrivateKey):
        raise ValueError(f"not an Ed25519 private key ({type(out).__name__})")
    return out


def key_id(public_key: Any) -> str:
    """First 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    serialization, _ = _crypto()
    raw = load_public_key(public_key).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_manifest(manifest: dict, private_key: Any) -> dict:
    """The ``signature`` entry for a manifest whose ``digest`` is already verified."""
    key = load_private_key(private_key)
    digest = manifest["digest"]["value"]
    value = key.sign(CONTEXT + digest.encode("ascii"))
    return {
        "algorithm": "ed25519",
        "key_id": key_id(key.public_key()),
        "value": base64.b64encode(value).decode("ascii"),
    }


def verify_manifest(manifest: dict, trusted_keys: Any, label: str = "model file") -> str:
    """Check the manifest's signature against ``trusted_keys``; return the signer's key id.

    Raises ``ModelFormatError`` when the file is unsigned, has no digest, or its signature
    verifies with none of the keys (``ValueError`` for an empty or unreadable key list).
    """
    if isinstance(trusted_keys, (bytes, str, os.PathLike)):
        trusted_keys = [trusted_keys]
    keys = [load_public_key(k) for k in trusted_keys]
    if not keys:
        raise ValueError("trusted_keys is empty: no file could be trusted")
    sig = manifest.get("signature")
    if sig is None:
        raise ModelFormatError(f"{label}: the file is not signed, and trusted_keys were given")
    digest = manifest.get("digest")
    if not isinstance(digest, dict) or not isinstance(digest.get("value"), str):
        raise ModelFormatError(f"{label}: a signed file must carry a digest")
    if (
        not isinstance(sig, dict)
        or sig.get("algorithm") != "ed25519"
        or not isinstance(sig.get("value"), str)
        or len(sig["value"]) > 200
    ):
        raise ModelFormatError(f"{label}: malformed signature {sig!r:.100}")
    try:
        value = base64.b64decode(sig["value"], validate=True)
    except ValueError:
        raise ModelFormatError(f"{label}: the signature is not base64") from None
    from cryptography.exceptions import InvalidSignature

    message = CONTEXT + digest["value"].encode("ascii")
    for key in keys:
        try:
            key.verify(value, message)
            return key_id(key)
        except InvalidSignature:
            continue
    raise ModelFormatError(
        f"{label}: the signature (key id {str(sig.get('key_id'))[:16]!r}) does not verify with "
        f"any of the {len(keys)} trusted key(s): the file was altered or signed by someone else"
    )


def sign_file(
    path: str | os.PathLike[str], private_key: Any, out: str | os.PathLike[str] | None = None
) -> str:
    """Sign the model file ``path`` (in place, or into ``out``); return the key id.

    The file is read and verified whole first; the rewrite is atomic and holds the same
    manifest and arrays, so the digest is unchanged and the signature covers it.
    """
    from .format import read_lnn, write_lnn

    key = load_private_key(private_key)
    manifest, arrays = read_lnn(path)
    if "digest" not in manifest:  # a file from before digests: the writer adds one
        from .format import manifest_digest

        manifest["digest"] = {"algorithm": "sha256", "value": manifest_digest(manifest)}
    signature = sign_manifest(manifest, key)
    header = ("format", "format_version", "arrays", "digest", "signature")
    body = {k: v for k, v in manifest.items() if k not in header}
    body["signature"] = signature
    write_lnn(out if out is not None else path, body, arrays)
    return signature["key_id"]


def verify_file(path: str | os.PathLike[str], trusted_keys: Any) -> str:
    """Verify the whole file (every array's hash) and its signature; return the key id."""
    from .format import read_lnn

    manifest, _ = read_lnn(path, trusted_keys=trusted_keys)
    return verify_manifest(manifest, trusted_keys, os.fspath(path))
