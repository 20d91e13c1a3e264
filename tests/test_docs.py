"""The README stays a README, and the documentation site covers the tool.

Fast checks on the files themselves; `mkdocs build --strict` (run by .ci/run)
checks the rendered site, its links and anchors.
"""

import re
from pathlib import Path

import typer
from typer.testing import CliRunner

from cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
README_MAX_LINES = 150

LINK = re.compile(r"\]\(([^)\s]+)\)")
SNIPPET = re.compile(r'^--8<-- "([^"]+)"\s*$', re.MULTILINE)


def relative_links(text: str) -> list[str]:
    """Link targets that are files of this repository (no URL, no bare anchor)."""
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def help_commands() -> set[str]:
    """The command names `ct-denoise --help` lists."""
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    section = result.output.split("Commands", 1)[1]
    return set(re.findall(r"^[\s│|]*([a-z][a-z0-9-]*)\s{2,}\S", section, re.MULTILINE))


def mkdocs_config() -> str:
    return (ROOT / "mkdocs.yml").read_text()


def nav_pages() -> list[str]:
    return re.findall(r"^\s*- (?:[^:\n]+: )?(\S+\.md)\s*$", mkdocs_config(), re.MULTILINE)


def doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_links_only_to_pages_that_exist():
    links = relative_links((ROOT / "README.md").read_text())
    assert any(t.startswith("docs/") for t in links)
    nav = set(nav_pages())
    for target in links:
        path = target.split("#", 1)[0]
        assert (ROOT / path).is_file(), f"README links to {target}, which does not exist"
        if path.startswith("docs/"):
            assert path.endswith(".md") and path.removeprefix("docs/") in nav, \
                f"README links to {target}, which is not a page of the site"
    assert "CHANGELOG.md" in links


def test_every_command_has_a_docs_page_and_a_readme_line():
    commands = help_commands()
    registered = set(typer.main.get_command(app).commands)
    assert commands == registered, "could not read the command list from --help"
    readme = (ROOT / "README.md").read_text()
    nav = set(nav_pages())
    for name in sorted(commands):
        page = DOCS / "commands" / f"{name}.md"
        assert page.is_file(), f"`ct-denoise {name}` has no page docs/commands/{name}.md"
        assert f"ct-denoise {name}" in page.read_text(), f"{page.name} does not show `ct-denoise {name}`"
        assert f"commands/{name}.md" in nav, f"docs/commands/{name}.md is not in mkdocs.yml's nav"
        assert f"(docs/commands/{name}.md)" in readme, f"README has no line for `{name}`"


def test_nav_and_pages_agree():
    nav = nav_pages()
    assert len(nav) == len(set(nav)), "a page is twice in the nav"
    pages = {p.relative_to(DOCS).as_posix() for p in doc_pages()}
    assert set(nav) == pages, f"in nav only: {set(nav) - pages}; pages not in nav: {pages - set(nav)}"


def test_docs_links_resolve():
    for page in doc_pages():
        for target in relative_links(page.read_text()):
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if path.parent == DOCS / "figures":  # docs/hooks.py serves these from benchmarks/results
                path = RESULTS / path.name
            assert path.is_file(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_results_page_includes_each_benchmark_result_rather_than_copying_it():
    results = sorted(RESULTS.glob("*.md"))
    assert results, "no benchmarks/results/*.md"
    # Snippets are read from benchmarks/results (and the repository root for the changelog).
    config = mkdocs_config()
    assert "pymdownx.snippets" in config and "$config_dir/benchmarks/results" in config
    assert re.search(r"check_paths:\s*true", config), "a missing include must fail the build"
    page = (DOCS / "results.md").read_text()
    included = SNIPPET.findall(page)
    for result in results:
        assert result.name in included, f"docs/results.md does not include {result.name}"
        # Neither the README nor a page holds a copy of a result's table rows.
        rows = [line for line in result.read_text().splitlines() if line.startswith("| ") and "---" not in line]
        for other in [ROOT / "README.md", *doc_pages()]:
            text = other.read_text()
            copied = [row for row in rows[1:] if row in text]
            assert not copied, f"{other.relative_to(ROOT)} copies {result.name}: {copied[0]}"


def test_every_include_exists():
    bases = [RESULTS, ROOT]
    for page in doc_pages():
        for name in SNIPPET.findall(page.read_text()):
            assert any((base / name).is_file() for base in bases), f"{page.relative_to(ROOT)} includes missing {name}"
