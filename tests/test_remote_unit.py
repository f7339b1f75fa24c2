"""Remote engines without servers: replica routing (affinity, spread, fail-over, cool-off) and the
adapters' HTTP side over a mock transport. The real-server tests are in test_remote_engines.py."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from engines.base import EngineUnavailable, Sampling
from engines.remote import RemotePolicyEngine
from engines.remote_http import RemoteClient, RemoteError
from engines.replicas import ReplicaFailure, Replicas
from engines.spec import read_policy_spec, read_prm_spec
from engines.usage import Usage
from engines.vllm_engine import load_tokenizer
from ponder.defaults import DEFAULT_POLICY, DEFAULT_PRM
from verifiers.prm import Candidate
from verifiers.prm_format import prm_format
from verifiers.remote_prm import RemotePRM

URLS = ["http://a:1", "http://b:1", "http://c:1"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_search_sticks_to_one_replica_and_searches_spread() -> None:
    replicas = Replicas(URLS)
    assert all(replicas.order("req-7")[0] == replicas.order("req-7")[0] for _ in range(5))
    firsts = Counter(replicas.order(f"req-{i}")[0] for i in range(3000))
    assert set(firsts) == set(URLS)
    assert min(firsts.values()) > 800  # about a third each


def test_removing_a_replica_moves_only_its_searches() -> None:
    before = {f"req-{i}": Replicas(URLS).order(f"req-{i}")[0] for i in range(500)}
    after = Replicas(URLS[:2])
    for key, url in before.items():
        if url != URLS[2]:
            assert after.order(key)[0] == url


async def test_a_failing_replica_is_skipped_for_its_cool_off() -> None:
    clock = Clock()
    replicas = Replicas(URLS, cool_off_s=10, clock=clock)
    key = "req-1"
    first, second = replicas.order(key)[:2]
    tried: list[str] = []

    async def attempt(url: str) -> str:
        tried.append(url)
        if url == first:
            raise ReplicaFailure("connection refused")
        return url

    assert await replicas.call(key, attempt) == second
    assert tried == [first, second] and not replicas.is_up(first) and replicas.healthy
    tried.clear()
    assert await replicas.call(key, attempt) == second
    assert tried == [second]  # the down replica is not tried while cooling off
    clock.now = 10.5
    assert replicas.order(key)[0] == first  # back in rotation after the cool-off


async def test_all_replicas_failing_raises_engine_unavailable_and_other_errors_propagate() -> None:
    replicas = Replicas(URLS[:2])

    async def broken(url: str) -> None:
        raise ReplicaFailure("HTTP 500")

    with pytest.raises(EngineUnavailable):
        await replicas.call("k", broken)
    assert not replicas.healthy

    async def refused(url: str) -> None:
        raise ValueError("bad request")

    replicas.mark_up(URLS[0])
    with pytest.raises(ValueError):
        await replicas.call("k", refused)
    assert replicas.is_up(URLS[0])  # a refused request says nothing about the replica


def test_urls_are_checked() -> None:
    with pytest.raises(ValueError):
        Replicas([])
    with pytest.raises(ValueError):
        Replicas(["http://a:1/", "http://a:1"])


# --- the adapters over a mock transport: request form, reply parsing, fail-over, 4xx, aborts ---------


def completion_reply(token_ids: list[int], finish: str, stop: int | None, n: int = 1) -> dict[str, Any]:
    choice = {
        "token_ids": token_ids,
        "finish_reason": finish,
        "stop_reason": stop,
        "logprobs": {"token_logprobs": [-0.5] * len(token_ids)},
    }
    return {
        "choices": [{**choice, "index": i} for i in range(n)],
        "usage": {"prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}},
    }


def remote_policy(
    handler: Callable[[httpx.Request], httpx.Response], urls: list[str], per_sample: bool = False
) -> RemotePolicyEngine:
    client = RemoteClient(urls, transport=httpx.MockTransport(handler))
    spec = read_policy_spec(DEFAULT_POLICY)
    return RemotePolicyEngine(
        client, load_tokenizer(DEFAULT_POLICY), 256, spec, request_per_sample=per_sample
    )


@pytest.mark.parametrize("per_sample", [False, True], ids=["per-prefix", "per-sample"])
async def test_remote_policy_sends_token_ids_and_reads_the_reply_like_in_process(per_sample: bool) -> None:
    bodies: list[dict[str, Any]] = []
    policy: RemotePolicyEngine

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        step = policy.steps.exact_id
        assert step is not None
        return httpx.Response(200, json=completion_reply([20, 21, step], "stop", step, body["n"]))

    policy = remote_policy(handler, URLS[:1], per_sample)
    generation = await policy.expand([[1, 5, 6], [1, 7]], 2, Sampling(seed=4, logprobs=True), "r")
    # vLLM seeds sample j of an n-request with seed + j: both forms draw VLLMPolicyEngine's seeds
    base = 4 * 1_000_003
    if per_sample:
        assert [(b["seed"], b["n"]) for b in bodies] == [(base + i, 1) for i in range(4)]
    else:
        assert [(b["seed"], b["n"]) for b in bodies] == [(base, 2), (base + 2, 2)]
    assert bodies[0]["prompt"] == [1, 5, 6] and bodies[0]["return_token_ids"]
    assert bodies[0]["stop_token_ids"] == [policy.steps.exact_id] and bodies[0]["logprobs"] == 0
    assert [len(row) for row in generation.continuations] == [2, 2]
    first = generation.continuations[0][0]
    assert first.finish == "step" and first.token_ids == (20, 21, policy.steps.exact_id)
    assert first.logprob == pytest.approx(-1.5) and first.step_logprobs == pytest.approx((-1.5,))
    assert generation.usage == Usage(
        prompt_tokens=10, cached_prompt_tokens=8, generated_tokens=12, policy_calls=4
    )


async def test_remote_policy_strips_eos_and_fails_over_on_5xx_and_connection_errors() -> None:
    seen: list[str] = []
    policy: RemotePolicyEngine

    def handler(request: httpx.Request) -> httpx.Response:
        host = f"http://{request.url.host}:{request.url.port}"
        seen.append(host)
        if host == URLS[0]:
            return httpx.Response(500, text="engine dead")
        if host == URLS[1]:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=completion_reply([20, policy.eos_token_id], "stop", None, 1))

    policy = remote_policy(handler, URLS)
    for key in ("a", "b", "c", "d"):
        generation = await policy.rollout([[1, 5]], 1, Sampling(seed=1), key)
        assert generation.continuations[0][0].finish == "end"
        assert generation.continuations[0][0].token_ids == (20,)
    assert not policy.remote.replicas.is_up(URLS[0]) and not policy.remote.replicas.is_up(URLS[1])
    assert policy.is_healthy and seen.count(URLS[2]) == 4


async def test_a_refused_request_is_not_retried_and_no_replica_gives_engine_unavailable() -> None:
    policy = remote_policy(lambda request: httpx.Response(400, text="bad"), URLS)
    with pytest.raises(RemoteError):
        await policy.rollout([[1, 5]], 1, Sampling(), "r")
    assert policy.is_healthy

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    policy = remote_policy(down, URLS)
    with pytest.raises(EngineUnavailable):
        await policy.rollout([[1, 5]], 1, Sampling(), "r")
    assert not policy.is_healthy


async def test_abort_turns_pending_samples_into_aborted_continuations() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    policy = remote_policy(slow, URLS[:1])  # type: ignore[arg-type]
    task = asyncio.create_task(policy.rollout([[1, 5], [1, 6]], 2, Sampling(), "r"))
    await asyncio.sleep(0.05)
    await policy.abort("r")
    generation = await asyncio.wait_for(task, 5)
    assert [c.finish for row in generation.continuations for c in row] == ["abort"] * 4
    assert policy.remote.inflight() == 0


async def test_remote_prm_sends_one_pooling_request_and_reads_its_rows() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/pooling"
        body = json.loads(request.content)
        bodies.append(body)
        data = [{"index": i, "data": [[0.25]] * ids.count(tag)} for i, ids in enumerate(body["input"])]
        return httpx.Response(200, json={"data": list(reversed(data))})

    format = prm_format(read_prm_spec(DEFAULT_PRM), load_tokenizer(DEFAULT_PRM))
    tag = format.step_tag_id
    prm = RemotePRM(RemoteClient(URLS[:1], transport=httpx.MockTransport(handler)), format, 256, 1000)
    candidates = [Candidate((1, 2), ((3,), (40, 50))), Candidate((1,), ((3,),))]
    scores = await prm.score(candidates, "r")
    assert bodies == [
        {
            "input": [[1, 2, 3, tag, 40, 50, tag], [1, 3, tag]],
            "task": "token_classify",
            "encoding_format": "float",
        }
    ]
    assert scores.step_scores == [[0.25, 0.25], [0.25]]
    assert scores.usage == Usage(scored_tokens=10, verifier_calls=2)
