"""`ponder eval replay`: send a task set through a running server, graded there and here.

Contract: each task goes to `POST /v1/completions` with the strategy, budget and the task's reference
answer in `search`, so the server counts the graded outcome in `ponder_graded_total` (accuracy against
compute in Prometheus). Returns accuracy (by the server's grading), its 95% interval, mean usage and
failures; any non-200 answer is counted as a failure, not an exception.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from typing import Any

import httpx
from tqdm import tqdm

from evaluation.metrics import wilson_interval
from tasks.datasets import Task


async def replay(
    server: str,
    tasks: Sequence[Task],
    strategy: str,
    budget: int,
    concurrency: int = 8,
    api_key: str | None = None,
    model: str = "ponder-default",
) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def one(http: httpx.AsyncClient, index: int, task: Task) -> dict[str, Any] | None:
        body = {
            "model": model,
            "prompt": task.prompt,
            "seed": index,
            "search": {"strategy": strategy, "budget": budget, "reference": task.answer},
        }
        async with gate:
            response = await http.post(f"{server.rstrip('/')}/v1/completions", json=body, headers=headers)
        return response.json() if response.status_code == 200 else None

    async with httpx.AsyncClient(timeout=600) as http:
        jobs = [one(http, i, t) for i, t in enumerate(tasks)]
        answers = [await job for job in tqdm(asyncio.as_completed(jobs), total=len(jobs), desc="replay")]
    done = [a for a in answers if a is not None]
    wins = sum(bool(a["search"]["correct"]) for a in done)
    low, high = wilson_interval(wins, len(done))
    return {
        "strategy": strategy,
        "budget": budget,
        "n_problems": len(tasks),
        "failed": len(tasks) - len(done),
        "accuracy": round(wins / max(len(done), 1), 4),
        "ci_low": round(low, 4),
        "ci_high": round(high, 4),
        "mean_completion_tokens": round(statistics.mean(a["usage"]["completion_tokens"] for a in done), 1)
        if done
        else 0.0,
        "mean_scored_tokens": round(statistics.mean(a["usage"]["scored_tokens"] for a in done), 1)
        if done
        else 0.0,
    }
