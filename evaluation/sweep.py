"""The strategies x budgets sweep on the engines: compute versus accuracy over a task set.

Contract:
- `sweep` first runs greedy on every problem (`greedy_reference`): its mean generated tokens are the 1x
  unit, so a point at multiple m gives each request a budget of m x that many tokens (generated +
  PRM-scored, see `engines.budget`), and the PRM's value of each greedy solution is `auto`'s probe. It
  measures the policy engine's raw throughput in the same run, then runs every (entry, multiple) point
  through the `Controller`, many problems concurrently, as a server would (`run_point`).
- `auto` is measured out of sample (`measure_auto`): its table is fitted on half the problems and
  scored on the other half, both ways (cross-fitting); the table fitted on all problems is the one that
  ships next to the models.
- It returns the points (`SweepPoint`s: greedy's, then each entry's by multiple, then auto's), every
  per-problem `ProblemResult` in the same order, the probe values and that table; each entry's point
  is also appended to a progress log as it completes. Writing the reports is `evaluation.report`'s.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from engines.base import Sampling
from evaluation.auto_fit import FitInputs, fit_table
from evaluation.foundation import engine_throughput
from evaluation.sweep_records import ProblemResult, SweepEntry, SweepPoint, budget_tokens, summarize
from searchers.auto import AutoTable
from searchers.base import SearchResult
from searchers.controller import Controller, Limits, SearchRequest
from searchers.registry import default_searchers
from server.engines import Engines
from tasks.datasets import Task
from verifiers.outcome import grade
from verifiers.prm import Candidate

AUTO = SweepEntry("auto", "auto", {})


@dataclass(frozen=True)
class RunSettings:
    """What every point of one sweep shares."""

    unit: float  # greedy's mean generated tokens: the 1x budget
    concurrency: int  # problems searched at once
    temperature: float  # of every search's sampling
    engine_tps: float  # the raw policy engine's generated tokens/s, what efficiency is relative to


@dataclass(frozen=True)
class GreedyReference:
    results: list[ProblemResult]
    probe: dict[str, float]  # task -> the PRM's value of its greedy solution
    unit: float  # mean generated tokens
    wall: float


@dataclass(frozen=True)
class SweepRun:
    points: list[SweepPoint]
    results: list[ProblemResult]
    probe: dict[str, float]
    table: AutoTable  # fitted on every problem
    unit: float
    engine_tps: float


def make_controller(engines: Engines, table: AutoTable | None = None) -> Controller:
    searchers = default_searchers(table)
    return Controller(engines.policy, engines.prm, Limits(max_budget=1_000_000), searchers)


async def solve(
    controller: Controller,
    task: Task,
    entry: SweepEntry,
    multiple: float,
    budget: int,
    sampling: Sampling,
) -> ProblemResult:
    request = SearchRequest(
        prompt_ids=tuple(controller.policy.encode(task.prompt)),
        prompt_text=task.prompt,
        request_id=f"eval-{entry.label}-{multiple}-{task.id}",
        strategy=entry.strategy,
        budget=budget,
        knobs=entry.knobs,
        sampling=sampling,
    )
    found = await controller.run(request)
    return ProblemResult(
        task=task.id,
        label=entry.label,
        multiple=multiple,
        correct=grade(task, found.text),
        oracle=any(grade(task, c.text) for c in found.candidates),
        generated=found.usage.generated_tokens,
        prompt=found.usage.prompt_tokens,
        cached=found.usage.cached_prompt_tokens,
        scored=found.usage.scored_tokens,
        stop_reason=found.stop_reason,
        candidates=len(found.candidates),
    )


async def run_point(
    controller: Controller,
    tasks: Sequence[Task],
    entry: SweepEntry,
    multiple: float,
    settings: RunSettings,
) -> tuple[list[ProblemResult], float]:
    """Every task solved by `entry` at `multiple`, `settings.concurrency` at once; and the wall time.
    Task i samples with seed i, so each point sees the same seeds."""
    budget = budget_tokens(multiple, settings.unit)
    gate = asyncio.Semaphore(settings.concurrency)

    async def one(index: int, task: Task) -> ProblemResult:
        async with gate:
            sampling = Sampling(temperature=settings.temperature, seed=index)
            return await solve(controller, task, entry, multiple, budget, sampling)

    started = time.perf_counter()
    jobs = [one(i, t) for i, t in enumerate(tasks)]
    progress = tqdm(
        asyncio.as_completed(jobs), total=len(jobs), leave=False, desc=f"{entry.label} {multiple:g}x"
    )
    results = [await job for job in progress]
    return results, time.perf_counter() - started


async def greedy_reference(controller: Controller, tasks: Sequence[Task]) -> GreedyReference:
    """Greedy on every task: the 1x token unit, its results, and its PRM value (auto's probe)."""
    started = time.perf_counter()
    solved = await asyncio.gather(*(_greedy(controller, task) for task in tasks))
    wall = time.perf_counter() - started
    assert controller.verifier is not None
    candidates = [Candidate(prompt_ids, found.best.steps) for prompt_ids, found in solved]
    scored = await controller.verifier.score([c for c in candidates if c.steps], "eval-greedy-prm")
    values = iter(scored.step_scores)
    probe = {t.id: (next(values)[-1] if c.steps else 0.0) for t, c in zip(tasks, candidates, strict=True)}
    results = [_greedy_result(task, found) for task, (_, found) in zip(tasks, solved, strict=True)]
    unit = statistics.mean(r.generated for r in results)
    return GreedyReference(results=results, probe=probe, unit=unit, wall=wall)


async def _greedy(controller: Controller, task: Task) -> tuple[tuple[int, ...], SearchResult]:
    prompt_ids = tuple(controller.policy.encode(task.prompt))
    request = SearchRequest(prompt_ids, task.prompt, f"eval-greedy-{task.id}", "greedy", budget=10_000)
    return prompt_ids, await controller.run(request)


def _greedy_result(task: Task, found: SearchResult) -> ProblemResult:
    correct = grade(task, found.text)
    return ProblemResult(
        task=task.id,
        label="greedy",
        multiple=1.0,
        correct=correct,
        oracle=correct,  # greedy's one candidate is its answer
        generated=found.usage.generated_tokens,
        prompt=found.usage.prompt_tokens,
        cached=found.usage.cached_prompt_tokens,
        scored=0,  # greedy reads no PRM: scoring its answer measures the probe for auto's table
        stop_reason=found.stop_reason,
        candidates=1,
    )


async def measure_auto(
    engines: Engines,
    tasks: Sequence[Task],
    fit: FitInputs,
    multiples: Sequence[float],
    settings: RunSettings,
) -> tuple[list[SweepPoint], list[ProblemResult]]:
    """Cross-fitted: each half of the tasks is solved with the table fitted on the other half."""
    halves = [tasks[0::2], tasks[1::2]]
    tables = [fit_table(fit.restricted_to({t.id for t in halves[1 - k]}), multiples) for k in range(2)]
    points, records = [], []
    for multiple in multiples:
        point_results: list[ProblemResult] = []
        wall = 0.0
        for half, table in zip(halves, tables, strict=True):
            found, seconds = await run_point(make_controller(engines, table), half, AUTO, multiple, settings)
            point_results += found
            wall += seconds
        points.append(summarize(point_results, wall, settings.engine_tps, settings.unit))
        records += point_results
    return points, records


async def sweep(
    engines: Engines,
    tasks: Sequence[Task],
    entries: Sequence[SweepEntry],
    multiples: Sequence[float],
    concurrency: int,
    temperature: float,
    log_path: Path | None = None,
) -> SweepRun:
    """All points; each entry's is also appended to `log_path` as it completes (a long run keeps its
    progress)."""
    bench = await engine_throughput(engines.policy)
    engine_tps = float(bench["engine_generated_tokens_per_s"])
    controller = make_controller(engines)
    greedy = await greedy_reference(controller, tasks)
    settings = RunSettings(
        unit=greedy.unit, concurrency=concurrency, temperature=temperature, engine_tps=engine_tps
    )
    points = [summarize(greedy.results, greedy.wall, engine_tps, greedy.unit)]
    results = list(greedy.results)
    for entry in tqdm(entries, desc="strategies"):
        for multiple in multiples:
            found, wall = await run_point(controller, tasks, entry, multiple, settings)
            points.append(summarize(found, wall, settings.engine_tps, settings.unit))
            results += found
            _log_point(points[-1], log_path)
    fit = FitInputs.from_results(results, greedy.probe)
    auto_points, auto_results = await measure_auto(engines, tasks, fit, multiples, settings)
    return SweepRun(
        points=points + auto_points,
        results=results + auto_results,
        probe=greedy.probe,
        table=fit_table(fit, multiples),
        unit=greedy.unit,
        engine_tps=engine_tps,
    )


def _log_point(point: SweepPoint, log_path: Path | None) -> None:
    headline = {
        "strategy": point.strategy,
        "budget_multiple": point.budget_multiple,
        "accuracy": point.accuracy,
    }
    tqdm.write(json.dumps(headline))
    if log_path is not None:
        with log_path.open("a") as handle:
            handle.write(json.dumps(asdict(point)) + "\n")
