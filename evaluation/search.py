"""`ponder eval search`: compute versus accuracy on the real engines or a running server, its reports and
`auto`'s table.

Contract:
- A backend says where the searches run: `InProcess(models)` starts the engines on the models for the
  run (`server.engines`) and searches through a `Controller` (`evaluation.solver_local`);
  `ServerAddress(url, model, api_key)` sends every search to a running Ponder server
  (`evaluation.solver_http`). `with_solver` runs an async job with the backend's `Solver` and stops what
  it started.
- `search_results(backend, source, out, ...)` sweeps the chosen entries x budget multiples over the
  source's problems (a Countdown tier or a user's task file, `evaluation.task_source`) and calls
  `evaluate`, the async core that tests also call on engines they started: it runs the sweep
  (`evaluation.sweep`; its points are also logged to `-progress.jsonl` while it runs, which `resume`
  picks up after an interrupted run, and which is removed once the reports are written), writes the reports
  (`evaluation.report`: `search.json`, `.md`, `.png`, `-meta.json`, `-problems.jsonl`) and, unless
  `table_out` is None, `auto`'s table fitted on every problem (`evaluation.auto_fit`), which `ponder
  serve` reads from `MODELS/auto_table.json`. Given `auto_from` (a table file fitted on another split:
  the dev sweep's, for the eval split's report), auto is measured with that table instead of being
  cross-fitted here, and the meta names the table and what it was fitted on.
- `rerun_auto` re-measures only `auto` from a finished sweep's per-problem results (after a change to
  auto), keeping every other point; the problems, the budget unit, the raw engine rate and the table
  (refitted, or the one fitted elsewhere that the sweep used) are the sweep's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from evaluation.auto_fit import FitInputs, fit_table
from evaluation.report import meta_path, problems_path, read_points, read_problem_results, write_outputs
from evaluation.solver import PROMPT_STYLES, PromptStyle, Solver, prompt_style
from evaluation.solver_http import HttpSolver, ServerAddress
from evaluation.solver_local import InProcessSolver
from evaluation.sweep import RunSettings, measure_auto, measure_auto_with, sweep
from evaluation.sweep_records import SWEEP_ENTRIES, Labels, ProblemResult, SweepPoint
from evaluation.task_source import TaskSource, source_of
from searchers.auto import AutoTable
from server.engines import Engines
from server.settings import EngineSettings

T = TypeVar("T")


@dataclass(frozen=True)
class InProcess:
    models: Path  # the policy in policy/, the PRM in prm/


Backend = InProcess | ServerAddress


def backend_meta(backend: Backend) -> dict[str, Any]:
    """Where the searches ran, as the reports' meta says it."""
    if isinstance(backend, ServerAddress):
        return {"server": backend.url, "model": backend.model}
    return {"models": shown(backend.models)}


def shown(path: Path) -> str:
    """A path as the reports record it: relative to the working directory (the checkout, for the
    committed results) where it lies inside it, so a report does not name one machine's folders."""
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    return str(resolved.relative_to(cwd)) if resolved.is_relative_to(cwd) else str(resolved)


def with_solver(
    backend: Backend,
    concurrency: int,
    style: PromptStyle | None,
    job: Callable[[Solver], Coroutine[Any, Any, T]],
) -> T:
    """`job(solver)` on the backend's solver, in a fresh event loop; stops the engines it started."""
    if isinstance(backend, ServerAddress):
        address = backend

        async def remote() -> T:
            async with HttpSolver.connect(address, concurrency, style) as solver:
                return await job(solver)

        return asyncio.run(remote())
    engines = Engines.start(EngineSettings(models=backend.models))
    try:
        return asyncio.run(job(InProcessSolver(engines, style)))
    finally:
        engines.shutdown()


