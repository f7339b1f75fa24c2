"""`ponder eval search`: compute versus accuracy on the real engines, its reports and `auto`'s table.

Contract:
- `search_results` starts the engines on the models, sweeps the chosen entries x budget multiples over
  a tier's held-out problems (`evaluation.sweep`; its points are also logged to `-progress.jsonl` while
  it runs), writes the reports (`evaluation.report`: `search.json`, `.md`, `.png`, `-meta.json`,
  `-problems.jsonl`) and, unless `table_out` is None, `auto`'s table fitted on every problem
  (`evaluation.auto_fit`), which ships next to the models.
- `rerun_auto` re-measures only `auto` from a finished sweep's per-problem results (after a change to
  auto), keeping every other point; the budget unit and the raw engine rate are the sweep's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.auto_fit import FitInputs, fit_table
from evaluation.report import meta_path, problems_path, read_points, read_problem_results, write_outputs
from evaluation.solver_local import InProcessSolver
from evaluation.sweep import RunSettings, measure_auto, sweep
from evaluation.sweep_records import SWEEP_ENTRIES
from server.engines import Engines
from server.settings import EngineSettings
from tasks.sets import load_eval_set


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
    entries = [e for e in SWEEP_ENTRIES if labels is None or e.label in labels]
    engines = Engines.start(EngineSettings(models=models))
    started = time.time()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        log_path = out.with_name(out.stem + "-progress.jsonl")
        log_path.unlink(missing_ok=True)
        solver = InProcessSolver(engines)
        run = asyncio.run(sweep(solver, tasks, entries, multiples, concurrency, temperature, log_path))
        log_path.unlink(missing_ok=True)
    finally:
        engines.shutdown()
    meta = {
        "models": str(models),
        "tier": tier,
        "n_problems": len(tasks),
        "temperature": temperature,
        "greedy_token_cost": round(run.unit, 2),
        "engine_generated_tokens_per_s": run.engine_tps,
        "seconds": round(time.time() - started, 1),
    }
    write_outputs(out, run.points, run.results, run.probe, meta)
    if table_out is not None:
        run.table.dump(table_out, fitted_on=f"{len(tasks)} tier-{tier} eval problems", **meta)
    return {"points": run.points, **meta}


def rerun_auto(models: Path, out: Path, concurrency: int, table_out: Path | None) -> dict[str, Any]:
    """Re-measure only `auto` from a finished sweep's per-problem results (after a change to auto),
    keeping every other point; the raw engine rate is the sweep's."""
    meta = json.loads(meta_path(out).read_text())
    records = read_problem_results(problems_path(out))
    probe = {r.task: value for r, value in records}
    kept = [r for r, _ in records if r.label != "auto"]
    fit = FitInputs.from_results(kept, probe)
    multiples = sorted({r.multiple for r in fit.searched})
    tasks = load_eval_set(int(meta["tier"]), limit=int(meta["n_problems"]))
    settings = RunSettings(
        unit=float(meta["greedy_token_cost"]),
        concurrency=concurrency,
        temperature=float(meta["temperature"]),
        engine_tps=float(meta["engine_generated_tokens_per_s"]),
    )
    engines = Engines.start(EngineSettings(models=models))
    try:
        solver = InProcessSolver(engines)
        auto_points, auto_results = asyncio.run(measure_auto(solver, tasks, fit, multiples, settings))
    finally:
        engines.shutdown()
    points = [p for p in read_points(out) if p.strategy != "auto"] + auto_points
    write_outputs(out, points, kept + auto_results, probe, meta)
    if table_out is not None:
        fit_table(fit, multiples).dump(table_out, fitted_on=f"{len(tasks)} eval problems", **meta)
    return {"points": points, **meta}
