"""The cost of running the engines remotely: the same load in-process and through vLLM servers.

Contract: `remote_overhead(models, out, ...)` runs the same work twice, first on the in-process engines,
then (after stopping them, so the two never share the cores) on one policy and one PRM `vllm serve`
replica on loopback started by `engines.vllm_serve` with the same engine settings, through
`RemotePolicyEngine` / `RemotePRM`: (1) the raw policy benchmark (`engine_throughput`: 16 prompts x n=16
rollouts), (2) a batch of seeded searches (Best-of-N and beam, alternating) at a fixed concurrency
through the `Controller`; the remote side runs twice, with n samples per HTTP request (the default) and
with one request per sample; (3) every strategy on the same seeded tier-4 problems, graded, for accuracy
per strategy. It writes wall times, tokens per second, search latencies, the ratio remote/in-process,
per-strategy accuracy on both sides, and the share of searches whose answer is identical in both, to
`out` (JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from engines.base import PolicyEngine, Sampling
from evaluation.foundation import engine_throughput
from searchers.controller import Controller, SearchRequest
from searchers.registry import default_searchers
from tasks.sets import load_eval_set
from verifiers.outcome import grade
from verifiers.prm import StepVerifier

log = logging.getLogger("ponder.eval")
STRATEGIES = ("best_of_n", "beam")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def search_load(
    policy: PolicyEngine, prm: StepVerifier, searches: int, concurrency: int, budget: int
) -> dict[str, Any]:
    tasks = load_eval_set(4, limit=searches)
    controller = Controller(policy, prm)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int) -> tuple[str, int]:
        async with gate:
            started = time.perf_counter()
            found = await controller.run(
                SearchRequest(
                    prompt_ids=tuple(policy.encode(tasks[i].prompt)),
                    prompt_text=tasks[i].prompt,
                    request_id=f"bench-remote-{i}",
                    strategy=STRATEGIES[i % len(STRATEGIES)],
                    budget=budget,
                    sampling=Sampling(seed=i),
                )
            )
            latencies.append(time.perf_counter() - started)
            return found.text, found.usage.generated_tokens + found.usage.scored_tokens

    await one(0)  # warm-up (not counted): first-request costs on either side
    latencies.clear()
    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(searches)))
    wall = time.perf_counter() - started
    tokens = sum(t for _, t in results)
    ordered = sorted(latencies)
    return {
        "wall_s": round(wall, 2),
        "searches_per_s": round(searches / wall, 3),
        "spent_tokens_per_s": round(tokens / wall, 1),
        "latency_p50_s": round(statistics.median(ordered), 3),
        "latency_p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
        "answers": [text for text, _ in results],
    }


async def strategy_accuracy(
    policy: PolicyEngine, prm: StepVerifier, problems: int, concurrency: int, budget: int
) -> dict[str, Any]:
    """Every strategy on the same seeded problems: the answers and how many the checker accepts."""
    tasks = load_eval_set(4, limit=problems)
    controller = Controller(policy, prm)
    gate = asyncio.Semaphore(concurrency)

    async def one(strategy: str, i: int) -> str:
        async with gate:
            request = SearchRequest(
                prompt_ids=tuple(policy.encode(tasks[i].prompt)),
                prompt_text=tasks[i].prompt,
                request_id=f"bench-accuracy-{strategy}-{i}",
                strategy=strategy,
                budget=budget,
                sampling=Sampling(seed=1000 + i),
            )
            return (await controller.run(request)).text

    report: dict[str, Any] = {}
    for strategy in default_searchers():
        answers = await asyncio.gather(*(one(strategy, i) for i in range(problems)))
        correct = sum(grade(task, answer) for task, answer in zip(tasks, answers, strict=True))
        report[strategy] = {"correct": correct, "of": problems, "answers": answers}
    return report


async def measure(
    policy: PolicyEngine,
    prm: StepVerifier,
    searches: int,
    concurrency: int,
    budget: int,
    accuracy_problems: int = 0,
) -> Any:
    raw = await engine_throughput(policy)
    load = await search_load(policy, prm, searches, concurrency, budget)
    report = {"engine_generated_tokens_per_s": raw["engine_generated_tokens_per_s"], "search": load}
    if accuracy_problems:
        report["accuracy"] = await strategy_accuracy(policy, prm, accuracy_problems, concurrency, budget)
    return report


def compare_accuracy(local: dict[str, Any], remote: dict[str, Any]) -> dict[str, Any]:
    """Per strategy: accuracy on each side and how many answers are the same text."""
    table = {}
    for strategy, here in local.items():
        there = remote[strategy]
        same = sum(a == b for a, b in zip(here.pop("answers"), there.pop("answers"), strict=True))
        table[strategy] = {
            "in_process_correct": here["correct"],
            "remote_correct": there["correct"],
            "of": here["of"],
            "identical_answers": same,
        }
    return table


def remote_overhead(
    models: Path,
    out: Path,
    searches: int = 32,
    concurrency: int = 8,
    budget: int = 900,
    accuracy_problems: int = 16,
) -> dict[str, Any]:
    from engines.cpu_binding import engine_cores
    from engines.remote import RemotePolicyEngine
    from engines.vllm_engine import VLLMConfig
    from engines.vllm_serve import ServerProcess
    from server.engines import Engines
    from server.settings import EngineSettings
    from verifiers.remote_prm import RemotePRM

    kv = 1.0  # the same KV cache on both sides
    settings = EngineSettings(models=models, kv_cache_gib=kv)
    policy_spec, prm_spec = settings.policy_spec(), settings.prm_spec()
    engines = Engines.start(settings)
    try:
        local = asyncio.run(
            measure(engines.policy, engines.prm, searches, concurrency, budget, accuracy_problems)
        )
    finally:
        engines.shutdown()

    logs = tempfile.mkdtemp(prefix="ponder-bench-remote-")
    cores = dict(zip(("policy", "prm"), engine_cores(), strict=True))  # the cores the pair had
    servers = [
        ServerProcess(
            VLLMConfig(model=str(models / role), kv_cache_gib=kv, cpu_cores=cores[role]),
            role,
            free_port(),
            f"{logs}/{role}.log",
            prm_spec=prm_spec if role == "prm" else None,
        )
        for role in ("policy", "prm")
    ]
    try:
        for server in servers:
            server.wait_ready()

        async def remote_run(per_sample: bool, accuracy: int) -> Any:
            policy = RemotePolicyEngine.connect(
                [servers[0].url], models / "policy", policy_spec, request_per_sample=per_sample
            )
            prm = RemotePRM.connect([servers[1].url], models / "prm", prm_spec)
            try:
                return await measure(policy, prm, searches, concurrency, budget, accuracy)
            finally:
                await policy.aclose()
                await prm.aclose()

        remote = asyncio.run(remote_run(False, accuracy_problems))
        per_sample = asyncio.run(remote_run(True, 0))
    finally:
        for server in servers:
            server.stop()

    answers = local["search"].pop("answers")
    same = sum(a == b for a, b in zip(answers, remote["search"].pop("answers"), strict=True))
    same_per_sample = sum(a == b for a, b in zip(answers, per_sample["search"].pop("answers"), strict=True))
    report = {
        "setup": {
            "searches": searches,
            "concurrency": concurrency,
            "budget": budget,
            "strategies": list(STRATEGIES),
            "accuracy_problems_per_strategy": accuracy_problems,
            "replicas": "1 policy + 1 PRM vllm serve on loopback, same host and cores",
        },
        "in_process": local,
        "remote": remote,
        "remote_request_per_sample": per_sample,
        "remote_over_in_process": {
            "engine_tokens_per_s": round(
                remote["engine_generated_tokens_per_s"] / local["engine_generated_tokens_per_s"], 3
            ),
            "search_wall": round(remote["search"]["wall_s"] / local["search"]["wall_s"], 3),
            "latency_p50": round(remote["search"]["latency_p50_s"] / local["search"]["latency_p50_s"], 3),
            "engine_tokens_per_s_request_per_sample": round(
                per_sample["engine_generated_tokens_per_s"] / local["engine_generated_tokens_per_s"], 3
            ),
            "search_wall_request_per_sample": round(
                per_sample["search"]["wall_s"] / local["search"]["wall_s"], 3
            ),
        },
        "accuracy_by_strategy": compare_accuracy(local.pop("accuracy", {}), remote.pop("accuracy", {})),
        "identical_answers": f"{same}/{searches}",
        "identical_answers_request_per_sample": f"{same_per_sample}/{searches}",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report
