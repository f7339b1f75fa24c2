"""`ponder plot tree`: an MCTS search tree (`search.return_tree`) drawn as a picture.

Contract: `find_tree` takes what a user saved (a whole chat or completion response, its `search` object,
or the tree itself) and returns the tree: nested dicts with `step`, `prior`, `visits`, `value`,
`terminal`, `finished` and `children`, as `searchers.mcts.tree_of` reports it (the visited nodes, most
visited first, at most 256). `plot_tree` lays it out without graphviz (leaves side by side, a parent
centred over its children, one row per depth), colours each node by its mean value, sizes it by its
visits, marks finished solutions, draws the most visited path thick and writes its step texts beside
it, and returns how many nodes it drew. Uses matplotlib's file-only backend (the `train` extra).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LABEL_ROW_UP_TO = 5  # a depth this narrow gets every step written; a wider one only the principal path


class NoTree(ValueError):
    """The file holds no search tree (a request without `return_tree`, or a strategy other than MCTS)."""


def find_tree(data: Any, choice: int = 0) -> dict[str, Any]:
    """The tree in a saved response, in its `search` object (a list when n > 1: `choice` picks one), or
    the tree itself."""
    if isinstance(data, dict) and "children" in data and "visits" in data:
        return data
    if isinstance(data, dict) and "search" in data:
        data = data["search"]
    if isinstance(data, list):
        if not 0 <= choice < len(data):
            raise NoTree(f"the response has {len(data)} choices; there is no choice {choice}")
        data = data[choice]
    if isinstance(data, dict) and isinstance(data.get("tree"), dict):
        tree: dict[str, Any] = data["tree"]
        return tree
    strategy = data.get("strategy") if isinstance(data, dict) else None
    raise NoTree(
        "no search tree here: ask for one with search.strategy 'mcts' (or auto choosing it) and "
        f"search.return_tree true (this search's strategy: {strategy})"
    )


@dataclass
class Placed:
    node: dict[str, Any]
    depth: int
    x: float = 0.0
    children: list[Placed] = field(default_factory=list)
    principal: bool = False


def place(node: dict[str, Any], depth: int = 0, next_leaf: list[float] | None = None) -> Placed:
    """Leaves get x = 0, 1, 2, ... from left to right; a parent sits at the mean of its children's x."""
    next_leaf = [0.0] if next_leaf is None else next_leaf
    placed = Placed(node, depth)
    placed.children = [place(child, depth + 1, next_leaf) for child in node.get("children", [])]
    if placed.children:
        placed.x = sum(child.x for child in placed.children) / len(placed.children)
    else:
        placed.x = next_leaf[0]
        next_leaf[0] += 1.0
    return placed


def walk(placed: Placed) -> list[Placed]:
    out = [placed]
    for child in placed.children:
        out.extend(walk(child))
    return out


def mark_principal(root: Placed) -> None:
    """The most visited path from the root (ties to the higher value), as MCTS's `final=visits` reads it."""
    node = root
    node.principal = True
    while node.children:
        node = max(node.children, key=lambda c: (c.node.get("visits", 0), c.node.get("value") or 0.0))
        node.principal = True


def short(step: str, limit: int = 28) -> str:
    text = " ".join(step.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_tree(tree: dict[str, Any], path: Path, title: str = "") -> int:
    """Draw `tree` into `path` (PNG); the number of nodes drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    root = place(tree)
    mark_principal(root)
    nodes = walk(root)
    leaves = sum(1 for p in nodes if not p.children)
    depth = max(p.depth for p in nodes)
    fig, axis = plt.subplots(figsize=(min(40.0, max(7.0, 0.45 * leaves + 3)), max(4.0, 1.1 * depth + 2.5)))
    for parent in nodes:
        for child in parent.children:
            thick = parent.principal and child.principal
            axis.plot(
                [parent.x, child.x],
                [-parent.depth, -child.depth],
                color="black" if thick else "0.6",
                linewidth=2.4 if thick else 0.8,
                zorder=1,
            )
    visits = [max(1, int(p.node.get("visits") or 0)) for p in nodes]
    most = max(visits)
    values = [p.node.get("value") for p in nodes]
    colour = plt.get_cmap("viridis")
    norm = Normalize(0.0, 1.0)
    axis.scatter(
        [p.x for p in nodes],
        [-p.depth for p in nodes],
        s=[40 + 360 * v / most for v in visits],
        c=[colour(norm(v)) if v is not None else (0.85, 0.85, 0.85, 1.0) for v in values],
        marker="o",
        edgecolors=["red" if p.node.get("finished") else "black" for p in nodes],
        linewidths=[2.0 if p.node.get("finished") else 0.6 for p in nodes],
        zorder=2,
    )
    row_width = Counter(p.depth for p in nodes)  # wider rows would write their steps over each other
    for p, v in zip(nodes, visits, strict=True):
        if p.depth == 0 or not (row_width[p.depth] <= LABEL_ROW_UP_TO or p.principal):
            continue
        value = p.node.get("value")
        text = f"{short(str(p.node.get('step', '')))}\nN={v}" + (
            f" V={value:.2f}" if value is not None else ""
        )
        axis.annotate(
            text,
            (p.x, -p.depth),
            xytext=(8, 4),
            textcoords="offset points",
            fontsize=7,
            fontweight="bold" if p.principal else "normal",
            family="monospace",
        )
    axis.annotate(
        f"root  N={tree.get('visits', 0)}",
        (root.x, 0),
        xytext=(8, 4),
        textcoords="offset points",
        fontsize=8,
    )
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=colour), ax=axis, fraction=0.03, pad=0.01)
    bar.set_label("node value (mean of backed-up evaluations)")
    axis.set_yticks(
        [-d for d in range(depth + 1)], [f"step {d}" if d else "prompt" for d in range(depth + 1)]
    )
    axis.set_xticks([])
    axis.set_xlim(min(p.x for p in nodes) - 0.8, max(p.x for p in nodes) + 2.5)
    axis.set_ylim(-depth - 0.6, 0.6)
    for side in ("top", "right", "bottom"):
        axis.spines[side].set_visible(False)
    finished = sum(1 for p in nodes if p.node.get("finished"))
    legend = (
        f"{len(nodes)} nodes, {finished} finished solutions (red rim); size: visits N; "
        "thick: the most visited path"
    )
    axis.set_title(f"{title}\n{legend}" if title else legend, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(nodes)


def plot_tree_file(source: Path, out: Path, choice: int = 0, title: str | None = None) -> int:
    """`ponder plot tree`: the tree in a saved JSON file drawn into `out`; the number of nodes drawn."""
    tree = find_tree(json.loads(source.read_text()), choice)
    return plot_tree(tree, out, source.name if title is None else title)
