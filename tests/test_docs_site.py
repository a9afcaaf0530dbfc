"""The docs render as a static site (MkDocs, Material theme, ``mkdocs.yml`` at the root):
``mkdocs build --strict`` must succeed with no warning, and MkDocs' ``omitted_files: warn``
makes a page missing from the nav a warning too, so every page is reachable. Needs the ``docs``
extra (in the ``test`` extra, so CI builds it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("material")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_the_site_builds_without_warnings_and_has_every_page(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"]
        + ["-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "WARNING" not in r.stderr, r.stderr[-3000:]
    for page in DOCS.rglob("*.md"):
        rel = page.relative_to(DOCS).with_suffix("")
        parts = rel.parts[:-1] if rel.name in ("README", "index") else rel.parts
        html = site.joinpath(*parts, "index.html")
        assert html.is_file(), f"{page.relative_to(ROOT)} was not rendered"
    # every picture a page shows is on the site, and the course's code is highlighted
    for page in DOCS.rglob("*.md"):
        for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text("utf-8")):
            target = (page.parent / img).resolve().relative_to(DOCS)
            assert (site / target).is_file(), f"{page.name}: {img} missing from the site"
    chapter = (site / "course" / "03_dense" / "index.html").read_text("utf-8")
    assert 'class="highlight"' in chapter and "dense_backward" in chapter
