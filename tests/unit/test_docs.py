"""The README and docs/ (issue #13): a short README, links that resolve inside the clone, no
citation of files the clone does not contain, and reference tables that match the code."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from agent.config import SHORTCUTS, Config

REPO = Path(__file__).parents[2]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS, REPO / "bench" / "README.md"]
PAGE_IDS = [str(page.relative_to(REPO)) for page in PAGES]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
OUTSIDE = ("SPEC.md", "STYLE.md", "../shared", "§")
"""Files kept with the project's shared documents, outside this repository (and the spec's
section signs that cite them): a clone cannot follow them."""


def prose(path: Path) -> str:
    """The page without its fenced code blocks (a `[x](y)` in code is no link)."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match[1])
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_the_readme_is_at_most_250_lines() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move detail to docs/"


def test_the_readme_links_every_docs_page_and_the_benchmarks() -> None:
    targets = {m[0] or m[1] for m in LINK.findall(prose(README))}
    for page in [*DOCS, REPO / "bench" / "README.md"]:
        assert str(page.relative_to(REPO)) in targets, page


def test_the_readme_keeps_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make run     # starts the agent on the embedded default" in text
    assert "make test    # runs the whole test suite" in text


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for match in LINK.finditer(prose(page)):
        target = match[1] or match[2]
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif not file.is_relative_to(REPO):
            broken.append(f"{target}: outside the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_no_page_cites_files_outside_the_clone(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert [name for name in OUTSIDE if name in text] == []


def test_no_test_reads_files_outside_the_clone() -> None:
    for test in (REPO / "tests").rglob("*.py"):
        if test == Path(__file__):
            continue
        text = test.read_text(encoding="utf-8")
        assert [name for name in OUTSIDE[:3] if name in text] == [], test


def test_the_configuration_reference_names_every_setting() -> None:
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = []
    for name, field in Config.model_fields.items():
        if field.exclude:
            continue
        section = field.annotation
        if isinstance(section, type) and hasattr(section, "model_fields"):
            table = text[text.index(f"## `{name}`"):]
            table = table[: table.find("\n## ", 1)]
            missing += [f"{name}.{key}" for key in section.model_fields
                        if not re.search(rf"`{key}`", table)]
        elif f"| `{name}` |" not in text:
            missing.append(name)
    assert missing == []
    for variable in SHORTCUTS:
        assert f"`{variable}`" in text, variable


def test_the_documented_channel_variables_are_the_ones_routing_sets() -> None:
    text = (REPO / "docs" / "pbx.md").read_text(encoding="utf-8")
    paragraph = text[text.index("`route` sets"):]
    paragraph = paragraph[: paragraph.index("\n\n")]
    code = (REPO / "agent" / "routing" / "agi_scripts.py").read_text(encoding="utf-8")
    assert set(re.findall(r"CRM_[A-Z_]+", paragraph)) == set(re.findall(r'"(CRM_\w+)"', code))
