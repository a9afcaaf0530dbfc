"""The model card: a Markdown summary kept in the ``.lnn`` file (``manifest["card"]``).

Format (``"lepton_nn.card"``, version 1), plain JSON so any room can add its own section::

    {"format": "lepton_nn.card", "version": 1,
     "sections": {
        "Data":        {"text": "...", "facts": {"rows": 4454, ...},
                        "table": {"columns": ["group", "n"], "rows": [["a", 10], ...]}},
        "Metrics":     {...}, "Calibration": {...}, "Fairness": {...}, "Monitoring": {...},
        "Intended use": {...}, "Compression": {...}, "Privacy": {...}, <any other>: {...}}}

A section holds any of ``text`` (Markdown paragraph), ``facts`` (name -> str, number, bool
or null) and ``table`` (column names and rows of such scalars). Sections print in
:data:`ORDER`, then the others by name. Rooms write theirs with :func:`set_section` (e.g.
``set_section(model, "Privacy", facts={"epsilon": 3.0, "delta": 1e-5})``); the card
travels with ``model.card`` through ``save``/``load`` and ``lepton-nn info MODEL --card``
prints :func:`to_markdown`. A card read from a file is checked by :func:`check` (types and
sizes) before it is printed: a hostile card is a ``ModelFormatError``.
"""

from __future__ import annotations

import math
from typing import Any

from lepton_nn.errors import ModelFormatError

__all__ = ["FORMAT", "ORDER", "VERSION", "check", "empty", "set_section", "to_markdown"]

FORMAT = "lepton_nn.card"
VERSION = 1
ORDER = (
    "Intended use",
    "Data",
    "Metrics",
    "Calibration",
    "Fairness",
    "Monitoring",
    "Compression",
    "Privacy",
)
MAX_TEXT = 20_000  # characters of one text or value
MAX_ROWS = 1_000
MAX_ITEMS = 200  # facts per section, columns per table, sections per card


def empty() -> dict:
    return {"format": FORMAT, "version": VERSION, "sections": {}}


def _scalar(v: Any, what: str) -> Any:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, float) and not math.isfinite(v):
            return None  # JSON has no inf/NaN
        return v
    if hasattr(v, "item") and callable(v.item):  # NumPy scalars
        return _scalar(v.item(), what)
    if isinstance(v, str):
        if len(v) > MAX_TEXT:
            raise ModelFormatError(f"model card: {what} is longer than {MAX_TEXT} characters")
        return v
    raise ModelFormatError(f"model card: {what} must be a string, number, bool or null")


def _section(s: Any, name: str) -> dict:
    if not isinstance(s, dict) or set(s) - {"text", "facts", "table"}:
        raise ModelFormatError(f"model card: section {name!r:.60} must hold text/facts/table")
    out: dict[str, Any] = {}
    if s.get("text") is not None:
        if not isinstance(s["text"], str):
            raise ModelFormatError(f"model card: {name}: text must be a string")
        out["text"] = _scalar(s["text"], f"{name}: text")
    facts = s.get("facts")
    if facts is not None:
        if not isinstance(facts, dict) or len(facts) > MAX_ITEMS:
            raise ModelFormatError(f"model card: {name}: facts must be an object (<= {MAX_ITEMS})")
        out["facts"] = {
            _scalar(str(k), f"{name}: fact name"): _scalar(v, f"{name}: fact {k!r:.40}")
            for k, v in facts.items()
        }
    table = s.get("table")
    if table is not None:
        cols = table.get("columns") if isinstance(table, dict) else None
        rows = table.get("rows") if isinstance(table, dict) else None
        if (
            not isinstance(cols, list)
            or not 1 <= len(cols) <= MAX_ITEMS
            or not isinstance(rows, list)
            or len(rows) > MAX_ROWS
            or not all(isinstance(r, list) and len(r) == len(cols) for r in rows)
        ):
            raise ModelFormatError(f"model card: {name}: table needs columns and equal rows")
        out["table"] = {
            "columns": [str(_scalar(c, f"{name}: column")) for c in cols],
            "rows": [[_scalar(v, f"{name}: table cell") for v in r] for r in rows],
        }
    return out


def check(card: Any) -> dict:
    """A card from a file (untrusted) -> the same card, or ``ModelFormatError``."""
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ModelFormatError("model card: not a lepton_nn.card object")
    if card.get("version") != VERSION:
        raise ModelFormatError(f"model card: version {card.get('version')!r:.20} not supported")
    sections = card.get("sections")
    if not isinstance(sections, dict) or len(sections) > MAX_ITEMS:
        raise ModelFormatError("model card: sections must be an object")
    return {
        "format": FORMAT,
        "version": VERSION,
        "sections": {str(_scalar(k, "section name")): _section(v, k) for k, v in sections.items()},
    }


def set_section(
    model: Any,
    name: str,
    *,
    text: str | None = None,
    facts: dict | None = None,
    table: dict | None = None,
) -> dict:
    """Write (replace) section ``name`` of ``model.card`` (created if absent); returns it."""
    card = getattr(model, "card", None)
    card = check(card) if card else empty()
    section = {"text": text, "facts": facts, "table": table}
    card["sections"][name] = _section({k: v for k, v in section.items() if v is not None}, name)
    model.card = card
    return card


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(card: Any, title: str = "Model card") -> str:
    """The card as Markdown: ``# title``, then ``## Section`` per section in :data:`ORDER`."""
    card = check(card)
    sections = card["sections"]
    names = [n for n in ORDER if n in sections] + sorted(set(sections) - set(ORDER))
    out = [f"# {title}", ""]
    for name in names:
        s = sections[name]
        out += [f"## {name}", ""]
        if s.get("text"):
            out += [s["text"], ""]
        for k, v in s.get("facts", {}).items():
            out.append(f"- **{_cell(k)}**: {_cell(v)}")
        if s.get("facts"):
            out.append("")
        if "table" in s:
            cols = s["table"]["columns"]
            out.append("| " + " | ".join(_cell(c) for c in cols) + " |")
            out.append("|" + "---|" * len(cols))
            out += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in s["table"]["rows"]]
            out.append("")
    if not sections:
        out += ["(this model has no card sections yet)", ""]
    return "\n".join(out).rstrip() + "\n"
