"""Remote engines against real `vllm serve` replicas on loopback: same results as in-process, every
strategy through them, a replica killed under load without failing a request.

Three servers run for the whole module (two policy replicas, one PRM), started together with
`engines.vllm_serve` (the in-process engines' settings) and killed with their process groups at the end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
import pytest_asyncio

from engines.base import Sampling
from engines.remote import RemotePolicyEngine
from engines.spec import read_policy_spec, read_prm_spec
from engines.vllm_engine import VLLMConfig, VLLMPolicyEngine
from engines.vllm_serve import ServerProcess
from ponder.defaults import DEFAULT_MODELS, DEFAULT_POLICY, DEFAULT_PRM
from searchers.controller import Controller, SearchRequest
from server.main import create_app
from server.settings import ServerSettings
from tasks.sets import load_eval_set
from verifiers.countdown import split_steps
from verifiers.prm import Candidate
from verifiers.remote_prm import RemotePRM
from verifiers.vllm_prm import VLLMPRM

pytestmark = pytest.mark.engine

TASKS = load_eval_set(4, limit=4)
STRATEGIES = ["greedy", "best_of_n", "beam", "dvts", "mcts", "particle_filter", "revision", "auto"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Servers:
    policy: list[ServerProcess]
    prm: ServerProcess


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    logs = tempfile.mkdtemp(prefix="ponder-remote-")
    config = VLLMConfig(model=str(DEFAULT_POLICY), kv_cache_gib=1)
    started: list[ServerProcess] = []
    try:
        for i in range(2):
            started.append(ServerProcess(config, "policy", free_port(), os.path.join(logs, f"policy{i}.log")))
        prm_config = replace(config, model=str(DEFAULT_PRM))
        prm_log = os.path.join(logs, "prm.log")
        started.append(ServerProcess(prm_config, "prm", free_port(), prm_log, read_prm_spec(DEFAULT_PRM)))
        for server in started:  # started together: their start-ups overlap
            server.wait_ready()
        yield Servers(started[:2], started[2])
    finally:
        for server in started:
            server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def remote_policy(servers: Servers) -> AsyncIterator[RemotePolicyEngine]:
    engine = RemotePolicyEngine.connect(
        [s.url for s in servers.policy], DEFAULT_POLICY, read_policy_spec(DEFAULT_POLICY), cool_off_s=60
    )
    yield engine
    await engine.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def remote_prm(servers: Servers) -> AsyncIterator[RemotePRM]:
    engine = RemotePRM.connect([servers.prm.url], DEFAULT_PRM, read_prm_spec(DEFAULT_PRM))
    yield engine
    await engine.aclose()


def request(policy: Any, strategy: str, budget: int, task: int, request_id: str) -> SearchRequest:
    prompt = TASKS[task].prompt
    return SearchRequest(
        prompt_ids=tuple(policy.encode(prompt)),
        prompt_text=prompt,
        request_id=request_id,
        strategy=strategy,
        budget=budget,
        sampling=Sampling(seed=3),
    )


async def test_remote_generation_equals_in_process(servers: Servers, policy_engine: VLLMPolicyEngine) -> None:
    prompts = [policy_engine.encode(t.prompt) for t in TASKS[:2]]
    for per_sample in (False, True):  # n samples per HTTP request, or one request per sample
        remote = RemotePolicyEngine.connect(
            [servers.policy[0].url],
            DEFAULT_POLICY,
            read_policy_spec(DEFAULT_POLICY),
            request_per_sample=per_sample,
        )
        assert remote.encode(TASKS[0].prompt) == prompts[0]
        for call in ("expand", "rollout"):
            for sampling in (Sampling(seed=7), Sampling(seed=8, temperature=0.7, top_p=0.9)):
                local = await getattr(policy_engine, call)(prompts, 3, sampling, "t-local")
                far = await getattr(remote, call)(prompts, 3, sampling, "t-remote")
                assert far.continuations == local.continuations, (per_sample, call, sampling)
                # Cache hits depend on each engine's history; everything else is the same count.
                assert replace(far.usage, cached_prompt_tokens=0) == replace(
                    local.usage, cached_prompt_tokens=0
                )
    finishes = {c.finish for row in far.continuations for c in row}
    assert finishes <= {"end", "length"}
    greedy = Sampling(temperature=0.0)
    far = await remote.expand(prompts, 1, greedy, "t-remote-greedy")
    assert far.continuations == (await policy_engine.expand(prompts, 1, greedy, "t-greedy")).continuations
    await remote.aclose()


async def test_remote_prm_scores_equal_in_process(
    policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM, remote_prm: RemotePRM
) -> None:
    prompts = [policy_engine.encode(t.prompt) for t in TASKS]
    generation = await policy_engine.rollout(prompts, 3, Sampling(seed=8), "t-prm-samples")
    candidates = [
        Candidate(tuple(prompt), tuple(policy_engine.split_steps(c.token_ids)))
        for prompt, row in zip(prompts, generation.continuations, strict=True)
        for c in row
    ]
    local = await prm_engine.score(candidates, "t-prm-local")
    far = await remote_prm.score(candidates, "t-prm-remote")
    assert far.usage == local.usage
    assert [len(row) for row in far.step_scores] == [len(row) for row in local.step_scores]
    pairs = [
        (a, b)
        for ra, rb in zip(far.step_scores, local.step_scores, strict=True)
        for a, b in zip(ra, rb, strict=True)
    ]
    assert len(pairs) > 10 and max(abs(a - b) for a, b in pairs) < 1e-3


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_every_strategy_runs_on_remote_engines(
    remote_policy: RemotePolicyEngine, remote_prm: RemotePRM, strategy: str
) -> None:
    controller = Controller(remote_policy, remote_prm)
    found = await controller.run(request(remote_policy, strategy, 900, 0, f"t-remote-{strategy}"))
    assert controller.weights.units(found.usage) <= 900
    assert found.usage.generated_tokens > 0 and found.best.finished and split_steps(found.text)
    if strategy != "greedy":
        assert found.usage.scored_tokens > 0 and found.score is not None
    assert remote_policy.remote.inflight() == 0 and remote_prm.remote.inflight() == 0


async def test_remote_step_search_reuses_the_prefix_cache(
    remote_policy: RemotePolicyEngine, remote_prm: RemotePRM
) -> None:
    controller = Controller(remote_policy, remote_prm)
    found = await controller.run(request(remote_policy, "beam", 6000, 1, "t-remote-cache"))
    assert found.usage.cached_prompt_tokens > 0  # reported by the replica, and the search stuck to it


async def test_abort_and_cancel_leave_nothing_running(remote_policy: RemotePolicyEngine) -> None:
    prompt = remote_policy.encode(TASKS[0].prompt)
    sampling = Sampling(max_tokens=200, seed=5)
    task = asyncio.create_task(remote_policy.rollout([prompt] * 8, 16, sampling, "t-remote-abort"))
    await asyncio.sleep(0.3)
    await remote_policy.abort("t-remote-abort")
    generation = await asyncio.wait_for(task, timeout=30)
    assert "abort" in {c.finish for row in generation.continuations for c in row}
    task = asyncio.create_task(remote_policy.rollout([prompt] * 8, 16, sampling, "t-remote-cancel"))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert remote_policy.remote.inflight() == 0


async def test_every_vllm_metric_deploy_queries_is_scraped_from_the_live_engines(servers: Servers) -> None:
    # After the tests above ran traffic through both servers, so histograms and counters have series.
    from deploy_files import exported_names, queried_metrics

    async with httpx.AsyncClient() as http:
        policy = exported_names((await http.get(f"{servers.policy[0].url}/metrics")).text)
        prm = exported_names((await http.get(f"{servers.prm.url}/metrics")).text)
    wanted = {n for n in queried_metrics() if n.startswith("vllm:")}
    assert wanted and wanted <= policy, wanted - policy
    # The dashboard's vLLM panels read both engines; the PRM server's pooling requests count there too.
    assert {n for n in wanted if "request" in n} <= prm


async def test_server_health_reports_the_replicas(
    remote_policy: RemotePolicyEngine, remote_prm: RemotePRM
) -> None:
    app = create_app(ServerSettings(models=DEFAULT_MODELS), remote_policy, remote_prm)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ponder") as client:
        health = await client.get("/health")
    assert health.status_code == 200 and health.json()["engines"] == {"policy": True, "prm": True}


async def running_requests(http: httpx.AsyncClient, url: str) -> float:
    metrics = (await http.get(f"{url}/metrics")).text
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("vllm:num_requests_running")
    )


async def test_a_replica_killed_under_load_fails_no_request(
    servers: Servers, remote_policy: RemotePolicyEngine, remote_prm: RemotePRM
) -> None:
    """Runs last: it kills the second policy replica."""
    controller = Controller(remote_policy, remote_prm)
    strategies = ["best_of_n", "beam", "mcts", "revision", "dvts", "best_of_n", "beam", "auto"]
    requests = [
        request(remote_policy, s, 1500, i % len(TASKS), f"t-failover-{i}") for i, s in enumerate(strategies)
    ]
    victim = servers.policy[1]
    home = [remote_policy.remote.replicas.order(r.request_id)[0] for r in requests]
    # Both replicas must carry searches, or the kill proves nothing.
    assert set(home) == {s.url for s in servers.policy}
    runs = [asyncio.create_task(controller.run(r)) for r in requests]
    # Kill as soon as the victim is generating, so calls die mid-response. A fixed sleep let every
    # search on the victim finish first on a fast run, and the kill then proved nothing.
    async with asyncio.timeout(120), httpx.AsyncClient() as http:
        while await running_requests(http, victim.url) == 0:
            await asyncio.sleep(0.01)
    assert not all(run.done() for run, url in zip(runs, home, strict=True) if url == victim.url)
    victim.kill()
    results = await asyncio.gather(*runs)
    assert all(r.usage.generated_tokens > 0 and r.best.finished for r in results)
    assert not remote_policy.remote.replicas.is_up(victim.url) and remote_policy.is_healthy
    assert await remote_policy.probe() == {servers.policy[0].url: True, victim.url: False}
