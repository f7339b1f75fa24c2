"""The load test's harness on the fake engines: it counts what the responses report and every failure."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from engines.fake import FakeEngine
from evaluation.load import percentile, run_load
from server.main import ServerConfig, create_app
from verifiers.fake import FakePRM


def transport() -> httpx.ASGITransport:
    app = create_app(ServerConfig(models=Path("/nonexistent")), FakeEngine(), FakePRM())
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
    from ponder.pair import Pair

    pair = Pair(FakeEngine(), FakePRM())  # type: ignore[arg-type]
    report = await prm_throughput(pair, prompts=3, n=4, repeats=2)
    bench = report["prm_benchmark"]
    assert bench["candidates"] == 12 and bench["repeats"] == 2
    assert bench["scored_tokens"][0] == bench["scored_tokens"][1] > 12  # prompt and steps, every time
    assert report["prm_scored_tokens_per_s"] > 0
