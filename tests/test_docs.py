"""The docs site and the README stay honest: every help names an existing page, every page's figure names
its split and its file, every results file is on the results page, and the README stays short."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from ponder.cli import build_parser
from training.pipeline import parser as train_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGE = re.compile(r"docs/([\w-]+)\.md")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def every_parser(parser: argparse.ArgumentParser, name: str = "ponder") -> list[tuple[str, Any]]:
    """The parser and each of its subcommands' parsers, depth first."""
    found: list[tuple[str, Any]] = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                found += every_parser(child, f"{name} {sub}")
    return found


def test_every_subcommands_help_names_an_existing_docs_page() -> None:
    helps = [(name, p.format_help()) for name, p in every_parser(build_parser()) if name != "ponder train"]
    helps.append(("ponder train", train_parser(None).format_help()))  # `ponder train` owns its --help
    assert len(helps) >= 14
    for name, text in helps:
        pages = PAGE.findall(text)
        assert pages, f"`{name} --help` names no docs page"
        for page in pages:
            assert (DOCS / f"{page}.md").is_file(), f"`{name} --help` names docs/{page}.md, which is missing"


def test_every_docs_page_is_in_the_nav_and_every_link_resolves() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.glob("*.md"):
        assert f": {page.name}" in nav, f"{page.name} is not in mkdocs.yml's nav"
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            where = ROOT / target if target.startswith("results/") else DOCS / target
            assert where.exists(), f"{page.name} links to {target}, which is missing"


def test_every_figure_names_its_split_and_its_file() -> None:
    for page in DOCS.glob("*.md"):
        text = page.read_text()
        for match in IMAGE.finditer(text):
            caption = text[match.end() : match.end() + 600].split("\n\n", 2)[1]
            assert caption.startswith("*") and re.search(r"\bsplit\b", caption, re.IGNORECASE), (
                f"{page.name}: the figure {match.group(1)} has no caption naming its split"
            )
            assert re.search(r"`(results|docs)/[\w./-]+\.json`", caption), (
                f"{page.name}: the figure {match.group(1)}'s caption names no results file"
            )


def test_the_results_page_lists_every_committed_results_file_with_a_plot() -> None:
    text = (DOCS / "results.md").read_text()
    for result in sorted((ROOT / "results").glob("*.json")):
        if result.name.endswith("-meta.json"):
            continue  # listed with its sweep
        assert f"`results/{result.name}`" in text, f"docs/results.md does not list results/{result.name}"
    for png in sorted((ROOT / "results").glob("*.png")):
        assert f"](results/{png.name})" in text, f"docs/results.md does not show results/{png.name}"


def test_the_readme_is_short_and_links_to_the_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for command in ("make serve", "make test", "extra_body", '"search"'):
        assert command in readme
    pages = set(re.findall(r"\]\(docs/([\w-]+\.md)", readme))
    assert len(pages) >= 10
    for page in pages:
        assert (DOCS / page).is_file()
    for image in IMAGE.findall(readme):
        assert (ROOT / image).is_file()


def test_plot_results_draws_every_plot_from_the_committed_json(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from evaluation.plots import results_plots

    for result in (ROOT / "results").glob("*.json"):
        shutil.copy(result, tmp_path / result.name)
    written = results_plots(tmp_path)
    names = {path.name for path in written}
    assert names == {
        "search-headline.png",
        "foundation.png",
        "prm-failures.png",
        "learning-prm-swap-dev.png",
        "server-load.png",
        "remote-overhead.png",
    }
    assert all(path.stat().st_size > 10_000 for path in written)
