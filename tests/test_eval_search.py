"""`ponder eval search` without the real engines: the committed results are what the summarising, the
reports and auto's fitting (evaluation/sweep_records.py, report.py, auto_fit.py) give from the committed
per-problem file, and the sweep (evaluation/sweep.py) runs end to end on the fake engines."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
from fake_engine import FakeEngine
from fake_prm import FakePRM

from evaluation.auto_fit import FitInputs, fit_table
from evaluation.report import read_points, read_problem_results, search_markdown, write_outputs
from evaluation.search import shown
from evaluation.solver_local import InProcessSolver
from evaluation.sweep import sweep
from evaluation.sweep_progress import OtherSweep
from evaluation.sweep_records import SWEEP_ENTRIES, Labels, ProblemResult, SweepPoint, budget_units, summarize
from ponder.cli import STRATEGY_LABELS
from searchers.auto import AutoTable
from server.engines import Engines
from tasks.sets import load_eval_set

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
SHIPPED_TABLE = ROOT / "ponder" / "models" / "default" / "auto_table.json"


def committed(name: str = "search") -> tuple[list[ProblemResult], dict[str, float], dict[str, Any]]:
    records = read_problem_results(RESULTS / f"{name}-problems.jsonl")
    meta = json.loads((RESULTS / f"{name}-meta.json").read_text())
    return [r for r, _ in records], {r.task: value for r, value in records}, meta


def result(task: str, label: str, correct: bool, generated: int = 10) -> ProblemResult:
    return ProblemResult(
        task=task,
        label=label,
        multiple=1.0,
        correct=correct,
        oracle=correct,
        generated=generated,
        prompt=14,
        cached=0,
        scored=0,
        stop_reason="done",
        candidates=1,
    )


def test_the_cli_lists_the_swept_labels() -> None:
    assert tuple(e.label for e in SWEEP_ENTRIES) == STRATEGY_LABELS


def test_refitting_the_committed_dev_sweep_gives_the_shipped_table() -> None:
    results, probe, meta = committed("search-dev")
    assert meta["split"] == "dev"  # auto's table is chosen on dev, never on the eval split it reports on
    fit = FitInputs.from_results(results, probe)
    table = fit_table(fit, sorted({r.multiple for r in fit.searched}))
    shipped = json.loads(SHIPPED_TABLE.read_text())
    assert asdict(table) == {k: shipped[k] for k in ("bins", "budgets", "choices")}
    assert shipped["split"] == "dev"


def test_the_committed_eval_sweep_measures_auto_with_the_dev_table() -> None:
    _, _, meta = committed("search")
    assert meta["split"] == "eval" and meta["auto_table"]["split"] == "dev"


@pytest.mark.parametrize(
    ("multiple", "unit", "expected"), [(1.0, 42.06, 43), (1.0, 42.0, 42), (16.0, 42.06, 673)]
)
def test_a_budget_multiple_pays_for_that_many_greedy_solutions(
    multiple: float, unit: float, expected: int
) -> None:
    assert budget_units(multiple, unit) == expected >= multiple * unit


def test_reports_name_paths_inside_the_checkout_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models" / "default").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert shown(tmp_path / "models" / "default") == "models/default"
    assert shown(Path("models/default/auto_table.json")) == "models/default/auto_table.json"
    assert shown(tmp_path.parent) == str(tmp_path.parent.resolve())  # outside it: absolute


def test_each_committed_point_summarises_its_problems() -> None:
    results, _, meta = committed()
    by_point: dict[tuple[str, float], list[ProblemResult]] = defaultdict(list)
    for r in results:
        by_point[(r.label, r.multiple)].append(r)
    points = read_points(RESULTS / "search.json")
    assert [(p.strategy, p.budget_multiple) for p in points] == list(by_point)

    def untimed(p: SweepPoint) -> SweepPoint:  # the wall time is not in the per-problem file
        return replace(p, budget=0, wall_s=0.0, tokens_per_s=0.0, engine_efficiency=None)

    for point in points:
        summary = summarize(by_point[(point.strategy, point.budget_multiple)], 1.0, 1.0, 1.0, Labels.of(meta))
        assert untimed(summary) == untimed(point)
    assert meta["n_problems"] == points[0].n_problems


def test_the_reports_rewrite_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    results, probe, meta = committed()
    points = read_points(RESULTS / "search.json")
    out = tmp_path / "search.json"
    write_outputs(out, points, results, probe, meta)
    for name in ("search.json", "search-meta.json", "search-problems.jsonl", "search.md"):
        assert (tmp_path / name).read_text() == (RESULTS / name).read_text(), name
    assert search_markdown(points, meta) == (RESULTS / "search.md").read_text()
    assert (tmp_path / "search.png").stat().st_size > 0


def test_the_table_picks_the_most_accurate_then_the_cheapest_and_greedy_on_ties() -> None:
    probe = {"a": 0.1, "b": 0.1, "c": 0.9}  # bins 0, 0 and 2; bin 1 has no problems
    greedy = {"a": False, "b": False, "c": True}
    searched = [
        result("a", "beam", True, generated=50),
        result("b", "beam", False, generated=50),
        result("a", "majority_vote", True),
        result("b", "majority_vote", False),
        result("c", "majority_vote", True),
    ]
    table = fit_table(FitInputs(probe, greedy, searched), [1.0])
    assert table.choices == {
        "0": {"1.0": {"strategy": "best_of_n", "knobs": {"select": "vote"}, "label": "majority_vote"}},
        "1": {"1.0": {"strategy": "greedy"}},
        "2": {"1.0": {"strategy": "greedy"}},  # as accurate as greedy, and greedy costs nothing more
    }
    assert fit_table(FitInputs(probe, greedy, searched).restricted_to({"c"}), [1.0]).choices["0"] == {
        "1.0": {"strategy": "greedy"}
    }


async def test_the_sweep_runs_on_fake_engines_and_its_reports_read_back(tmp_path: Path) -> None:
    tasks = load_eval_set(4, limit=6)
    entries = [e for e in SWEEP_ENTRIES if e.label in ("majority_vote", "beam")]
    log_path = tmp_path / "progress.jsonl"
    engines = Engines(FakeEngine(), FakePRM())
    solver = InProcessSolver(engines)
    run = await sweep(solver, tasks, entries, [1.0, 4.0], concurrency=3, temperature=0.8, log_path=log_path)
    lines = ["greedy", "majority_vote", "majority_vote", "beam", "beam", "auto", "auto"]
    assert [p.strategy for p in run.points] == lines
    assert [p.budget_multiple for p in run.points] == [1.0, 1.0, 4.0, 1.0, 4.0, 1.0, 4.0]
    assert all(p.n_problems == len(tasks) for p in run.points)
    assert len(run.results) == len(lines) * len(tasks)
    assert len(log_path.read_text().splitlines()) == 6  # the header, greedy, then each point as it completes
    assert set(run.probe) == {t.id for t in tasks} and run.table.budgets == [1.0, 4.0]
    meta = {"tier": 4, "n_problems": 6, "greedy_cost_units": 1, "engine_generated_tokens_per_s": 1}
    write_outputs(tmp_path / "search.json", run.points, run.results, run.probe, {**meta, "temperature": 0.8})
    assert read_points(tmp_path / "search.json") == run.points
    read = read_problem_results(tmp_path / "search-problems.jsonl")
    assert [r for r, _ in read] == run.results
    assert all(value == round(run.probe[r.task], 4) for r, value in read)


async def test_a_resumed_sweep_runs_only_the_points_it_had_not_logged(tmp_path: Path) -> None:
    tasks = load_eval_set(4, limit=5)
    entries = [e for e in SWEEP_ENTRIES if e.label in ("majority_vote", "beam")]
    log_path = tmp_path / "progress.jsonl"
    engine = FakeEngine()
    solver = InProcessSolver(Engines(engine, FakePRM()))
    first = await sweep(solver, tasks, entries[:1], [1.0, 4.0], 3, 0.8, log_path=log_path)
    again = await sweep(solver, tasks, entries, [1.0, 4.0], 3, 0.8, log_path=log_path, resume=True)
    assert again.points[:3] == first.points[:3] and again.results[:15] == first.results[:15]  # from the log
    assert [p.strategy for p in again.points[3:5]] == ["beam", "beam"]  # run now, and logged
    assert len(log_path.read_text().splitlines()) == 6
    before = engine.calls
    resumed = await sweep(solver, tasks, entries, [1.0, 4.0], 3, 0.8, log_path=log_path, resume=True)
    auto_alone = engine.calls - before
    before = engine.calls
    await sweep(solver, tasks, entries, [1.0, 4.0], 3, 0.8)
    assert resumed.points[:5] == again.points[:5] and auto_alone < engine.calls - before  # nothing rerun
    with pytest.raises(OtherSweep, match="another sweep"):
        await sweep(solver, tasks[:4], entries, [1.0], 3, 0.8, log_path=log_path, resume=True)
    with pytest.raises(OtherSweep, match="another sweep"):  # the same problems on other models
        other = {"models": "other/models"}
        await sweep(solver, tasks, entries, [1.0, 4.0], 3, 0.8, log_path=log_path, resume=True, where=other)
    fresh = await sweep(solver, tasks[:4], entries[:1], [1.0], 3, 0.8, log_path=log_path)  # not resumed
    assert fresh.points[0].n_problems == 4 and len(log_path.read_text().splitlines()) == 3


async def test_a_table_fitted_elsewhere_is_what_auto_runs_with(tmp_path: Path) -> None:
    tasks = load_eval_set(4, limit=6)
    entries = [e for e in SWEEP_ENTRIES if e.label == "majority_vote"]
    solver = InProcessSolver(Engines(FakeEngine(), FakePRM()))
    always = {"strategy": "best_of_n", "knobs": {"select": "vote"}, "label": "majority_vote"}
    given = AutoTable([0.2, 0.5], [1.0, 4.0], {str(b): {"1.0": always, "4.0": always} for b in range(3)})
    run = await sweep(solver, tasks, entries, [1.0, 4.0], concurrency=3, temperature=0.8, auto_table=given)
    assert run.table is given and not run.auto_cross_fitted
    auto = [r for r in run.results if r.label == "auto" and r.multiple == 4.0]
    assert len(auto) == len(tasks) and all(r.candidates > 1 for r in auto)  # voted, as the table says
    greedy = {"strategy": "greedy"}
    never = AutoTable([0.2, 0.5], [1.0, 4.0], {str(b): {"1.0": greedy, "4.0": greedy} for b in range(3)})
    run = await sweep(solver, tasks, entries, [4.0], concurrency=3, temperature=0.8, auto_table=never)
    assert all(r.candidates == 1 for r in run.results if r.label == "auto")  # the probe alone


def test_a_point_from_before_the_compute_unit_reads_with_its_token_budget() -> None:
    from evaluation.sweep_records import point_of_row

    new = asdict(read_points(RESULTS / "search.json")[1])
    old = {
        k: v for k, v in new.items() if k not in ("tier", "split", "mean_units", "mean_cached_scored_tokens")
    }
    old["budget_tokens"] = old.pop("budget")
    point = point_of_row(old, Labels(tier=4, split="eval"))
    assert point.budget == new["budget"] and point.mean_units == 0.0
    assert (point.tier, point.split) == (4, "eval")
