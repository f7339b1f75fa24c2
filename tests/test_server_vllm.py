"""The server end to end: a real uvicorn server on the real vLLM engines, driven by the official client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
import uvicorn

from engines.usage import Usage
from engines.vllm_engine import VLLMPolicyEngine
from ponder.defaults import DEFAULT_MODELS
from server.main import create_app
from server.settings import ServerSettings
from verifiers.vllm_prm import VLLMPRM

pytestmark = pytest.mark.engine

PROMPT = "3 7 9 13 -> 24"
STRATEGIES = ["greedy", "best_of_n", "beam", "dvts", "mcts", "particle_filter", "revision", "auto"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def server_url(policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM) -> AsyncIterator[str]:
    app = create_app(ServerSettings(models=DEFAULT_MODELS), policy_engine, prm_engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


def idle(policy: VLLMPolicyEngine, prm: VLLMPRM) -> bool:
    return (
        policy.engine.output_processor.get_num_unfinished_requests() == 0
        and prm.engine.output_processor.get_num_unfinished_requests() == 0
    )


def spent(usage: Any) -> float:
    """The compute units a response's usage reports, checked against its raw counts at the weights the
    server reads for the default models."""
    details = usage.prompt_tokens_details
    cached = int(details.cached_tokens or 0) if details is not None else 0
    counted = (
        ServerSettings(models=DEFAULT_MODELS)
        .weights()
        .units(
            Usage(
                prompt_tokens=int(usage.prompt_tokens),
                cached_prompt_tokens=cached,
                generated_tokens=int(usage.completion_tokens),
                scored_tokens=int(usage.model_extra["scored_tokens"]),
                cached_scored_tokens=int(usage.model_extra["cached_scored_tokens"]),
            )
        )
    )
    reported = float(usage.model_extra["compute_units"])
    assert reported == pytest.approx(counted, abs=1e-2)
    return reported


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_every_strategy_through_chat(server_url: str, strategy: str, stream: bool) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server_url}/v1", api_key="none")
    search = {"strategy": strategy, "budget": 700}
    if not stream:
        r = await client.chat.completions.create(
            model="ponder-default",
            messages=[{"role": "user", "content": PROMPT}],
            seed=2,
            extra_body={"search": search},
        )
        assert r.choices[0].message.content and r.choices[0].finish_reason in ("stop", "length")
        assert spent(r.usage) <= 700
        assert r.model_extra is not None and r.model_extra["search"]["strategy"] == strategy
        return
    chunks = [
        chunk
        async for chunk in await client.chat.completions.create(
            model="ponder-default",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
            seed=2,
            extra_body={"search": search},
        )
    ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and spent(chunks[-1].usage) <= 700


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_every_strategy_through_completions(server_url: str, strategy: str, stream: bool) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server_url}/v1", api_key="none")
    model = f"ponder-default:{strategy}"  # the suffix, for clients that cannot send extra fields
    if not stream:
        r = await client.completions.create(model=model, prompt=PROMPT + "\n", max_tokens=200, seed=4)
        assert r.choices[0].text and r.model_extra is not None
        assert r.model_extra["search"]["strategy"] == strategy
        usage = r.usage
        assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        return
    texts = [
        c.choices[0].text
        async for c in await client.completions.create(model=model, prompt=PROMPT + "\n", stream=True, seed=4)
        if c.choices
    ]
    assert "".join(texts).strip()


async def test_the_sync_client_works_too(server_url: str) -> None:
    def call() -> Any:
        client = openai.OpenAI(base_url=f"{server_url}/v1", api_key="none")
        return client.chat.completions.create(
            model="ponder-default:best_of_n",
            messages=[{"role": "user", "content": PROMPT}],
            max_completion_tokens=200,
        )

    r = await asyncio.to_thread(call)  # the server runs on this event loop: keep it free
    assert r.choices[0].message.content and r.usage.prompt_tokens_details.cached_tokens >= 0


def count_400s(metrics: str) -> float:
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("ponder_requests_total{") and 'status="400"' in line
    )


async def test_bad_requests_are_not_retried_by_the_client(server_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server_url}/v1", api_key="none", max_retries=2)
    async with httpx.AsyncClient() as http:
        before = count_400s((await http.get(f"{server_url}/metrics")).text)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="ponder-default",
            messages=[{"role": "user", "content": PROMPT}],
            extra_body={"search": {"budget": 0}},
        )
    assert caught.value.body["param"] == "search.budget"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": PROMPT}])
    async with httpx.AsyncClient() as http:
        after = count_400s((await http.get(f"{server_url}/metrics")).text)
    assert after == before + 1  # x-should-retry: false kept the client from sending it again


async def test_a_client_that_gives_up_stops_its_search(
    server_url: str, policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM
) -> None:
    body = {
        "model": "ponder-default",
        "messages": [{"role": "user", "content": PROMPT}],
        "search": {"strategy": "best_of_n", "budget": 60_000, "knobs": {"n": 1000}},
    }
    async with httpx.AsyncClient(timeout=0.5) as http:
        with pytest.raises(httpx.TimeoutException):
            await http.post(f"{server_url}/v1/chat/completions", json=body)
    for _ in range(40):  # the server notices within its poll interval, then aborts
        await asyncio.sleep(0.25)
        if idle(policy_engine, prm_engine):
            break
    assert idle(policy_engine, prm_engine)


async def test_health_and_request_ids(server_url: str) -> None:
    async with httpx.AsyncClient() as http:
        health = await http.get(f"{server_url}/health")
        models = await http.get(f"{server_url}/v1/models", headers={"X-Request-Id": "abc123"})
    assert health.status_code == 200 and health.json()["engines"] == {"policy": True, "prm": True}
    assert models.headers["x-request-id"] == "abc123"


async def test_replaying_a_task_set_counts_graded_outcomes(server_url: str) -> None:
    from evaluation.replay import replay
    from tasks.sets import load_eval_set

    report = await replay(server_url, load_eval_set(4, limit=4), "best_of_n", 400, concurrency=4)
    assert report["failed"] == 0 and 0.0 <= report["accuracy"] <= 1.0
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{server_url}/metrics")).text
    graded = [
        line for line in metrics.splitlines() if line.startswith('ponder_graded_total{budget_bucket="512"')
    ]
    assert sum(float(line.split()[-1]) for line in graded) >= 4


async def test_every_ponder_metric_deploy_queries_is_scraped_from_the_live_server(server_url: str) -> None:
    from deploy_files import exported_names, queried_metrics

    client = openai.AsyncOpenAI(base_url=f"{server_url}/v1", api_key="none")
    search = {"strategy": "best_of_n", "budget": 300, "reference": "24"}
    await client.chat.completions.create(
        model="ponder-default", messages=[{"role": "user", "content": PROMPT}], extra_body={"search": search}
    )
    async with httpx.AsyncClient() as http:
        exported = exported_names((await http.get(f"{server_url}/metrics")).text)
    wanted = {n for n in queried_metrics() if n.startswith("ponder_")}
    assert wanted and wanted <= exported, wanted - exported


async def test_a_streaming_client_that_leaves_stops_its_search(
    server_url: str, policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM
) -> None:
    body = {
        "model": "ponder-default",
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "search": {"strategy": "best_of_n", "budget": 60_000, "knobs": {"n": 1000}},
    }
    url = f"{server_url}/v1/chat/completions"
    async with httpx.AsyncClient() as http, http.stream("POST", url, json=body) as response:
        events = 0
        async for line in response.aiter_lines():
            events += line.startswith(("data:", ":"))
            if events == 2:
                break  # the search is under way (progress or a heartbeat came): hang up
    for _ in range(40):
        await asyncio.sleep(0.25)
        if idle(policy_engine, prm_engine):
            break
    assert idle(policy_engine, prm_engine)


async def test_a_disconnect_storm_leaves_the_engines_idle(
    server_url: str, policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM
) -> None:
    async def leave(i: int) -> None:
        body = {
            "model": "ponder-default",
            "messages": [{"role": "user", "content": PROMPT}],
            "seed": i,
            "stream": i % 2 == 0,
            "search": {"strategy": ["best_of_n", "beam", "mcts", "revision"][i % 4], "budget": 60_000},
        }
        async with httpx.AsyncClient(timeout=0.4) as http:
            if body["stream"]:  # hangs up after two events, or when its read timeout fires first
                url = f"{server_url}/v1/chat/completions"
                with contextlib.suppress(httpx.TimeoutException):
                    async with http.stream("POST", url, json=body) as r:
                        seen = 0
                        async for line in r.aiter_lines():
                            seen += line.startswith(("data:", ":"))
                            if seen == 2:
                                break
            else:  # gives up waiting for the whole answer
                with pytest.raises(httpx.TimeoutException):
                    await http.post(f"{server_url}/v1/chat/completions", json=body)

    await asyncio.gather(*(leave(i) for i in range(16)))
    for _ in range(60):
        await asyncio.sleep(0.25)
        if idle(policy_engine, prm_engine):
            break
    assert idle(policy_engine, prm_engine)


async def test_graceful_shutdown_finishes_in_flight_requests(
    policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM
) -> None:
    app = create_app(ServerSettings(models=DEFAULT_MODELS), policy_engine, prm_engine)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=120)
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    body = {
        "model": "ponder-default:best_of_n",
        "messages": [{"role": "user", "content": PROMPT}],
        "search": {"budget": 800},
    }
    async with httpx.AsyncClient(timeout=120) as http:
        request = asyncio.create_task(http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body))
        await asyncio.sleep(0.3)
        server.should_exit = True  # what SIGTERM does
        response = await request
    await serving
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
