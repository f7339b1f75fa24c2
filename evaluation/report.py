"""The search sweep's reports: the files `ponder eval search` writes, and reading them back.

Contract: `write_outputs(out, points, results, probe, meta)` writes, next to each other,
- `out` (e.g. `search.json`): the points, one object per `SweepPoint` in its field order;
- `-meta.json`: `meta` (where the searches ran: `models`, or `server` and `model`; the problems: a
  Countdown `tier`, or the `task_file` with its format, SHA-256 and `split`; their count, temperature,
  the 1x unit, the raw engine rate (null when searched on a server), seconds);
- `-problems.jsonl`: one `ProblemResult` a line plus its task's probe value, what auto's table is
  fitted from (`read_problem_results` reads it back, `read_points` the points, those of a sweep from
  before the compute unit included);
- `.md` (`search_markdown`): a header naming the problems (the tier, or the task file's name, short
  hash and split) and where they were searched, then a table, one row per point;
- `.png` (`plot_search`): accuracy against mean compute units per question (mean tokens for a sweep
  from before the compute unit), one line per entry, greedy as a horizontal line and majority vote's
  oracle (any sample correct) for reference.
Nothing here runs an engine.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from evaluation.sweep_records import Labels, ProblemResult, SweepPoint, point_of_row
from evaluation.task_source import SHORT_HASH


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
    plot_search(points, out.with_suffix(".png"), f"Compute versus accuracy: {problems_title(meta)}")


def read_points(out: Path) -> list[SweepPoint]:
    meta = json.loads(meta_path(out).read_text()) if meta_path(out).exists() else {}
    return [point_of_row(row, Labels.of(meta)) for row in json.loads(out.read_text())]


def read_problem_results(path: Path) -> list[tuple[ProblemResult, float]]:
    """Each line's result and its task's probe value."""
    names = {f.name for f in fields(ProblemResult)}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        (ProblemResult(**{k: v for k, v in row.items() if k in names}), float(row["probe_value"]))
        for row in rows
    ]


def problems_title(meta: dict[str, Any]) -> str:
    """What the sweep ran on: "tier 4", or "gsm8k-dev.jsonl (sha256 0123456789ab, split dev)"."""
    if "task_file" not in meta:
        return f"tier {meta['tier']}"
    split = f", split {meta['split']}" if meta.get("split") else ""
    return f"{Path(meta['task_file']).name} (sha256 {meta['task_sha256'][:SHORT_HASH]}{split})"


def unit_line(meta: dict[str, Any]) -> str:
    if "greedy_cost_units" in meta:
        return (
            f"Budget unit (1x): greedy's mean cost, {meta['greedy_cost_units']} compute units "
            "(generated-token equivalents: each kind of token at its weight, `engines.cost`)."
        )
    return (  # a sweep from before the compute unit
        f"Budget unit (1x): greedy's mean generated tokens, {meta['greedy_token_cost']}; a budget counted "
        "generated + PRM-scored tokens."
    )


def split_line(meta: dict[str, Any]) -> str:
    split = meta.get("split")
    return f"Split: **{split}**." if split else "Split: not recorded (a sweep from before the partition)."


def search_markdown(points: Sequence[SweepPoint], meta: dict[str, Any]) -> str:
    rate = meta["engine_generated_tokens_per_s"]
    engine = (
        f"Raw engine throughput in the same run: {rate} generated tokens/s."
        if rate is not None
        else "Raw engine throughput: not measured (the searches ran on a server), so no efficiency."
    )
    lines = [
        f"# Compute versus accuracy: {problems_title(meta)}, {meta['n_problems']} problems",
        "",
        f"{split_line(meta)} {unit_line(meta)} {engine}",
        f"Sampling temperature {meta['temperature']}. Written by `ponder eval search`.",
    ]
    if "server" in meta:
        lines.append(
            f"Searched on the server {meta['server']}, model `{meta['model']}`; `auto` as served there "
            "(the server's own table, not cross-fitted)."
        )
    elif "auto_table" in meta:
        given = meta["auto_table"]
        lines.append(
            f"`auto` chose by the table `{given['path']}`, fitted on {given['fitted_on']} "
            "(not on these problems)."
        )
    lines += [
        "",
        "| strategy | budget | accuracy | 95% CI | oracle | units | generated | prefilled | cached | scored "
        "| scored cached | tok/s | efficiency | stops |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_markdown_row(p) for p in points]
    return "\n".join(lines) + "\n"


def _markdown_row(p: SweepPoint) -> str:
    stops = ", ".join(f"{k} {v}" for k, v in p.stop_reasons.items())
    units = f"{p.mean_units:.0f}" if p.mean_units > 0 else ""  # none before the compute unit
    return (
        f"| {p.strategy} | {p.budget_multiple:g}x | {p.accuracy:.1%} "
        f"| {p.ci_low:.1%}-{p.ci_high:.1%} | {p.oracle_accuracy:.1%} | {units} "
        f"| {p.mean_generated_tokens:.0f} | {p.mean_prefilled_tokens:.0f} "
        f"| {p.mean_cached_tokens:.0f} | {p.mean_scored_tokens:.0f} | {p.mean_cached_scored_tokens:.0f} "
        f"| {p.tokens_per_s:.0f} | {'' if p.engine_efficiency is None else p.engine_efficiency} | {stops} |"
    )


def plot_search(points: Sequence[SweepPoint], path: Path, title: str = "Compute versus accuracy") -> Path:
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
        series.sort(key=compute_of)
        x = [compute_of(p) for p in series]
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
    in_units = all(p.mean_units > 0 for p in points)
    ax.set_xlabel(
        "mean compute units per question (generated-token equivalents, log)"
        if in_units
        else "mean tokens per question (generated + prefilled + PRM-scored, log)"
    )
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def compute_of(point: SweepPoint) -> float:
    """What a point spent per question: its units, or its tokens for a sweep from before the unit."""
    return point.mean_units if point.mean_units > 0 else point.mean_total_tokens
