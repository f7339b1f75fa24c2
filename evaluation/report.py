"""The search sweep's reports: the files `ponder eval search` writes, and reading them back.

Contract: `write_outputs(out, points, results, probe, meta)` writes, next to each other,
- `out` (e.g. `search.json`): the points, one object per `SweepPoint` in its field order;
- `-meta.json`: `meta` (models, tier, problems, temperature, the 1x unit, the raw engine rate, seconds);
- `-problems.jsonl`: one `ProblemResult` a line plus its task's probe value, what auto's table is
  fitted from (`read_problem_results` reads it back, `read_points` the points);
- `.md` (`search_markdown`): a table, one row per point;
- `.png` (`plot_search`): accuracy against mean tokens per question, one line per entry, greedy as a
  horizontal line and majority vote's oracle (any sample correct) for reference.
Nothing here runs an engine.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from evaluation.sweep_records import ProblemResult, SweepPoint


def meta_path(out: Path) -> Path:
    return out.with_name(out.stem + "-meta.json")


def problems_path(out: Path) -> Path:
    return out.with_name(out.stem + "-problems.jsonl")


def write_outputs(
    out: Path,
    points: Sequence[SweepPoint],
    results: Sequence[ProblemResult],
    probe: dict[str, float],
    meta: dict[str, Any],
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([asdict(p) for p in points], indent=2) + "\n")
    meta_path(out).write_text(json.dumps(meta, indent=2) + "\n")
    with problems_path(out).open("w") as handle:
        for r in results:
            handle.write(json.dumps({**asdict(r), "probe_value": round(probe[r.task], 4)}) + "\n")
    out.with_suffix(".md").write_text(search_markdown(points, meta))
    plot_search(points, out.with_suffix(".png"))


def read_points(out: Path) -> list[SweepPoint]:
    return [SweepPoint(**row) for row in json.loads(out.read_text())]


def read_problem_results(path: Path) -> list[tuple[ProblemResult, float]]:
    """Each line's result and its task's probe value."""
    names = {f.name for f in fields(ProblemResult)}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        (ProblemResult(**{k: v for k, v in row.items() if k in names}), float(row["probe_value"]))
        for row in rows
    ]


def search_markdown(points: Sequence[SweepPoint], meta: dict[str, Any]) -> str:
    lines = [
        f"# Compute versus accuracy: tier {meta['tier']}, {meta['n_problems']} problems",
        "",
        f"Budget unit (1x): greedy's mean generated tokens, {meta['greedy_token_cost']}. "
        f"Raw engine throughput in the same run: {meta['engine_generated_tokens_per_s']} generated tokens/s.",
        f"Budget = generated + PRM-scored tokens per question. Sampling temperature {meta['temperature']}. "
        "Written by `ponder eval search`.",
        "",
        "| strategy | budget | accuracy | 95% CI | oracle | generated | prefilled | cached | scored "
        "| tok/s | efficiency | stops |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_markdown_row(p) for p in points]
    return "\n".join(lines) + "\n"


def _markdown_row(p: SweepPoint) -> str:
    stops = ", ".join(f"{k} {v}" for k, v in p.stop_reasons.items())
    return (
        f"| {p.strategy} | {p.budget_multiple:g}x | {p.accuracy:.1%} "
        f"| {p.ci_low:.1%}-{p.ci_high:.1%} | {p.oracle_accuracy:.1%} "
        f"| {p.mean_generated_tokens:.0f} | {p.mean_prefilled_tokens:.0f} "
        f"| {p.mean_cached_tokens:.0f} | {p.mean_scored_tokens:.0f} | {p.tokens_per_s:.0f} "
        f"| {p.engine_efficiency} | {stops} |"
    )


def plot_search(points: Sequence[SweepPoint], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[SweepPoint]] = defaultdict(list)
    for p in points:
        lines[p.strategy].append(p)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for label, series in lines.items():
        if label == "greedy":
            ax.axhline(series[0].accuracy, color="black", linestyle=":", label="greedy")
            continue
        series.sort(key=lambda p: p.mean_total_tokens)
        x = [p.mean_total_tokens for p in series]
        style = "--" if label == "majority_vote" else "-"
        ax.plot(x, [p.accuracy for p in series], style, marker="o", label=label)
        if label == "majority_vote":
            ax.plot(
                x,
                [p.oracle_accuracy for p in series],
                color="grey",
                linestyle="-.",
                label="oracle pass@N (any sample correct)",
            )
    ax.set_xscale("log")
    ax.set_xlabel("mean tokens per question (generated + prefilled + PRM-scored, log)")
    ax.set_ylabel("accuracy")
    ax.set_title("Compute versus accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
