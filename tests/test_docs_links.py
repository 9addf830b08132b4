"""Every pointer into ``docs/`` names a page that exists and, with ``#anchor``, one of its headings.

Source files point at the documentation as ``docs/<page>.md`` or ``docs/<page>.md#<anchor>``; the
pages link each other as ``[text](<page>.md#<anchor>)``. Anchors are GitHub's: the heading's text
lowercased, punctuation other than ``-`` and ``_`` dropped, spaces turned into ``-``, and ``-1``,
``-2``, ... appended to repeated headings.
"""

import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SOURCE_SUFFIXES = (".py", ".md", ".sh", ".ipynb")
SKIPPED_DIRS = {".git", ".venv", "build", "runs", "__pycache__", ".pytest_cache"}

DOCS_POINTER = re.compile(r"docs/([A-Za-z0-9_\-]+\.md)(?:#([A-Za-z0-9_\-]+))?")
RELATIVE_LINK = re.compile(r"\]\(([A-Za-z0-9_\-]+\.md)?(?:#([A-Za-z0-9_\-]+))?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading (before de-duplication)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a markdown page, skipping fenced code; repeats get ``-1``, ``-2``, ..."""
    seen: dict[str, int] = {}
    result = set()
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match is None:
            continue
        base = github_anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def source_files() -> list[pathlib.Path]:
    """Tracked and new (not ignored) files of the repository with a source suffix; a walk of the tree
    without git."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, check=True,
            capture_output=True, text=True,
        ).stdout.splitlines()
        paths = [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for directory, subdirs, files in os.walk(ROOT):
            subdirs[:] = [d for d in subdirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
            paths.extend(pathlib.Path(directory) / name for name in files)
    return sorted(p for p in paths if p.suffix in SOURCE_SUFFIXES and p.is_file())


def broken_references(path: pathlib.Path, text: str) -> list[str]:
    """``"file:line: reference (why)"`` for each pointer in ``text`` that does not resolve."""
    problems = []
    pointers = [(m, DOCS) for m in DOCS_POINTER.finditer(text)]
    if path.parent == DOCS and path.suffix == ".md":
        pointers += [(m, DOCS) for m in RELATIVE_LINK.finditer(text) if m.group(1) or m.group(2)]
    for match, base in pointers:
        page = base / match.group(1) if match.group(1) else path
        anchor = match.group(2)
        where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
        if not page.is_file():
            problems.append(f"{where} (no page {page.relative_to(ROOT)})")
        elif anchor and anchor not in anchors(page.read_text()):
            problems.append(f"{where} (no heading with anchor #{anchor} in {page.relative_to(ROOT)})")
    return problems


@pytest.mark.parametrize(
    "heading, anchor",
    [
        ("S5", "s5"),
        ("PTD: perturb-then-diagonalise", "ptd-perturb-then-diagonalise"),
        ("Transitions in (-1, 1)", "transitions-in--1-1"),
        ('The Pallas kernels (`impl="pallas"`)', "the-pallas-kernels-implpallas"),
        ("Sequence parallelism (LASP-2 with matrix transitions)", "sequence-parallelism-lasp-2-with-matrix-transitions"),
    ],
)
def test_github_anchor(heading, anchor):
    assert github_anchor(heading) == anchor


def test_anchors_skip_code_and_number_repeats():
    page = "# Title\n```\n# not a heading\n```\n## Part\n## Part\n"
    assert anchors(page) == {"title", "part", "part-1"}


def test_broken_references_are_found():
    docs = "docs/"  # spelt apart, so that the whole-tree test does not read these as pointers
    text = f"see {docs}ssm.md#s5 and {docs}ssm.md#no-such-heading and {docs}no_such_page.md"
    problems = broken_references(ROOT / "example.py", text)
    assert len(problems) == 2
    assert "#no-such-heading" in problems[0] and "no_such_page.md" in problems[1]


def test_docs_index_lists_every_page():
    index = (DOCS / "README.md").read_text()
    pages = sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md")
    assert pages, "docs/ has no pages"
    missing = [name for name in pages if f"]({name})" not in index]
    assert not missing, f"docs/README.md does not link {missing}"


def test_every_docs_reference_resolves():
    files = source_files()
    assert any(p.parent == DOCS for p in files), "docs/ pages not found among the source files"
    problems = [problem for path in files for problem in broken_references(path, path.read_text(errors="replace"))]
    assert not problems, "broken documentation pointers:\n" + "\n".join(problems)
