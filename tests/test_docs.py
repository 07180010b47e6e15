"""The docs site builds strictly (a broken link fails it), and the README is a short door whose links work."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# [text](target) and ![alt](target); the target up to the first space or closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.M)

needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason='mkdocs-material is not installed (it is in the dev extra: pip install -e ".[dev]")')


def _build(project: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``project``'s mkdocs.yml into ``site``."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(project / "mkdocs.yml"),
         "--site-dir", str(site)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # Material's end-of-life banner, not a build warning


def _readme_links() -> list[str]:
    """README.md's link and image targets that are paths in this repository (no URLs, no bare anchors)."""
    targets = LINK.findall(README.read_text())
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


@needs_mkdocs
def test_the_docs_site_builds_strictly(tmp_path):
    result = _build(REPO, tmp_path / "site")
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()


def _relink_first_page_link(docs: Path, new_target) -> None:
    """Point docs/index.md's first link to a page at ``new_target(page)`` instead."""
    page = docs / "index.md"
    text = page.read_text()
    link = re.search(r"\]\(([a-z_]+\.md)\)", text)
    assert link, "docs/index.md links to no page"
    page.write_text(text.replace(link.group(0), f"]({new_target(link.group(1))})", 1))


def _missing_page(docs: Path) -> str:
    _relink_first_page_link(docs, lambda page: "no_such_page.md")
    return "no_such_page.md"


def _missing_anchor(docs: Path) -> str:
    _relink_first_page_link(docs, lambda page: f"{page}#no-such-heading")
    return "#no-such-heading"


def _page_left_out_of_nav(docs: Path) -> str:
    (docs / "stray.md").write_text("# Stray\n")
    return "stray.md"


@needs_mkdocs
@pytest.mark.parametrize("breakage", [_missing_page, _missing_anchor, _page_left_out_of_nav],
                         ids=["missing page", "missing anchor", "page left out of nav"])
def test_the_strict_build_fails_on_a_broken_docs_copy(breakage, tmp_path):
    """The same build bites: a copy of mkdocs.yml + docs/ builds, and fails once one thing in it is broken."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(REPO / "docs", project / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    intact = _build(project, tmp_path / "intact")
    assert intact.returncode == 0, f"the untouched copy does not build:\n{intact.stderr}"
    named = breakage(project / "docs")
    broken = _build(project, tmp_path / "broken")
    assert broken.returncode != 0, f"a strict build with {named} passed:\n{broken.stderr}"
    assert named in broken.stderr


def test_every_relative_link_in_the_readme_names_a_file():
    links = _readme_links()
    assert links, "the README links to no file"
    missing = [t for t in links if not (REPO / t.split("#")[0]).is_file()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


@needs_mkdocs
def test_every_anchor_the_readme_links_to_is_a_heading_of_its_page():
    from markdown.extensions.toc import slugify  # mkdocs' own heading ids (the toc extension's default)

    anchored = [t for t in _readme_links() if "#" in t]
    for target in anchored:
        path, anchor = target.split("#", 1)
        headings = HEADING.findall((REPO / path).read_text())
        slugs = {slugify(re.sub(r"[`*_]", "", h), "-") for h in headings}
        assert anchor in slugs, f"README.md links to {target}, but {path} has no heading with the id {anchor!r}"


def test_the_readme_is_a_door_of_150_to_250_lines():
    lines = len(README.read_text().splitlines())
    assert 150 <= lines <= 250, f"README.md has {lines} lines; the detail belongs on a docs/ page"


def test_the_readme_gives_the_install_command_ci_runs():
    """.ci/run installs exactly as the README says."""
    ci = (REPO / ".ci" / "run").read_text()
    command = re.search(r"pip install -e \S+", ci).group(0)
    assert command in README.read_text()
