"""A bounded load test of the server on loopback: latency percentiles and throughput against the engine.

Contract: `load_results(models, out, ...)` starts the engines, measures the policy engine's raw
throughput (`engine_throughput`), serves the app with uvicorn on a free loopback port in the same
process, sends one unmeasured warm-up request per strategy, then `requests` chat requests at
`concurrency` at once, cycling through a strategy mix over held-out tier-4 problems. It then runs the
same load with Best-of-N only (the traffic the throughput target is about). Any non-200 response
counts as failed. Writes one JSON with every run.

`breakdown=True` adds the runs that say where Best-of-N's throughput goes: the same searches through
the `Controller` without HTTP (the server's own cost), Best-of-N by vote (no PRM work sharing the
cores), and Best-of-N at 4x the concurrency (a fuller batch, as in the raw benchmark's 256 sequences).
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from evaluation.foundation import engine_throughput
from server.engines import Engines
from server.settings import EngineSettings
from tasks.sets import load_eval_set

MIX = ["best_of_n", "beam", "dvts", "mcts", "revision", "auto", "greedy"]


@dataclass
class Tally:
    """What one load run observed: per-request latencies and the tokens the responses reported."""

    latencies: list[float] = field(default_factory=list)
    generated: int = 0
    scored: int = 0
    cached_scored: int = 0
    failed: int = 0


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


async def run_load(
    url: str,
    strategies: Sequence[str],
    requests: int,
    concurrency: int,
    budget: int,
    knobs: dict[str, Any] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """`requests` chat requests, `concurrency` at a time, cycling through `strategies`; a non-200 fails."""
    prompts = [t.prompt.strip() for t in load_eval_set(4)]
    gate = asyncio.Semaphore(concurrency)
    tally = Tally()

    async def one(http: httpx.AsyncClient, i: int) -> None:
        body = {
            "model": "ponder-default",
            "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
            "seed": i,
            "search": {"strategy": strategies[i % len(strategies)], "budget": budget, "knobs": knobs or {}},
        }
        async with gate:
            started = time.perf_counter()
            response = await http.post(f"{url}/v1/chat/completions", json=body)
            tally.latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            tally.failed += 1
            return
        usage = response.json()["usage"]
        tally.generated += int(usage["completion_tokens"])
        tally.scored += int(usage.get("scored_tokens", 0))
        tally.cached_scored += int(usage.get("cached_scored_tokens", 0))

    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=600, limits=limits, transport=transport) as http:
        started = time.perf_counter()
        jobs = [one(http, i) for i in range(requests)]
        for job in tqdm(asyncio.as_completed(jobs), total=requests, desc=f"load {'+'.join(strategies)}"):
            await job
        wall = time.perf_counter() - started
    shape = {"strategies": list(strategies), **({"knobs": knobs} if knobs else {})}
    return {**shape, "concurrency": concurrency, "budget": budget, **summary(tally, wall)}


def summary(tally: Tally, wall: float) -> dict[str, Any]:
    requests = len(tally.latencies)
    return {
        "requests": requests,
        "failed": tally.failed,
        "p50_s": round(percentile(tally.latencies, 0.5), 3),
        "p95_s": round(percentile(tally.latencies, 0.95), 3),
        "p99_s": round(percentile(tally.latencies, 0.99), 3),
        "mean_s": round(statistics.mean(tally.latencies), 3) if tally.latencies else 0.0,
        "wall_s": round(wall, 1),
        "requests_per_s": round(requests / wall, 2),
        "generated_tokens_per_s": round(tally.generated / wall, 1),
        # the PRM's work on the same cores, which generated tokens/s leave out
        "scored_tokens_per_s": round(tally.scored / wall, 1),
        # of which the PRM read from its prefix cache (no compute)
        "cached_scored_tokens_per_s": round(tally.cached_scored / wall, 1),
    }


async def run_direct(engines: Engines, requests: int, concurrency: int, budget: int) -> dict[str, Any]:
    """Best-of-N through the `Controller` in this process, no HTTP: what the server's layer costs."""
    from engines.base import Sampling
    from searchers.controller import Controller, SearchRequest

    controller = Controller(engines.policy, engines.prm)
    prompts = [t.prompt.strip() for t in load_eval_set(4)]
    gate = asyncio.Semaphore(concurrency)
    tally = Tally()

    async def one(i: int) -> None:
        prompt = prompts[i % len(prompts)]  # rendered as the server renders a chat request
        request = SearchRequest(
            prompt_ids=tuple(engines.policy.render_chat([{"role": "user", "content": prompt}])),
            prompt_text=prompt,
            request_id=f"load-direct-{i}",
            strategy="best_of_n",
            budget=budget,
            sampling=Sampling(temperature=0.8, seed=i),
        )
        async with gate:
            started = time.perf_counter()
            found = await controller.run(request)
            tally.latencies.append(time.perf_counter() - started)
        tally.generated += found.usage.generated_tokens
        tally.scored += found.usage.scored_tokens
        tally.cached_scored += found.usage.cached_scored_tokens

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    wall = time.perf_counter() - started
    shape = {"strategies": ["best_of_n"], "path": "Controller in-process, no HTTP"}
    return {**shape, "concurrency": concurrency, "budget": budget, **summary(tally, wall)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve_and_load(
    engines: Engines, models: Path, requests: int, concurrency: int, budget: int, breakdown: bool
) -> dict[str, Any]:
    import uvicorn

    from server.main import create_app
    from server.settings import ServerSettings

    raw = float((await engine_throughput(engines.policy))["engine_generated_tokens_per_s"])
    widest = concurrency * 4 if breakdown else concurrency
    app = create_app(ServerSettings(models=models, max_running=widest), engines.policy, engines.prm)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        # Not measured: the PRM's first calls pay one-off kernel setup (about 20 s on CPU), which
        # would otherwise sit in the first 16 requests' latencies.
        warmup = await run_load(url, MIX, len(MIX), len(MIX), budget)
        mixed = await run_load(url, MIX, requests, concurrency, budget)
        best_of_n = await run_load(url, ["best_of_n"], requests, concurrency, budget)
        extra = {}
        if breakdown:
            extra["best_of_n_vote"] = await run_load(
                url, ["best_of_n"], requests, concurrency, budget, {"select": "vote"}
            )
            extra["best_of_n_wide"] = await run_load(url, ["best_of_n"], requests, widest, budget)
    finally:
        server.should_exit = True
        await serving
    if breakdown:
        extra["best_of_n_direct"] = await run_direct(engines, requests, concurrency, budget)
    for run in (mixed, best_of_n, *extra.values()):
        run["raw_engine_tokens_per_s"] = raw
        run["share_of_raw"] = round(run["generated_tokens_per_s"] / raw, 3)
    mixed["warmup_s"] = warmup["wall_s"]
    return {**mixed, "best_of_n": best_of_n, **({"best_of_n_breakdown": extra} if extra else {})}


def load_results(
    models: Path, out: Path, requests: int, concurrency: int, budget: int, breakdown: bool = True
) -> dict[str, Any]:
    engines = Engines.start(EngineSettings(models=models))
    try:
        report = asyncio.run(serve_and_load(engines, models, requests, concurrency, budget, breakdown))
    finally:
        engines.shutdown()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report
