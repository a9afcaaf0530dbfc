"""``lepton-nn keygen | sign | verify``: Ed25519 signatures of model files (the ``sign`` extra;
the threat model is in the README's "The model file")."""

from __future__ import annotations

from ..errors import LeptonError
from .args import check_output


def cmd_keygen(args) -> int:
    """``lepton-nn keygen NAME``: a new Ed25519 key pair, NAME.key (secret) and NAME.pub."""
    from ..runtime import signing

    check_output(args.name + ".key", "keygen")
    try:
        key, pub = signing.keygen(args.name)
    except FileExistsError as exc:
        raise LeptonError(str(exc)) from None
    print(f"wrote {key} (keep it secret) and {pub} (key id {signing.key_id(pub)})")
    return 0


def cmd_sign(args) -> int:
    """``lepton-nn sign MODEL --key NAME.key [-o OUT]``: sign a model file (in place)."""
    from ..runtime import signing

    check_output(args.output)
    try:
        kid = signing.sign_file(args.model, args.key, args.output)
    except ValueError as exc:  # an unreadable key
        raise LeptonError(f"{args.key}: {exc}") from None
    print(f"signed {args.output or args.model} (key id {kid})")
    return 0


def cmd_verify(args) -> int:
    """``lepton-nn verify MODEL --public-key NAME.pub``: exit 0 when a trusted key signed it."""
    from ..runtime import signing

    try:
        kid = signing.verify_file(args.model, args.public_key)
    except ValueError as exc:
        if isinstance(exc, LeptonError):
            raise
        raise LeptonError(f"{exc}") from None
    print(f"{args.model}: signature OK (key id {kid})")
    return 0


def add_parsers(sub) -> None:
    k = sub.add_parser("keygen", help="make an Ed25519 key pair NAME.key / NAME.pub")
    k.add_argument("name", help="path prefix of the two files")
    k.set_defaults(fn=cmd_keygen)
    s = sub.add_parser("sign", help="sign a model file with a private key")
    s.add_argument("model", help="the .lnn file to sign")
    s.add_argument("--key", required=True, help="the private key (NAME.key)")
    s.add_argument("-o", "--output", help="write the signed file here (default: in place)")
    s.set_defaults(fn=cmd_sign)
    v = sub.add_parser("verify", help="check a model file's signature against public keys")
    v.add_argument("model", help="the signed .lnn file to check")
    v.add_argument(
        "--public-key", required=True, action="append", help="a trusted NAME.pub (repeatable)"
    )
    v.set_defaults(fn=cmd_verify)
