"""README.md and docs/*.md hold together: every relative link reaches a file of the repository
and, for a #fragment into a markdown file, one of its headings; README's quick start holds only
blocks that a test runs (its curl and SDK blocks run in tests/toy/test_toy_demo.py) and `make`
commands that name real targets."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from persona_steer.config import PROJECT_ROOT
from tests.docs.markdown import (DOCS, README, anchors, is_make_block, links, make_targets,
                                 quick_start_blocks, slug)

PAGES = [README, *sorted(DOCS.glob("*.md"))]


def _broken(page: Path) -> list[str]:
    problems = []
    for line, target in links(page):
        parts = urlsplit(target)
        if parts.scheme or target.startswith("//"):
            continue                                   # http(s), mailto: not ours to check
        where = f"{page.relative_to(PROJECT_ROOT)}:{line}: {target}"
        dest = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if not dest.is_relative_to(PROJECT_ROOT):
            problems.append(f"{where} (outside the repository)")
        elif not dest.exists():
            problems.append(f"{where} (no such file)")
        elif parts.fragment and dest.suffix == ".md" and parts.fragment not in anchors(dest):
            problems.append(f"{where} (no heading with that anchor in {dest.name})")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_relative_link_resolves(page):
    assert _broken(page) == []


def test_every_docs_page_is_linked_from_readme():
    linked = {(README.parent / urlsplit(t).path).resolve() for _, t in links(README)
              if not urlsplit(t).scheme}
    assert [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked] == []


def test_every_docs_page_starts_with_a_title_and_what_it_is_for():
    """A title, then a paragraph of prose (what the page is for) before any heading, list,
    table, code or picture."""
    for page in DOCS.glob("*.md"):
        lines = [line for line in page.read_text().splitlines() if line.strip()]
        assert lines[0].startswith("# "), page.name
        assert not re.match(r"\s*([#|>!-]|```|\*\s|\d+\.)", lines[1]), (page.name, lines[1])


def test_the_checker_finds_what_is_broken(tmp_path, monkeypatch):
    """The link check itself: a missing file, a missing anchor and a path out of the repository
    are reported; links inside code are not links; GitHub's slugs for headings with code and
    punctuation."""
    monkeypatch.setattr("tests.docs.test_docs_links.PROJECT_ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "# A\n\n## The `safety` field: capping (v2)\n\n## Again\n\n## Again\n\n"
        "```bash\n# not a heading\n[not](a-link.md)\n```\n")
    page = tmp_path / "docs" / "b.md"
    page.write_text("[ok](a.md#the-safety-field-capping-v2) [ok](a.md#again-1) "
                    "[gone](a.md#not-a-heading) [missing](c.md) [out](../../etc/passwd) "
                    "`[code](nowhere.md)` [web](https://example.com/x.md) [self](#b)\n# B\n")
    found = _broken(page)
    assert [p.split(": ", 1)[1] for p in found] == [
        "a.md#not-a-heading (no heading with that anchor in a.md)",
        "c.md (no such file)", "../../etc/passwd (outside the repository)"]
    assert slug("Using it from Python: `vllm.LLM` (in-process)") == "using-it-from-python-vllmllm-in-process"


def test_quick_start_make_commands_name_real_targets():
    blocks = quick_start_blocks()
    make_blocks = [b for b in blocks if is_make_block(b)]
    assert make_blocks, "README's quick start has no set-up commands"
    for block in make_blocks:
        for target in make_targets(block):
            r = subprocess.run(["make", "-n", target], cwd=PROJECT_ROOT, capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 0, (target, r.stderr)
    # everything else is a block that tests/toy/test_toy_demo.py runs
    assert {b.lang for b in blocks if not is_make_block(b)} <= {"bash", "python"}
