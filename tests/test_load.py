"""The load test's harness on the fake engines: it counts what the responses report and every failure."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_engine import FakeEngine
from fake_prm import FakePRM

from evaluation.load import percentile, run_load
from server.main import create_app
from server.settings import ServerSettings


def transport() -> httpx.ASGITransport:
    app = create_app(ServerSettings(models=Path("/nonexistent")), FakeEngine(), FakePRM())
    return httpx.ASGITransport(app=app)


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0], 0.99) == pytest.approx(2.98)
    assert percentile([], 0.5) == 0.0


async def test_a_mixed_load_counts_requests_tokens_and_no_failures() -> None:
    report = await run_load("http://test", ["best_of_n", "greedy"], 12, 4, 600, transport=transport())
    assert report["requests"] == 12 and report["failed"] == 0
    assert report["concurrency"] == 4 and report["budget"] == 600
    assert report["generated_tokens_per_s"] > 0 and report["scored_tokens_per_s"] > 0
    assert 0 < report["p50_s"] <= report["p95_s"] <= report["p99_s"]


async def test_knobs_travel_and_vote_selection_scores_nothing() -> None:
    report = await run_load(
        "http://test", ["best_of_n"], 4, 2, 600, knobs={"select": "vote"}, transport=transport()
    )
    assert report["knobs"] == {"select": "vote"} and report["failed"] == 0
    assert report["scored_tokens_per_s"] == 0


async def test_rejected_requests_count_as_failed() -> None:
    report = await run_load("http://test", ["no_such_strategy"], 3, 2, 600, transport=transport())
    assert report["failed"] == 3 and report["generated_tokens_per_s"] == 0


async def test_the_prm_benchmark_reads_every_sampled_solution() -> None:
    from evaluation.foundation import prm_throughput
    from server.engines import Engines

    engines = Engines(FakeEngine(), FakePRM())
    report = await prm_throughput(engines, prompts=3, n=4, repeats=2)
    bench = report["prm_benchmark"]
    assert bench["candidates"] == 12 and bench["repeats"] == 2
    assert bench["scored_tokens"][0] == bench["scored_tokens"][1] > 12  # prompt and steps, every time
    assert report["prm_scored_tokens_per_s"] > 0


async def test_the_policy_runs_beside_a_prm_kept_busy_until_it_finishes() -> None:
    from evaluation.engine_curve import beside_busy_prm
    from evaluation.foundation import sampled_candidates
    from server.engines import Engines

    engines = Engines(FakeEngine(), FakePRM())
    candidates = await sampled_candidates(engines, prompts=2, n=2)

    async def work() -> float:
        await asyncio.sleep(0.05)
        return 7.0

    running_before = asyncio.all_tasks()
    result, prm_rate = await beside_busy_prm(engines.prm, candidates, work(), "t")
    assert result == 7.0 and prm_rate > 0
    # The PRM's keep-busy task ended with the work (other tests' tasks on the shared loop are not ours).
    assert asyncio.all_tasks() - running_before == set()


async def test_the_width_curve_has_a_point_per_width_and_a_plot(tmp_path: Path) -> None:
    from evaluation.engine_curve import engine_curve, plot_engine_curve
    from server.engines import Engines

    engines = Engines(FakeEngine(), FakePRM())
    curve = await engine_curve(engines, widths=(4, 32), repeats=1)
    assert [p["sequences"] for p in curve] == [4, 32]
    assert all(p["generated_tokens_per_s"] > 0 and p["generated_tokens_per_s_prm_busy"] > 0 for p in curve)
    path = plot_engine_curve(curve, tmp_path / "engine-width.png")
    assert path is not None and path.stat().st_size > 1000


async def test_request_shapes_send_one_step_or_one_solution_per_request() -> None:
    """Step-long requests continue each other until a solution ends: more requests for the same tokens
    than whole-solution requests, every request one sample, and each shape seeded and not."""
    from evaluation.engine_curve import chains_rate, request_shapes
    from server.engines import Engines

    class Counting(FakeEngine):
        def __init__(self) -> None:
            super().__init__(slip=0.0)
            self.seeds: list[int | None] = []

        async def _generate(
            self, prefixes: Any, n: int, sampling: Any, request_id: str, until_step: bool
        ) -> Any:
            assert len(prefixes) == 1 and n == 1
            self.seeds.append(sampling.seed)
            return await super()._generate(prefixes, n, sampling, request_id, until_step)

    engine = Counting()
    prompts = [engine.encode("3 7 9 13 -> 24\n"), engine.encode("2 5 8 -> 11\n")]
    steps = await chains_rate(engine, prompts, 4, 0.1, by_step=True, seeded=True)
    whole = await chains_rate(engine, prompts, 4, 0.1, by_step=False, seeded=False)
    assert steps["generated_tokens_per_s"] > 0 and whole["generated_tokens_per_s"] > 0
    per_request = [r["generated_tokens_per_s"] / r["requests_per_s"] for r in (steps, whole)]
    assert per_request[0] < per_request[1] / 1.5  # a step is a fraction of a 2- or 3-step solution
    assert None in engine.seeds and any(s is not None for s in engine.seeds)
    shapes = await request_shapes(Engines(Counting(), FakePRM()), width=4, seconds=0.05)
    assert [(s["requests"], s["seeded"]) for s in shapes] == [
        ("one solution per request", True),
        ("one solution per request", False),
        ("one step per request", True),
        ("one step per request", False),
    ]
