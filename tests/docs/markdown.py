"""Reading the project's markdown the way GitHub renders it: headings and their anchors, links,
and fenced code blocks (whose contents are never headings or links)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from persona_steer.config import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
QUICK_START = "## Quick start"

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
# [text](target) and ![alt](target); the target ends at whitespace (a title may follow) or ")"
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# github-slugger: drop what is not a letter, digit, space, "-" or "_"; spaces become "-"
_SLUG_DROP = re.compile(r"[^\w\- ]", re.UNICODE)


@dataclass
class Block:
    lang: str
    code: str
    line: int           # 1-based line of the opening fence


def _split(text: str) -> tuple[list[tuple[int, str]], list[Block]]:
    """(prose lines with their numbers, fenced blocks)."""
    prose, blocks, fence, lang, body, start = [], [], None, "", [], 0
    for n, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence, lang, body, start = m.group(1), line.strip()[3:].strip(), [], n
        elif fence is not None and line.strip().startswith(fence) and line.strip() == fence:
            blocks.append(Block(lang, "\n".join(body) + "\n", start))
            fence = None
        elif fence is not None:
            body.append(line)
        else:
            prose.append((n, line))
    return prose, blocks


def _strip_inline_code(line: str) -> str:
    return re.sub(r"(`+)(.+?)\1", "", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: inline markdown rendered to text, lower case,
    punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)       # links -> their text
    text = text.replace("`", "").replace("*", "")
    return _SLUG_DROP.sub("", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _split(path.read_text())[0]:
        m = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link and image outside code."""
    return [(n, m.group(1)) for n, line in _split(path.read_text())[0]
            for m in _LINK.finditer(_strip_inline_code(line))]


def section(text: str, heading: str) -> str:
    """From `heading` (a whole line) to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.rstrip() == heading)
    prose_lines = {n for n, _ in _split(text)[0]}
    for i in range(start + 1, len(lines)):
        m = re.match(r"^(#{1,6})\s", lines[i])
        if m and (i + 1) in prose_lines and len(m.group(1)) <= level:
            return "".join(lines[start:i])
    return "".join(lines[start:])


def quick_start_blocks() -> list[Block]:
    """The fenced blocks of README's quick start, in order."""
    return _split(section(README.read_text(), QUICK_START))[1]


def is_make_block(block: Block) -> bool:
    """A block of `make <target>` commands only (the set-up commands)."""
    commands = [c for c in (line.split("#", 1)[0].strip() for line in block.code.splitlines()) if c]
    return bool(commands) and all(re.fullmatch(r"make [\w-]+", c) for c in commands)


def make_targets(block: Block) -> list[str]:
    return [line.split("#", 1)[0].split()[1] for line in block.code.splitlines()
            if line.split("#", 1)[0].strip()]
