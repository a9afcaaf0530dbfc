"""``lepton-nn convert IN -o OUT``: ONNX -> ``.lnn`` or ``.lnn`` -> ONNX, by the extensions
(the work is :func:`lepton_nn.onnx.commands.convert`; this file only parses and prints)."""

from __future__ import annotations

from .args import check_output, positive_int


def cmd_convert(args) -> int:
    from ..onnx.commands import convert, format_report

    check_output(args.output)
    report = convert(args.model, args.output, opset=args.opset)
    print(format_report(args.model, args.output, report))
    return 0


def add_parser(sub, h) -> None:
    v = sub.add_parser(
        "convert", help="ONNX -> .lnn or .lnn -> ONNX (by the extensions)", formatter_class=h
    )
    v.add_argument("model", help="the .onnx or .lnn file to convert")
    v.add_argument("-o", "--output", required=True, help="the .lnn or .onnx file to write")
    v.add_argument(
        "--opset", type=positive_int, help="ai.onnx opset of an exported file (default 17)"
    )
    v.set_defaults(fn=cmd_convert)
