"""The README and docs/*.md link to files and headings that exist.

Every Markdown link or image outside code (`[text](target)`, `![alt](target)`) with a
relative target must name a file or directory of the checkout, resolved from the page that
links; a `#fragment` must be the GitHub slug of a heading of the target page (or of the page
itself). The README must also link every page of docs/, since it is where a newcomer starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target), target without spaces, optional "title".
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto: ...


@dataclass(frozen=True)
class Link:
    page: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{_shown(self.page)}:{self.line}: ({self.target})"


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's slug, with GitHub's -1, -2 ... for repeated headings."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose_lines(page.read_text()):
        if match := HEADING.match(line):
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(page: Path) -> list[Link]:
    found = []
    for number, line in _prose_lines(page.read_text()):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append(Link(page, number, match.group(1)))
    return found


def broken(link: Link) -> str | None:
    """Why a relative link does not resolve, or None (external links are not fetched)."""
    if EXTERNAL.match(link.target):
        return None
    path, _, fragment = link.target.partition("#")
    target = link.page
    if path:
        target = (link.page.parent / path).resolve()
        if not target.is_relative_to(ROOT):
            return f"{link}: points outside the repository"
        if not target.exists():
            return f"{link}: no file {_shown(target)}"
    if fragment and target.suffix == ".md" and fragment not in anchors(target):
        return f"{link}: no heading #{fragment} in {_shown(target)}"
    return None


def test_github_slugs_follow_githubs_rules():
    assert github_slug("`make run`") == "make-run"
    assert github_slug("Events: outbox → Redis Stream") == "events-outbox--redis-stream"
    assert github_slug("Choices where the spec is silent") == "choices-where-the-spec-is-silent"
    assert github_slug("Web (Django, gunicorn)") == "web-django-gunicorn"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    # given the page's links outside code
    found = links(page)
    # when each relative target is resolved from the page
    problems = [why for link in found if (why := broken(link))]
    # then every file and heading exists
    assert not problems, "\n".join(problems)


def test_the_readme_links_every_docs_page():
    # given the pages of docs/ and the README's links
    pages = {path.name for path in (ROOT / "docs").glob("*.md")}
    linked = {
        Path(link.target.partition("#")[0]).name
        for link in links(ROOT / "README.md")
        if link.target.startswith("docs/")
    }
    # then the README is a way in to each of them
    assert pages - linked == set(), f"README links none of: {sorted(pages - linked)}"


def test_a_broken_link_is_reported(tmp_path):
    # given a page linking a missing file, a missing heading and a real one
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[gone](missing.md) [no heading](#nowhere) [fine](#title)\n"
        "```\n[in code](ignored.md)\n```\n`[inline](ignored.md)`\n"
    )
    # when its links are checked (as if inside the repository)
    checked = [Link(ROOT / "docs" / "page.md", link.line, link.target) for link in links(page)]
    # then the two broken ones are reported, code is skipped
    assert [link.target for link in checked] == ["missing.md", "#nowhere", "#title"]
    assert broken(checked[0]) is not None
    assert broken(Link(page, 3, "#nowhere")) is not None
    assert broken(Link(page, 3, "#title")) is None
