"""`ponder plot tree`: a saved MCTS tree (`search.return_tree`) becomes a PNG, whichever way it was saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evaluation.tree_plot import NoTree, find_tree, place, plot_tree, walk
from ponder.cli import main

pytest.importorskip("matplotlib")


def node(step: str, visits: int, value: float | None, *children: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": step,
        "prior": 0.5,
        "visits": visits,
        "value": value,
        "terminal": not children and step.endswith("[24]\n"),
        "finished": not children and step.endswith("[24]\n"),
        "children": list(children),
    }


TREE = node(
    "",
    6,
    0.4,
    node("13-7=6 [3 9 6]\n", 4, 0.6, node("9-3=6 [6 6]\n", 3, 0.7, node("6*4=24 [24]\n", 1, 0.9))),
    node("9+3=12 [7 13 12]\n", 2, 0.2, node("13+7=20 [12 20]\n", 1, 0.1)),
    node("7*3=21 [9 13 21]\n", 0, None),
)


def count(tree: dict[str, Any]) -> int:
    return 1 + sum(count(child) for child in tree["children"])


def png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_small_tree_is_drawn_with_every_node(tmp_path: Path) -> None:
    out = tmp_path / "tree.png"
    assert plot_tree(TREE, out, "a hand-built tree") == count(TREE) == 7
    assert png(out) and out.stat().st_size > 5_000


def test_the_layout_puts_leaves_apart_and_parents_over_their_children() -> None:
    placed = walk(place(TREE))
    leaves = sorted(p.x for p in placed if not p.children)
    assert leaves == [0.0, 1.0, 2.0]
    for p in placed:
        if p.children:
            assert p.x == sum(c.x for c in p.children) / len(p.children)
        assert all(c.depth == p.depth + 1 for c in p.children)


def test_the_tree_is_found_in_a_response_its_search_object_or_bare() -> None:
    search = {"strategy": "mcts", "stop_reason": "done", "tree": TREE}
    assert find_tree(TREE) is TREE
    assert find_tree(search) is TREE
    assert find_tree({"id": "x", "choices": [], "search": search}) is TREE
    other = {"strategy": "mcts", "tree": node("", 1, 0.5)}
    assert find_tree({"search": [other, search]}, choice=1) is TREE
    with pytest.raises(NoTree, match="return_tree"):
        find_tree({"search": {"strategy": "best_of_n", "tree": None}})
    with pytest.raises(NoTree, match="no choice 2"):
        find_tree({"search": [search]}, choice=2)


def test_ponder_plot_tree_writes_the_png_beside_the_response(tmp_path: Path, capsys: Any) -> None:
    saved = tmp_path / "response.json"
    saved.write_text(json.dumps({"object": "chat.completion", "search": {"strategy": "mcts", "tree": TREE}}))
    assert main(["plot", "tree", str(saved)]) == 0
    assert png(tmp_path / "response.png")
    assert "7 nodes" in capsys.readouterr().out
    untreed = tmp_path / "greedy.json"
    untreed.write_text(json.dumps({"search": {"strategy": "greedy", "tree": None}}))
    assert main(["plot", "tree", str(untreed), "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_the_docs_example_tree_is_the_one_drawn(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "docs" / "examples" / "mcts-tree.json"
    tree = find_tree(json.loads(example.read_text()))
    assert plot_tree(tree, tmp_path / "example.png") == count(tree) == 20
