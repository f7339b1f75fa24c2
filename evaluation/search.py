"""Compute versus accuracy: every strategy at several budgets over a task set, on the real engines.

Contract:
- `sweep` first runs greedy on every problem: its mean generated tokens are the 1x unit, so a point at
  multiple m gives each request a budget of m x that many tokens (generated + PRM-scored, see
  `engines.budget`). It measures the policy engine's raw throughput in the same run, then runs every
  (strategy, multiple) point through the `Controller`, many problems concurrently, as a server would.
- A point records accuracy with its 95% Wilson interval, mean tokens per question by kind, wall time,
  generated tokens per second through the searcher and that rate over the raw engine rate
  (`engine_efficiency`), plus the oracle (any candidate correct) for reference.
- `auto` is evaluated out of sample: its table is fitted on half the problems and scored on the other
  half, both ways (cross-fitting); the table fitted on all problems is what ships next to the models.
- Writes `search.json` (the points), `search.md` (a table), `search.png` (the plot) and
  `search-problems.jsonl` (per-problem outcomes the table is fitted from).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from engines.base import Sampling
from evaluation.foundation import engine_throughput
from evaluation.metrics import wilson_interval
from searchers.auto import AutoTable
from searchers.controller import Controller, Limits, SearchRequest
from searchers.registry import default_searchers
from server.engines import Engines
from server.settings import EngineSettings
from tasks.datasets import Task
from tasks.sets import load_eval_set
from verifiers.outcome import grade


@dataclass(frozen=True)
class Config:
    label: str  # the line in the plot
    strategy: str
    knobs: dict[str, Any]


STRATEGIES = [
    Config("majority_vote", "best_of_n", {"select": "vote"}),
    Config("adaptive_vote", "best_of_n", {"select": "vote", "adaptive": True}),
    Config("best_of_n_prm", "best_of_n", {"select": "prm"}),
    Config("weighted_vote", "best_of_n", {"select": "weighted_vote"}),
    Config("beam", "beam", {}),
    Config("dvts", "dvts", {}),
    Config("mcts", "mcts", {}),
    Config("revision", "revision", {}),
]
MULTIPLES = [1.0, 2.0, 4.0, 16.0, 64.0]
PROBE_BINS = [0.2, 0.5]  # difficulty bins on the greedy answer's PRM value


@dataclass
class Outcome:
    task: str
    label: str
    multiple: float
    correct: bool
    oracle: bool  # some candidate was correct
    generated: int
    prompt: int
    cached: int
    scored: int
    stop_reason: str
    candidates: int


async def solve(
    controller: Controller,
    task: Task,
    config: Config,
    budget: int,
    multiple: float,
    seed: int,
    temperature: float,
) -> Outcome:
    prompt_ids = tuple(controller.policy.encode(task.prompt))
    request = SearchRequest(
        prompt_ids=prompt_ids,
        prompt_text=task.prompt,
        request_id=f"eval-{config.label}-{multiple}-{task.id}",
        strategy=config.strategy,
        budget=budget,
        knobs=config.knobs,
        sampling=Sampling(temperature=temperature, seed=seed),
    )
    found = await controller.run(request)
    usage = found.usage
    return Outcome(
        task=task.id,
        label=config.label,
        multiple=multiple,
        correct=grade(task, found.text),
        oracle=any(grade(task, c.text) for c in found.candidates),
        generated=usage.generated_tokens,
        prompt=usage.prompt_tokens,
        cached=usage.cached_prompt_tokens,
        scored=usage.scored_tokens,
        stop_reason=found.stop_reason,
        candidates=len(found.candidates),
    )


async def run_point(
    controller: Controller,
    tasks: Sequence[Task],
    config: Config,
    multiple: float,
    unit: float,
    concurrency: int,
    temperature: float,
) -> tuple[list[Outcome], float]:
    budget = max(1, round(multiple * unit))
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, task: Task) -> Outcome:
        async with gate:
            return await solve(controller, task, config, budget, multiple, index, temperature)

    started = time.perf_counter()
    jobs = [one(i, t) for i, t in enumerate(tasks)]
    outcomes = [
        await job
        for job in tqdm(
            asyncio.as_completed(jobs), total=len(jobs), leave=False, desc=f"{config.label} {multiple:g}x"
        )
    ]
    return outcomes, time.perf_counter() - started


def summarize(outcomes: Sequence[Outcome], wall: float, engine_tps: float, unit: float) -> dict[str, Any]:
    n = len(outcomes)
    wins = sum(o.correct for o in outcomes)
    low, high = wilson_interval(wins, n)
    generated = sum(o.generated for o in outcomes)
    prefilled = sum(o.prompt - o.cached for o in outcomes)
    scored = sum(o.scored for o in outcomes)
    tps = generated / wall if wall > 0 else 0.0
    return {
        "strategy": outcomes[0].label,
        "budget_multiple": outcomes[0].multiple,
        "budget_tokens": max(1, round(outcomes[0].multiple * unit)),
        "n_problems": n,
        "accuracy": round(wins / n, 4),
        "ci_low": round(low, 4),
        "ci_high": round(high, 4),
        "oracle_accuracy": round(sum(o.oracle for o in outcomes) / n, 4),
        "mean_generated_tokens": round(generated / n, 1),
        "mean_prefilled_tokens": round(prefilled / n, 1),
        "mean_cached_tokens": round(sum(o.cached for o in outcomes) / n, 1),
        "mean_scored_tokens": round(scored / n, 1),
        "mean_total_tokens": round((generated + prefilled + scored) / n, 1),
        "mean_candidates": round(sum(o.candidates for o in outcomes) / n, 2),
        "stop_reasons": dict(sorted(_count(o.stop_reason for o in outcomes).items())),
        "wall_s": round(wall, 1),
        "tokens_per_s": round(tps, 1),
        "engine_efficiency": round(tps / engine_tps, 3) if engine_tps else None,
    }


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        counts[item] += 1
    return counts


def fit_table(
    probe_values: dict[str, float],
    outcomes: Sequence[Outcome],
    multiples: Sequence[float],
    greedy: dict[str, bool],
) -> AutoTable:
    """Per difficulty bin and budget: the most accurate strategy (fewest tokens on ties), greedy included."""
    by_cell: dict[tuple[int, float, str], list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.task in probe_values:
            by_cell[(_bin(probe_values[o.task]), o.multiple, o.label)].append(o)
    configs = {c.label: c for c in STRATEGIES}
    choices: dict[str, dict[str, dict[str, Any]]] = {}
    for difficulty in range(len(PROBE_BINS) + 1):
        tasks = [t for t, v in probe_values.items() if _bin(v) == difficulty]
        greedy_accuracy = sum(greedy[t] for t in tasks) / max(len(tasks), 1)
        row: dict[str, dict[str, Any]] = {}
        for multiple in multiples:
            best: tuple[float, float, str] = (greedy_accuracy, 0.0, "greedy")
            for label in configs:
                cell = by_cell.get((difficulty, multiple, label), [])
                if cell:
                    accuracy = sum(o.correct for o in cell) / len(cell)
                    cost = -statistics.mean(o.generated + o.scored for o in cell)
                    best = max(best, (accuracy, cost, label))
            label = best[2]
            row[str(multiple)] = (
                {"strategy": "greedy"}
                if label == "greedy"
                else {"strategy": configs[label].strategy, "knobs": configs[label].knobs, "label": label}
            )
        choices[str(difficulty)] = row
    return AutoTable(list(PROBE_BINS), list(multiples), choices)


def _bin(probe_value: float) -> int:
    return sum(probe_value >= b for b in PROBE_BINS)


async def greedy_reference(
    controller: Controller, tasks: Sequence[Task]
) -> tuple[float, dict[str, bool], dict[str, float], list[Outcome], float]:
    """Greedy on every task: the 1x token unit, its correctness, and its PRM value (auto's probe)."""
    from verifiers.prm import Candidate

    config = Config("greedy", "greedy", {})
    started = time.perf_counter()
    results = await asyncio.gather(*(_greedy(controller, task) for task in tasks))
    wall = time.perf_counter() - started
    assert controller.verifier is not None
    candidates = [Candidate(prompt_ids, found.best.steps) for prompt_ids, found in results]
    scored = await controller.verifier.score([c for c in candidates if c.steps], "eval-greedy-prm")
    values = iter(scored.step_scores)
    probe = {t.id: (next(values)[-1] if c.steps else 0.0) for t, c in zip(tasks, candidates, strict=True)}
    outcomes = [
        Outcome(
            t.id,
            config.label,
            1.0,
            grade(t, f.text),
            grade(t, f.text),
            f.usage.generated_tokens,
            f.usage.prompt_tokens,
            f.usage.cached_prompt_tokens,
            0,
            f.stop_reason,
            1,
        )
        for t, (_, f) in zip(tasks, results, strict=True)
    ]
    unit = statistics.mean(o.generated for o in outcomes)
    return unit, {o.task: o.correct for o in outcomes}, probe, outcomes, wall


async def _greedy(controller: Controller, task: Task) -> tuple[tuple[int, ...], Any]:
    prompt_ids = tuple(controller.policy.encode(task.prompt))
    request = SearchRequest(prompt_ids, task.prompt, f"eval-greedy-{task.id}", "greedy", budget=10_000)
    return prompt_ids, await controller.run(request)


async def evaluate_auto(
    pair: Engines,
    tasks: Sequence[Task],
    probe: dict[str, float],
    greedy: dict[str, bool],
    outcomes: Sequence[Outcome],
    multiples: Sequence[float],
    unit: float,
    concurrency: int,
    engine_tps: float,
    temperature: float,
) -> tuple[list[dict[str, Any]], list[Outcome]]:
    """Cross-fitted: each half of the tasks is solved with the table fitted on the other half."""
    halves = [tasks[0::2], tasks[1::2]]
    config = Config("auto", "auto", {})
    points, records = [], []
    for multiple in multiples:
        point_outcomes: list[Outcome] = []
        wall = 0.0
        for k, half in enumerate(halves):
            other = {t.id for t in halves[1 - k]}
            table = fit_table(
                {t: v for t, v in probe.items() if t in other},
                [o for o in outcomes if o.task in other],
                multiples,
                greedy,
            )
            controller = make_controller(pair, table)
            found, seconds = await run_point(
                controller, half, config, multiple, unit, concurrency, temperature
            )
            point_outcomes += found
            wall += seconds
        points.append(summarize(point_outcomes, wall, engine_tps, unit))
        records += point_outcomes
    return points, records


def make_controller(pair: Engines, table: AutoTable | None = None) -> Controller:
    searchers = default_searchers(table)
    return Controller(pair.policy, pair.prm, Limits(max_budget=1_000_000), searchers)


async def sweep(
    pair: Engines,
    tasks: Sequence[Task],
    configs: Sequence[Config],
    multiples: Sequence[float],
    concurrency: int,
    temperature: float,
    log_path: Path | None = None,
) -> dict[str, Any]:
    """All points; each is also appended to `log_path` as it completes (a long run keeps its progress)."""
    bench = await engine_throughput(pair.policy)
    engine_tps = float(bench["engine_generated_tokens_per_s"])
    controller = make_controller(pair)
    unit, greedy, probe, greedy_outcomes, greedy_wall = await greedy_reference(controller, tasks)
    points = [summarize(greedy_outcomes, greedy_wall, engine_tps, unit)]
    outcomes: list[Outcome] = list(greedy_outcomes)
    for config in tqdm(configs, desc="strategies"):
        for multiple in multiples:
            found, wall = await run_point(controller, tasks, config, multiple, unit, concurrency, temperature)
            points.append(summarize(found, wall, engine_tps, unit))
            outcomes += found
            tqdm.write(json.dumps({k: points[-1][k] for k in ("strategy", "budget_multiple", "accuracy")}))
            if log_path is not None:
                with log_path.open("a") as handle:
                    handle.write(json.dumps(points[-1]) + "\n")
    searched = [o for o in outcomes if o.label != "greedy"]
    auto_points, auto_outcomes = await evaluate_auto(
        pair, tasks, probe, greedy, searched, multiples, unit, concurrency, engine_tps, temperature
    )
    table = fit_table(probe, searched, multiples, greedy)
    return {
        "points": points + auto_points,
        "outcomes": outcomes + auto_outcomes,
        "table": table,
        "greedy_token_cost": round(unit, 2),
        "engine_generated_tokens_per_s": engine_tps,
        "probe": probe,
    }


def search_results(
    models: Path,
    out: Path,
    tier: int,
    problems: int,
    labels: Sequence[str] | None,
    multiples: Sequence[float],
    concurrency: int,
    table_out: Path | None,
    temperature: float = 0.8,
) -> dict[str, Any]:
    tasks = load_eval_set(tier, limit=problems)
    configs = [c for c in STRATEGIES if labels is None or c.label in labels]
    pair = Engines.start(EngineSettings(models=models))
    started = time.time()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        log_path = out.with_name(out.stem + "-progress.jsonl")
        log_path.unlink(missing_ok=True)
        report = asyncio.run(sweep(pair, tasks, configs, multiples, concurrency, temperature, log_path))
        log_path.unlink(missing_ok=True)
    finally:
        pair.shutdown()
    meta = {
        "models": str(models),
        "tier": tier,
        "n_problems": len(tasks),
        "temperature": temperature,
        "greedy_token_cost": report["greedy_token_cost"],
        "engine_generated_tokens_per_s": report["engine_generated_tokens_per_s"],
        "seconds": round(time.time() - started, 1),
    }
    write_outputs(out, report, meta)
    if table_out is not None:
        report["table"].dump(table_out, fitted_on=f"{len(tasks)} tier-{tier} eval problems", **meta)
    return {"points": report["points"], **meta}


def write_outputs(out: Path, report: dict[str, Any], meta: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report["points"], indent=2) + "\n")
    out.with_name(out.stem + "-meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    with out.with_name(out.stem + "-problems.jsonl").open("w") as handle:
        for o in report["outcomes"]:
            handle.write(json.dumps({**asdict(o), "probe_value": round(report["probe"][o.task], 4)}) + "\n")
    out.with_suffix(".md").write_text(search_markdown(report["points"], meta))
    plot_search(report["points"], out.with_suffix(".png"))


def search_markdown(points: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
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
    for p in points:
        stops = ", ".join(f"{k} {v}" for k, v in p["stop_reasons"].items())
        lines.append(
            f"| {p['strategy']} | {p['budget_multiple']:g}x | {p['accuracy']:.1%} "
            f"| {p['ci_low']:.1%}-{p['ci_high']:.1%} | {p['oracle_accuracy']:.1%} "
            f"| {p['mean_generated_tokens']:.0f} | {p['mean_prefilled_tokens']:.0f} "
            f"| {p['mean_cached_tokens']:.0f} | {p['mean_scored_tokens']:.0f} | {p['tokens_per_s']:.0f} "
            f"| {p['engine_efficiency']} | {stops} |"
        )
    return "\n".join(lines) + "\n"


def plot_search(points: Sequence[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        lines[p["strategy"]].append(p)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for label, series in lines.items():
        if label == "greedy":
            ax.axhline(series[0]["accuracy"], color="black", linestyle=":", label="greedy")
            continue
        series.sort(key=lambda p: p["mean_total_tokens"])
        x = [p["mean_total_tokens"] for p in series]
        style = "--" if label == "majority_vote" else "-"
        ax.plot(x, [p["accuracy"] for p in series], style, marker="o", label=label)
        if label == "majority_vote":
            ax.plot(
                x,
                [p["oracle_accuracy"] for p in series],
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


def rerun_auto(models: Path, out: Path, concurrency: int, table_out: Path | None) -> dict[str, Any]:
    """Re-measure only `auto` from a finished sweep's per-problem outcomes (after a change to auto),
    keeping every other point; the raw engine rate is the sweep's."""
    meta = json.loads(out.with_name(out.stem + "-meta.json").read_text())
    records = read_outcomes(out.with_name(out.stem + "-problems.jsonl"))
    probe = {o.task: value for o, value in records}
    outcomes = [o for o, _ in records if o.label != "auto"]
    greedy = {o.task: o.correct for o in outcomes if o.label == "greedy"}
    searched = [o for o in outcomes if o.label != "greedy"]
    multiples = sorted({o.multiple for o in searched})
    tasks = load_eval_set(int(meta["tier"]), limit=int(meta["n_problems"]))
    pair = Engines.start(EngineSettings(models=models))
    try:
        auto_points, auto_outcomes = asyncio.run(
            evaluate_auto(
                pair,
                tasks,
                probe,
                greedy,
                searched,
                multiples,
                float(meta["greedy_token_cost"]),
                concurrency,
                float(meta["engine_generated_tokens_per_s"]),
                float(meta["temperature"]),
            )
        )
    finally:
        pair.shutdown()
    points = [p for p in json.loads(out.read_text()) if p["strategy"] != "auto"] + auto_points
    report = {"points": points, "outcomes": outcomes + auto_outcomes, "probe": probe}
    write_outputs(out, report, meta)
    if table_out is not None:
        fit_table(probe, searched, multiples, greedy).dump(
            table_out, fitted_on=f"{len(tasks)} eval problems", **meta
        )
    return {"points": points, **meta}


def read_outcomes(path: Path) -> list[tuple[Outcome, float]]:
    names = set(Outcome.__dataclass_fields__)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        (Outcome(**{k: v for k, v in row.items() if k in names}), float(row["probe_value"])) for row in rows
    ]
