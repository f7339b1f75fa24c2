"""Training curves: one panel per stage (loss against optimizer step), drawn from OUT/metrics.jsonl.

Contract: `plot_training(out)` writes OUT/training.png and returns its path, or None when the log holds
no loss yet. Uses matplotlib's file-only backend, so it works on headless machines.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tasks.datasets import read_jsonl


def plot_training(out: Path) -> Path | None:
    try:
        import matplotlib
    except ImportError:  # plots are a convenience of the `train` extra, never a reason to fail a run
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    log = out / "metrics.jsonl"
    if not log.exists():
        return None
    for record in read_jsonl(log, lambda _, record: record):
        if "loss" in record and "step" in record:
            curves[record["stage"]].append((record["step"], record["loss"]))
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for ax, (stage, points) in zip(axes[0], sorted(curves.items()), strict=True):
        steps, losses = zip(*points, strict=True)
        ax.plot(steps, losses, marker=".", linewidth=1)
        ax.set_title(stage)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(f"ponder train: {out.name}")
    fig.tight_layout()
    path = out / "training.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
