"""A bounded load test of the server on loopback: latency percentiles and throughput against the engine.

Contract: `load_results(models, out, ...)` starts the engines, measures the policy engine's raw
throughput (`engine_throughput`), serves the app with uvicorn on a free loopback port in the same
process, and sends `requests` chat requests at `concurrency` at once, cycling through a strategy mix
over held-out tier-4 problems. It then runs the same load with Best-of-N only (the traffic the
throughput target is about). Any non-200 response counts as failed. Writes one JSON with both runs.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from evaluation.foundation import engine_throughput
from ponder.pair import Pair
from tasks.sets import load_eval_set

MIX = ["best_of_n", "beam", "dvts", "mcts", "revision", "auto", "greedy"]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


async def run_load(
    url: str, strategies: Sequence[str], requests: int, concurrency: int, budget: int
) -> dict[str, Any]:
    prompts = [t.prompt.strip() for t in load_eval_set(4)]
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    generated = failed = 0

    async def one(http: httpx.AsyncClient, i: int) -> None:
        nonlocal generated, failed
        body = {
            "model": "ponder-default",
            "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
            "seed": i,
            "search": {"strategy": strategies[i % len(strategies)], "budget": budget},
        }
        async with gate:
            started = time.perf_counter()
            response = await http.post(f"{url}/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            failed += 1
            return
        generated += int(response.json()["usage"]["completion_tokens"])

    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        started = time.perf_counter()
        jobs = [one(http, i) for i in range(requests)]
        for job in tqdm(asyncio.as_completed(jobs), total=requests, desc=f"load {'+'.join(strategies)}"):
            await job
        wall = time.perf_counter() - started
    return {
        "strategies": list(strategies),
        "requests": requests,
        "failed": failed,
        "concurrency": concurrency,
        "budget": budget,
        "p50_s": round(percentile(latencies, 0.5), 3),
        "p95_s": round(percentile(latencies, 0.95), 3),
        "p99_s": round(percentile(latencies, 0.99), 3),
        "mean_s": round(statistics.mean(latencies), 3) if latencies else 0.0,
        "wall_s": round(wall, 1),
        "requests_per_s": round(requests / wall, 2),
        "generated_tokens_per_s": round(generated / wall, 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve_and_load(
    pair: Pair, models: Path, requests: int, concurrency: int, budget: int
) -> dict[str, Any]:
    import uvicorn

    from server.main import ServerConfig, create_app

    raw = float((await engine_throughput(pair.policy))["engine_generated_tokens_per_s"])
    app = create_app(ServerConfig(models=models, max_running=concurrency), pair.policy, pair.prm)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        mixed = await run_load(url, MIX, requests, concurrency, budget)
        best_of_n = await run_load(url, ["best_of_n"], requests, concurrency, budget)
    finally:
        server.should_exit = True
        await serving
    for run in (mixed, best_of_n):
        run["raw_engine_tokens_per_s"] = raw
        run["share_of_raw"] = round(run["generated_tokens_per_s"] / raw, 3)
    return {**mixed, "best_of_n": best_of_n}


def load_results(models: Path, out: Path, requests: int, concurrency: int, budget: int) -> dict[str, Any]:
    pair = Pair.start(models)
    try:
        report = asyncio.run(serve_and_load(pair, models, requests, concurrency, budget))
    finally:
        pair.shutdown()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report
