"""The docs cannot rot: every ```python block of docs/*.md and of the course's chapters
(docs/course/NN_*.md) runs, in order, in one namespace per file, in a temporary directory. A
```mermaid block must equal the variable ``mermaid`` as the preceding blocks left it (so pasted
diagrams are what the code draws today)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
COURSE = DOCS / "course"
CHAPTERS = sorted(COURSE.glob("[0-9][0-9]_*.md"))
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def blocks(path: Path) -> list[tuple[str, str, int]]:
    """(language, code, line number) of each fenced block."""
    text = path.read_text(encoding="utf-8")
    return [(m[1], m[2], text.count("\n", 0, m.start()) + 2) for m in FENCE.finditer(text)]


@pytest.mark.parametrize(
    "doc", sorted(DOCS.glob("*.md")) + CHAPTERS, ids=lambda p: str(p.relative_to(DOCS))
)
def test_doc_runs(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = blocks(doc)
    assert any(lang == "python" for lang, _, _ in found), f"{doc.name} has no python block"
    ns: dict = {"__name__": f"docs_{doc.parent.name}_{doc.stem}"}
    for lang, code, line in found:
        if lang == "python":
            exec(compile(code, f"{doc}:{line}", "exec"), ns)
        elif lang == "mermaid":
            assert "mermaid" in ns, f"{doc.name}:{line}: no `mermaid` variable before the diagram"
            assert ns["mermaid"] == code, f"{doc.name}:{line}: the pasted diagram is out of date"


def test_course_contents_lists_every_chapter_in_order():
    """docs/course/README.md links each chapter once, in file order, and every chapter exists."""
    linked = re.findall(r"\]\(([0-9][0-9]_[\w]+\.md)\)", (COURSE / "README.md").read_text("utf-8"))
    assert len(CHAPTERS) >= 7
    assert linked == [p.name for p in CHAPTERS]
