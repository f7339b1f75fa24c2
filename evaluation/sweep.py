"""The strategies x budgets sweep: compute versus accuracy over a task set, through any `Solver`.

Contract:
- `sweep` first runs greedy on every problem (`greedy_reference`): its mean cost in compute units (its
  prompt prefilled and its solution generated, at the solver's weights: `engines.cost`) is the 1x unit,
  so a point at multiple m gives each request a budget of m x that many units, and the PRM's value of
  each greedy solution is `auto`'s probe. It asks the solver for the policy engine's raw throughput in
  the same run (None where it cannot measure it: then no point has an efficiency), then runs every
  (entry, multiple) point through the solver, many problems concurrently, as a server would
  (`run_point`). Every answer and candidate is graded here (`verifiers.outcome.grade`, by the task's
  kind), whichever solver ran the search.
- `auto` is measured out of sample where the solver lets its table be set. Given a table fitted
  elsewhere (`auto_table`: the dev split's, for a sweep on the eval split), every problem is solved with
  it (`measure_auto_with`). Without one, `measure_auto` cross-fits: a table fitted on half the problems
  is scored on the other half, both ways. Where the solver's table is not ours to set (a running
  server), `auto` is measured as served, on every problem. The table a sweep returns is the given one,
  or the one fitted on all its problems (which ships next to the models when the sweep ran on dev).
- It returns the points (`SweepPoint`s: greedy's, then each entry's by multiple, then auto's), every
  per-problem `ProblemResult` in the same order, the probe values and that table. Greedy's run and each
  entry's point are logged with their results as they complete (`evaluation.sweep_progress`), and a
  resumed sweep takes the points already logged instead of running them again (auto's are always run).
  Writing the reports is `evaluation.report`'s.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evaluation.auto_fit import FitInputs, fit_table
from evaluation.solver import Attempt, Solved, Solver
from evaluation.sweep_progress import GreedyReference, SweepProgress
from evaluation.sweep_records import Labels, ProblemResult, SweepEntry, SweepPoint, budget_units, summarize
from searchers.auto import AutoTable
from tasks.datasets import Task
from verifiers.outcome import grade

AUTO = SweepEntry("auto", "auto", {})
NO_LABELS = Labels()


@dataclass(frozen=True)
class RunSettings:
    """What every point of one sweep shares."""

    unit: float  # greedy's mean cost in compute units: the 1x budget
    concurrency: int  # problems searched at once
    temperature: float  # of every search's sampling
    engine_tps: float | None  # the raw policy engine's generated tokens/s, what efficiency is relative to
    labels: Labels = NO_LABELS  # the problems' tier and split, recorded in every point


@dataclass(frozen=True)
class SweepRun:
    points: list[SweepPoint]
    results: list[ProblemResult]
    probe: dict[str, float]
    table: AutoTable  # fitted on every problem, or the one given (fitted elsewhere)
    unit: float
    engine_tps: float | None  # None: the solver could not measure it (a running server)
    auto_cross_fitted: bool  # False: auto ran with a table fitted elsewhere, or as a server serves it


def graded(task: Task, label: str, multiple: float, solved: Solved) -> ProblemResult:
    return ProblemResult(
        task=task.id,
        label=label,
        multiple=multiple,
        correct=grade(task, solved.text),
        oracle=any(grade(task, text) for text in solved.candidate_texts),
        generated=solved.generated,
        prompt=solved.prompt,
        cached=solved.cached,
        scored=solved.scored,
        stop_reason=solved.stop_reason,
        candidates=len(solved.candidate_texts),
        cached_scored=solved.cached_scored,
        units=solved.units,
    )


async def run_point(
    solver: Solver,
    tasks: Sequence[Task],
    entry: SweepEntry,
    multiple: float,
    settings: RunSettings,
) -> tuple[list[ProblemResult], float]:
    """Every task solved by `entry` at `multiple`, `settings.concurrency` at once; and the wall time.
    Task i samples with seed i, so each point sees the same seeds."""
    budget = budget_units(multiple, settings.unit)
    gate = asyncio.Semaphore(settings.concurrency)

    async def one(index: int, task: Task) -> ProblemResult:
        attempt = Attempt(
            request_id=f"eval-{entry.label}-{multiple}-{task.id}",
            strategy=entry.strategy,
            knobs=entry.knobs,
            budget=budget,
            temperature=settings.temperature,
            seed=index,
        )
        async with gate:
            return graded(task, entry.label, multiple, await solver.solve(task, attempt))

    started = time.perf_counter()
    jobs = [one(i, t) for i, t in enumerate(tasks)]
    progress = tqdm(
        asyncio.as_completed(jobs), total=len(jobs), leave=False, desc=f"{entry.label} {multiple:g}x"
    )
    results = [await job for job in progress]
    return results, time.perf_counter() - started


async def greedy_reference(solver: Solver, tasks: Sequence[Task]) -> GreedyReference:
    """Greedy on every task: the 1x unit (its mean cost), its results, and its PRM value (auto's probe);
    and the raw engine's rate, measured first."""
    engine_tps = await solver.engine_tokens_per_s()
    run = await solver.greedy(tasks)
    results = [_greedy_result(task, solved) for task, solved in zip(tasks, run.solved, strict=True)]
    probe = {task.id: value for task, value in zip(tasks, run.probe, strict=True)}
    unit = statistics.mean(r.units for r in results)
    return GreedyReference(results=results, probe=probe, unit=unit, wall=run.wall, engine_tps=engine_tps)


def _greedy_result(task: Task, solved: Solved) -> ProblemResult:
    correct = grade(task, solved.text)
    return ProblemResult(
        task=task.id,
        label="greedy",
        multiple=1.0,
        correct=correct,
        oracle=correct,  # greedy's one candidate is its answer
        generated=solved.generated,
        prompt=solved.prompt,
        cached=solved.cached,
        scored=0,  # greedy reads no PRM: scoring its answer measures the probe for auto's table
        stop_reason=solved.stop_reason,
        candidates=1,
        units=solved.units,  # the solver's greedy reads no PRM either (the probe is scored apart)
    )


async def measure_auto(
    solver: Solver,
    tasks: Sequence[Task],
    fit: FitInputs,
    multiples: Sequence[float],
    settings: RunSettings,
) -> tuple[list[SweepPoint], list[ProblemResult]]:
    """Cross-fitted: each half of the tasks is solved with the table fitted on the other half. A solver
    whose auto table is not ours to set (a server's) solves every task with auto as served."""
    halves = [tasks[0::2], tasks[1::2]]
    tables = [fit_table(fit.restricted_to({t.id for t in halves[1 - k]}), multiples) for k in range(2)]
    fitted = [solver.with_auto_table(table) for table in tables]
    groups: list[tuple[Sequence[Task], Solver]] = [(tasks, solver)]
    if fitted[0] is not None and fitted[1] is not None:
        groups = [(halves[0], fitted[0]), (halves[1], fitted[1])]
    return await _measure_auto_in(groups, multiples, settings)


async def measure_auto_with(
    solver: Solver, tasks: Sequence[Task], table: AutoTable, multiples: Sequence[float], settings: RunSettings
) -> tuple[list[SweepPoint], list[ProblemResult]]:
    """`auto` on every task with `table`, fitted on other problems (or as served, where the solver's
    table is not ours to set)."""
    fitted = solver.with_auto_table(table)
    return await _measure_auto_in([(tasks, fitted or solver)], multiples, settings)


async def _measure_auto_in(
    groups: Sequence[tuple[Sequence[Task], Solver]], multiples: Sequence[float], settings: RunSettings
) -> tuple[list[SweepPoint], list[ProblemResult]]:
    """One auto point a multiple over every (tasks, solver) group together."""
    points, records = [], []
    for multiple in multiples:
        point_results: list[ProblemResult] = []
        wall = 0.0
        for group_tasks, group_solver in groups:
            found, seconds = await run_point(group_solver, group_tasks, AUTO, multiple, settings)
            point_results += found
            wall += seconds
        points.append(
            summarize(point_results, wall, settings.engine_tps or 0.0, settings.unit, settings.labels)
        )
        records += point_results
    return points, records


async def sweep(
    solver: Solver,
    tasks: Sequence[Task],
    entries: Sequence[SweepEntry],
    multiples: Sequence[float],
    concurrency: int,
    temperature: float,
    log_path: Path | None = None,
    labels: Labels = NO_LABELS,
    auto_table: AutoTable | None = None,
    resume: bool = False,
    where: dict[str, Any] | None = None,
) -> SweepRun:
    """All points; greedy's run and each entry's point are also logged to `log_path` as they complete
    (`evaluation.sweep_progress`), and with `resume` the points an earlier run of the same sweep logged
    there are taken from it instead of being run again. `auto_table`: measure auto with this table,
    fitted on other problems, instead of cross-fitting one here. `where`: the models or server the
    solver runs on, part of what makes two sweeps the same."""
    header = {"tasks": [t.id for t in tasks], "temperature": temperature, "labels": asdict(labels)}
    if where is not None:
        header["where"] = where
    progress = SweepProgress.open(log_path, header, resume)
    greedy = progress.greedy
    if greedy is None:
        greedy = await greedy_reference(solver, tasks)
        progress.record_greedy(greedy)
    engine_tps = greedy.engine_tps
    settings = RunSettings(
        unit=greedy.unit,
        concurrency=concurrency,
        temperature=temperature,
        engine_tps=engine_tps,
        labels=labels,
    )
    points = [summarize(greedy.results, greedy.wall, engine_tps or 0.0, greedy.unit, labels)]
    results = list(greedy.results)
    for entry in tqdm(entries, desc="strategies"):
        for multiple in multiples:
            logged = progress.done.get((entry.label, multiple))
            if logged is None:
                found, wall = await run_point(solver, tasks, entry, multiple, settings)
                logged = (summarize(found, wall, engine_tps or 0.0, settings.unit, labels), found)
                progress.record_point(*logged)
                _show(logged[0])
            point, found = logged
            points.append(point)
            results += found
    if auto_table is None:
        fit = FitInputs.from_results(results, greedy.probe)
        auto_points, auto_results = await measure_auto(solver, tasks, fit, multiples, settings)
        table = fit_table(fit, multiples)
    else:
        auto_points, auto_results = await measure_auto_with(solver, tasks, auto_table, multiples, settings)
        table = auto_table
    return SweepRun(
        points=points + auto_points,
        results=results + auto_results,
        probe=greedy.probe,
        table=table,
        unit=greedy.unit,
        engine_tps=engine_tps,
        auto_cross_fitted=auto_table is None and solver.with_auto_table(table) is not None,
    )


def _show(point: SweepPoint) -> None:
    headline = {
        "strategy": point.strategy,
        "budget_multiple": point.budget_multiple,
        "accuracy": point.accuracy,
    }
    tqdm.write(json.dumps(headline))
