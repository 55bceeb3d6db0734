"""The docs stay honest: README.md and docs/*.md link only to what exists, name only real
`make` targets and `rnnlab` commands, the README stays short, and the numbers that
`make docs-figures` regenerates live in exactly one block.

Only markdown links are checked as paths; file paths written in prose or code (``rnnlab/tasks/
base.py``) are descriptions, not links. Commands are looked for in code (inline spans and
fenced blocks), where the docs write them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
MAKE = re.compile(r"\bmake[ \t]+([a-z][\w-]*)")
RNNLAB = re.compile(r"(?<![\w./-])rnnlab[ \t]+([a-z][\w-]*)")


def split(text: str) -> tuple[list[str], list[str]]:
    """(prose lines, code lines): fenced blocks are code; inline code stays in its prose line."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return prose, code


def code_text(text: str) -> str:
    """Everything written as code: fenced blocks and inline spans."""
    prose, code = split(text)
    spans = [m.group(2) for line in prose for m in INLINE_CODE.finditer(line)]
    return "\n".join(code + spans)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose, _ = split(page.read_text())
    seen: dict[str, int] = {}
    out = set()
    for line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    prose, _ = split(page.read_text())
    found = []
    for line in prose:
        line = INLINE_CODE.sub("", line)  # `[x](y)` inside code is not a link
        found += [m.group(1) for m in LINK.finditer(line)]
    return found


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, (
        f"README.md has {n} lines; move detail into docs/ (≤ {MAX_README_LINES})"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: …
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(README)}
    missing = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M))


def test_every_make_target_named_exists():
    targets = makefile_targets()
    assert {"sweep", "test", "report", "ui", "help"} <= targets  # the parser sees the Makefile
    unknown = {
        f"{page.relative_to(ROOT)}: make {t}"
        for page in PAGES
        for t in MAKE.findall(code_text(page.read_text()))
        if t not in targets
    }
    assert not unknown, sorted(unknown)


def rnnlab_commands() -> set[str]:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "rnnlab", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    ).stdout
    return set(re.findall(r"^ {4}([a-z][\w-]*)(?: {2,}|$)", out, re.M))


def test_every_rnnlab_command_named_exists():
    commands = rnnlab_commands()
    assert {"sweep", "report", "ui"} <= commands  # the parser sees the help
    unknown = {
        f"{page.relative_to(ROOT)}: rnnlab {c}"
        for page in PAGES
        for c in RNNLAB.findall(code_text(page.read_text()))
        if c not in commands
    }
    assert not unknown, sorted(unknown)


def test_the_numbers_block_exists_once_where_docs_figures_writes_it():
    from rnnlab.docs_figures import BEGIN, END, NUMBERS_PAGE

    counts = {
        str(p.relative_to(ROOT)): (p.read_text().count(BEGIN), p.read_text().count(END))
        for p in PAGES
    }
    holders = {p: c for p, c in counts.items() if c != (0, 0)}
    assert holders == {str(NUMBERS_PAGE.relative_to(ROOT)): (1, 1)}, holders
    text = NUMBERS_PAGE.read_text()
    assert text.index(BEGIN) < text.index(END)


def test_the_checks_themselves():
    """The helpers above find what they should (a check that finds nothing passes vacuously)."""
    assert slug("From a notebook: `rnnlab.load_results`") == "from-a-notebook-rnnlabload_results"
    assert slug("Ensembles: what stacking buys") == "ensembles-what-stacking-buys"
    text = "see [a](docs/x.md#y) and ![f](f.png)\n```\nmake sweep\n```\nrun `rnnlab ui` or `make  test`"
    prose, code = split(text)
    assert code == ["make sweep"]
    assert [m.group(1) for line in prose for m in LINK.finditer(line)] == ["docs/x.md#y", "f.png"]
    assert MAKE.findall(code_text(text)) == ["sweep", "test"]
    assert RNNLAB.findall(code_text(text)) == ["ui"]
    assert RNNLAB.findall("import rnnlab\nres = 1; x/rnnlab sweep; rnnlab.load_results") == []
