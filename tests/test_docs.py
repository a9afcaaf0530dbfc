"""The docs cannot rot: every ```python block of docs/*.md and of the course's chapters
(docs/course/NN_*.md) runs, in order, in one namespace per file, in a temporary directory. A
```mermaid block must equal the variable ``mermaid`` as the preceding blocks left it (so pasted
diagrams are what the code draws today)."""

from __future__ import annotations

import re
import sys
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


def _extras() -> dict[str, set[str]]:
    """pyproject's extras -> the import names of their packages (scikit-learn -> sklearn)."""
    text = (DOCS.parent / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    rename = {"scikit-learn": "sklearn", "tensorflow-cpu": "tensorflow"}
    out = {}
    for name, body in re.findall(r"^([\w-]+) = \[(.*?)\]$", section, re.M | re.S):
        dists = [re.match(r"[\w.-]+", d)[0] for d in re.findall(r'"([^"]+)"', body)]
        out[name] = {rename.get(d, d.replace("-", "_")) for d in dists}
    return out


def _installed_by(text: str, extras: dict[str, set[str]]) -> set[str]:
    """Import names that ``text``'s ``pip install`` commands install: extras (but ``test``,
    the suite's own) and bare names."""
    got = set()
    for cmd in re.findall(r"pip install ([^`\n]+)", text):
        for extra in re.findall(r"\[([\w,-]+)\]", cmd):
            for e in extra.split(","):
                got |= extras.get(e, set()) if e != "test" else set()
        got |= {w.strip("\"'") for w in cmd.split() if re.fullmatch(r"[\"']?[a-z_]+[\"']?", w)}
    return got


@pytest.mark.parametrize(
    "doc",
    [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md")), *CHAPTERS],
    ids=lambda p: p.name,
)
def test_every_package_a_block_imports_is_installed_by_a_pip_line_above_it(doc):
    """A reader installs what the page has said so far: the README's scikit-learn block
    imported pandas, which the sklearn extra does not install, and docs/onnx.md imported
    onnxruntime after telling the reader to install the onnx extra only."""
    import ast

    text, extras = doc.read_text(encoding="utf-8"), _extras()
    for m in FENCE.finditer(text):
        if m[1] != "python":
            continue
        imported = set()
        for node in ast.walk(ast.parse(m[2])):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
        third_party = imported - set(sys.stdlib_module_names) - {"numpy", "lepton_nn"}
        missing = third_party - _installed_by(text[: m.start()], extras)
        line = text.count("\n", 0, m.start()) + 2
        assert not missing, f"{doc.name}:{line} imports {sorted(missing)}: no pip line above"