async def evaluate(
    solver: Solver,
    where: dict[str, Any],
    source: TaskSource,
    out: Path,
    labels: Sequence[str] | None,
    multiples: Sequence[float],
    concurrency: int,
    table_out: Path | None,
    temperature: float = 0.8,
    style: PromptStyle | None = None,
    auto_from: Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """The sweep on `solver`, its reports at `out` and, unless `table_out` is None, auto's table there.
    `where` is `backend_meta`'s description of the solver."""
    entries = [e for e in SWEEP_ENTRIES if labels is None or e.label in labels]
    fitted_elsewhere = None if auto_from is None else json.loads(auto_from.read_text())
    started = time.time()
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.with_name(out.stem + "-progress.jsonl")  # kept until the reports are written
    run = await sweep(
        solver,
        source.tasks,
        entries,
        multiples,
        concurrency,
        temperature,
        log_path,
        Labels.of(source.meta),
        None if fitted_elsewhere is None else AutoTable.of(fitted_elsewhere),
        resume,
        where,
    )
    log_path.unlink(missing_ok=True)
    meta = {
        **where,
        **source.meta,
        **_styles(source, style),
        "n_problems": len(source.tasks),
        "temperature": temperature,
        "greedy_cost_units": round(run.unit, 2),
        "engine_generated_tokens_per_s": run.engine_tps,
        "seconds": round(time.time() - started, 1),
        **_auto_source(auto_from, fitted_elsewhere),
    }
    write_outputs(out, run.points, run.results, run.probe, meta)
    if table_out is not None:
        table_out.parent.mkdir(parents=True, exist_ok=True)
        run.table.dump(table_out, fitted_on=source.described, **meta)
    return {"points": run.points, **meta, **({"table": shown(table_out)} if table_out else {})}


def _auto_source(auto_from: Path | None, fitted: dict[str, Any] | None) -> dict[str, Any]:
    """The meta's account of a table fitted elsewhere: its file and what it was fitted on."""
    if auto_from is None or fitted is None:
        return {}
    return {
        "auto_table": {
            "path": shown(auto_from),
            "fitted_on": fitted.get("fitted_on"),
            "split": fitted.get("split"),
            "tier": fitted.get("tier"),
        }
    }


def _styles(source: TaskSource, style: PromptStyle | None) -> dict[str, Any]:
    """A task file's prompt style(s) for the meta (the Countdown tiers' meta stays as it always was)."""
    if "task_file" not in source.meta:
        return {}
    return {"prompt_style": ",".join(sorted({prompt_style(t, style) for t in source.tasks}))}


def search_results(
    backend: Backend,
    source: TaskSource,
    out: Path,
    labels: Sequence[str] | None,
    multiples: Sequence[float],
    concurrency: int,
    table_out: Path | None,
    temperature: float = 0.8,
    style: PromptStyle | None = None,
    auto_from: Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    where = backend_meta(backend)

    def job(solver: Solver) -> Coroutine[Any, Any, dict[str, Any]]:
        return evaluate(
            solver,
            where,
            source,
            out,
            labels,
            multiples,
            concurrency,
            table_out,
            temperature,
            style,
            auto_from,
            resume,
        )

    return with_solver(backend, concurrency, style, job)


def rerun_auto(
    backend: Backend,
    out: Path,
    concurrency: int,
    table_out: Path | None,
    style: PromptStyle | None = None,
) -> dict[str, Any]:
    """Re-measure only `auto` from a finished sweep's per-problem results (after a change to auto),
    keeping every other point; the raw engine rate is the sweep's."""
    meta = json.loads(meta_path(out).read_text())
    records = read_problem_results(problems_path(out))
    probe = {r.task: value for r, value in records}
    kept = [r for r, _ in records if r.label != "auto"]
    fit = FitInputs.from_results(kept, probe)
    multiples = sorted({r.multiple for r in fit.searched})
    source = source_of(meta, int(meta["n_problems"]))
    recorded = meta.get("prompt_style")
    style = style or (recorded if recorded in PROMPT_STYLES else None)  # as the sweep sent its prompts
    rate = meta["engine_generated_tokens_per_s"]
    settings = RunSettings(
        unit=greedy_cost(meta),
        concurrency=concurrency,
        temperature=float(meta["temperature"]),
        engine_tps=None if rate is None else float(rate),
        labels=Labels.of(meta),
    )

    given = meta.get("auto_table")  # the sweep measured auto with a table fitted elsewhere: so again

    def job(solver: Solver) -> Coroutine[Any, Any, tuple[list[SweepPoint], list[ProblemResult]]]:
        if given is not None:
            table = AutoTable.load(Path(given["path"]))
            return measure_auto_with(solver, source.tasks, table, multiples, settings)
        return measure_auto(solver, source.tasks, fit, multiples, settings)

    auto_points, auto_results = with_solver(backend, concurrency, style, job)
    points = [p for p in read_points(out) if p.strategy != "auto"] + auto_points
    write_outputs(out, points, kept + auto_results, probe, meta)
    if table_out is not None and given is None:
        table_out.parent.mkdir(parents=True, exist_ok=True)
        fit_table(fit, multiples).dump(table_out, fitted_on=source.described, **meta)
    return {"points": points, **meta}


def greedy_cost(meta: dict[str, Any]) -> float:
    """The 1x unit of a finished sweep (a sweep before the compute unit recorded greedy's tokens)."""
    return float(meta.get("greedy_cost_units", meta.get("greedy_token_cost", 0.0)))
