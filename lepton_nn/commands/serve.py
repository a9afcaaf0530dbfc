"""``lepton-nn serve MODEL.lnn [NAME=MODEL2.lnn ...]`` and ``lepton-nn predict MODEL -``.

``serve``: the HTTP service of :mod:`lepton_nn.serve` (the ``serve`` extra). ``predict`` with
``-`` for its data reads rows from standard input as they come, JSON lines (one object or
array per line) or CSV (a header line first), and writes one result per row at once
(flushed), for pipes and stream processors: JSON lines in, JSON lines out; CSV in, CSV out.
A bad row gives an error line in its place (``{"error": ...}``; in CSV, an empty prediction
and the message on standard error) and the command ends with status 2.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import IO, Any

from ..errors import LeptonError
from . import args as A

port_number = A.int_at_least(0)


def cmd_serve(args) -> int:
    from ..serve import _need_extra
    from ..serve.models import parse_specs

    if args.port > 65535:
        raise LeptonError(f"--port must be at most 65535, got {args.port}")
    models = parse_specs(args.models)
    for _, path in models:
        with open(path, "rb"):  # a missing file: one line now, not a traceback at startup
            pass
    _need_extra()
    from ..serve.app import ServeConfig
    from ..serve.server import serve

    config = ServeConfig(
        models=models,
        max_batch_size=args.max_batch_size,
        batch_window_ms=args.batch_window_ms,
        batching=not args.no_batching,
        max_body_bytes=args.max_body_bytes,
        reload=args.reload,
        max_streams=args.max_streams,
        idle_seconds=args.idle_seconds or None,
    )
    serve(config, host=args.host, port=args.port, workers=args.workers)
    return 0


def add_parser(sub, h) -> None:
    s = sub.add_parser(
        "serve",
        help="serve model files over HTTP (JSON), with dynamic batching",
        formatter_class=h,
        description='POST /v1/models/NAME:predict {"rows": [...]} (objects of raw columns, '
        "a column left out read as missing where the model imputes it, or arrays in training "
        "column order); GET /v1/models, /healthz, /readyz, /metrics; POST "
        "/v1/models/NAME:step for recurrent networks",
    )
    s.add_argument("models", nargs="+", help="model files (.lnn), each MODEL.lnn or NAME=MODEL.lnn")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=port_number, default=8000, help="port to listen on")
    s.add_argument(
        "--max-batch-size",
        type=A.positive_int,
        default=64,
        help="most rows run as one batch",
    )
    s.add_argument(
        "--batch-window-ms",
        type=A.nonneg_float,
        default=2.0,
        help="longest a request waits for others to batch with",
    )
    s.add_argument("--no-batching", action="store_true", help="one network call per request")
    s.add_argument(
        "--max-body-bytes",
        type=A.positive_int,
        default=1 << 20,
        help="larger request bodies get 413",
    )
    s.add_argument("--workers", type=A.positive_int, default=1, help="server processes")
    s.add_argument(
        "--reload", action="store_true", help="serve a model file's new version when it changes"
    )
    s.add_argument(
        "--max-streams", type=A.positive_int, default=10_000, help="live streams per model (:step)"
    )
    s.add_argument(
        "--idle-seconds",
        type=A.nonneg_float,
        default=600.0,
        help="a stream not stepped this long expires (0: never)",
    )
    s.set_defaults(fn=cmd_serve)


# -- predict from standard input -----------------------------------------------------------
def predict_stdin(model_path: str, stdin: IO[str] | None = None, out: IO[str] | None = None):
    """``lepton-nn predict MODEL -``: see the module docstring. Returns the exit status."""
    from ..runtime import load

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    model = load(model_path)
    if model.kind != "tabular":
        raise LeptonError(
            f"{model_path}: a bare network file, not a tabular model (one saved by "
            "'lepton-nn train'): it cannot read raw rows"
        )
    first = ""
    for first in stdin:
        if first.strip():
            break
    if not first.strip():
        return 0
    if first.lstrip()[:1] in "{[":
        return _json_lines(model, first, stdin, out)
    return _csv_lines(model, first, stdin, out)


def _answer(model: Any, row: Any) -> tuple[Any, list | None]:
    """(label or value, probabilities or None) of one raw row."""
    from ..serve.models import answers, network_input

    doc = answers(model, model.forward(network_input(model, [row])))
    proba = doc.get("probabilities")
    return doc["predictions"][0], None if proba is None else proba[0]


def _json_lines(model: Any, first: str, stdin: IO[str], out: IO[str]) -> int:
    status = 0
    lines = iter(stdin)
    line, number = first, 1
    while True:
        if line.strip():
            try:
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise LeptonError(f"not JSON: {exc}") from None
                if not isinstance(row, (dict, list)):
                    raise LeptonError("each line must be a JSON object or array")
                label, proba = _answer(model, row)
                doc: dict = {"prediction": label}
                if proba is not None:
                    doc["probabilities"] = dict(zip(map(str, model.classes.tolist()), proba))
            except LeptonError as exc:
                doc = {"error": f"<stdin> line {number}: {exc}"}
                status = 2
            out.write(json.dumps(doc) + "\n")
            out.flush()
        line = next(lines, None)
        number += 1
        if line is None:
            return status


def _csv_lines(model: Any, first: str, stdin: IO[str], out: IO[str]) -> int:
    header = next(csv.reader([first]))
    w = csv.writer(out, lineterminator="\n")
    classes = [] if model.task == "regression" else model.classes.tolist()
    w.writerow(["prediction", *[f"p_{c}" for c in classes]])
    out.flush()
    status = 0
    for number, values in enumerate(csv.reader(stdin), start=2):
        if not values:
            continue
        try:
            if len(values) != len(header):
                raise LeptonError(f"{len(values)} values for {len(header)} columns")
            label, proba = _answer(model, dict(zip(header, values)))
            w.writerow([label, *[f"{p:.6f}" for p in proba or []]])
        except LeptonError as exc:
            print(f"lepton-nn: error: <stdin> line {number}: {exc}", file=sys.stderr)
            w.writerow([""] + [""] * len(classes))
            status = 2
        out.flush()
    return status
