"""Every relative link in README.md and docs/**/*.md reaches an existing file, and every #anchor a heading there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(text: str, *, keep_code: bool = False) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans blanked unless `keep_code` (code holds no
    links, but a heading's anchor keeps its code's words)."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line if keep_code else re.sub(r"`[^`]*`", "``", line)))
    return lines


def anchors(page: Path) -> set[str]:
    """The heading anchors GitHub gives `page`: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(page.read_text(), keep_code=True):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))
        base = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """`page:line: target (why)` for each relative link of `page` that does not resolve."""
    problems = []
    for number, line in prose_lines(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                problems.append(f"{page.relative_to(root)}:{number}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{page.relative_to(root)}:{number}: {target} (no heading #{anchor} there)")
    return problems


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_relative_link_resolves() -> None:
    found = [t for p in pages() for _, line in prose_lines(p.read_text()) for t in LINK.findall(line)]
    assert len(found) > 50, "the link pattern no longer finds the docs' links"
    problems = [problem for page in pages() for problem in broken_links(page)]
    assert not problems, "\n".join(problems)


def test_a_broken_link_and_a_missing_anchor_are_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Whisper's 30-second window (`x.py`)\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#whispers-30-second-window-xpy) [gone](missing.md) [bad](other.md#nowhere)\n"
                    "```\n[in code](missing.md)\n```\n`[inline](missing.md)` ![img](other.md)\n")
    assert broken_links(page, tmp_path) == ["page.md:1: missing.md (no such file)",
                                  "page.md:1: other.md#nowhere (no heading #nowhere there)"]
    page.write_text("text\n```\ncode\n```\n[gone](missing.md)\n")
    assert broken_links(page, tmp_path) == ["page.md:5: missing.md (no such file)"]
