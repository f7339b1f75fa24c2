"""The HTTP layer on the deterministic fake engines (fast): shapes, errors, auth, streaming, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fake_engine import FakeEngine
from fake_prm import FakePRM

from engines.cost import CostWeights
from server.errors import error_type
from server.main import create_app
from server.settings import ServerSettings

PROMPT = "3 7 9 13 -> 24"


def client(api_key: str | None = None, engine: Any = None, **config: Any) -> httpx.AsyncClient:
    app = create_app(
        ServerSettings(models=Path("/nonexistent"), api_key=api_key, **config),
        engine or FakeEngine(),
        FakePRM(),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "ponder-default", "messages": [{"role": "user", "content": PROMPT}], **extra}


async def test_chat_completion_has_openai_shape_and_search_report() -> None:
    async with client() as c:
        r = await c.post(
            "/v1/chat/completions", json=chat_body(search={"strategy": "beam", "budget": 2000}, seed=1)
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"].strip()
    assert body["search"]["strategy"] == "beam" and body["search"]["stop_reason"] in ("done", "budget")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] < usage["completion_tokens"]
    assert 0 < usage["compute_units"] <= 2000
    assert r.headers["x-request-id"]


def units_from_usage(usage: dict[str, Any], weights: dict[str, Any]) -> float:
    """What the API's raw counts cost at the weights the `search` object shows."""
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return (
        usage["completion_tokens"] * weights["generated"]
        + (usage["prompt_tokens"] - cached) * weights["prefilled"]
        + cached * weights["cached_prompt"]
        + (usage["scored_tokens"] - usage["cached_scored_tokens"]) * weights["scored"]
        + usage["cached_scored_tokens"] * weights["cached_scored"]
    )


async def test_usage_reports_the_compute_units_and_the_search_the_weights() -> None:
    async with client() as c:
        r = await c.post("/v1/chat/completions", json=chat_body(search={"strategy": "beam", "budget": 900}))
        n2 = await c.post(
            "/v1/completions", json={"model": "ponder-default", "prompt": PROMPT + "\n", "n": 2}
        )
    body = r.json()
    report, usage = body["search"], body["usage"]
    assert report["budget"] == 900 and report["compute_units"] == usage["compute_units"] <= 900
    weights = report["cost_weights"]
    assert weights == CostWeights().as_dict() and weights["generated"] == 1.0 and weights["measured"] is None
    assert usage["compute_units"] == pytest.approx(units_from_usage(usage, weights), abs=1e-3)
    both = n2.json()  # n searches: usage sums them, each report has its own
    assert both["usage"]["compute_units"] == pytest.approx(sum(s["compute_units"] for s in both["search"]))


async def test_the_weights_come_from_the_models_directory_or_the_settings(tmp_path: Path) -> None:
    measured = CostWeights(
        prefilled=0.05, cached_prompt=0.0, scored=0.03, cached_scored=0.01, measured="here"
    )
    measured.dump(tmp_path / "models" / "cost_weights.json", rates={"generated": 100.0})
    named = CostWeights(prefilled=1.0, cached_prompt=1.0, scored=1.0, cached_scored=1.0, measured="there")
    named.dump(tmp_path / "mine.json")
    search = {"strategy": "best_of_n", "budget": 800}
    cases: list[tuple[dict[str, Any], CostWeights]] = [
        ({"models": tmp_path / "models"}, measured),
        ({"models": tmp_path / "models", "cost_weights": tmp_path / "mine.json"}, named),
        ({"policy": "a", "prm": "b"}, CostWeights()),  # a user's own pair: the defaults unless named
    ]
    for settings, weights in cases:
        app = create_app(ServerSettings(**settings), FakeEngine(), FakePRM())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            body = (await c.post("/v1/chat/completions", json=chat_body(search=search))).json()
        assert body["search"]["cost_weights"] == weights.as_dict()
        assert body["usage"]["compute_units"] == pytest.approx(
            units_from_usage(body["usage"], weights.as_dict())
        )
        assert body["usage"]["compute_units"] <= 800
    with pytest.raises(FileNotFoundError):
        ServerSettings(models=tmp_path, cost_weights=tmp_path / "missing.json").weights()


async def test_model_suffix_picks_the_strategy_and_completions_work() -> None:
    async with client() as c:
        r = await c.post(
            "/v1/completions", json={"model": "ponder-default:dvts", "prompt": PROMPT + "\n", "n": 2}
        )
    body = r.json()
    assert r.status_code == 200, r.text
    assert body["object"] == "text_completion" and len(body["choices"]) == 2
    assert [s["strategy"] for s in body["search"]] == ["dvts", "dvts"]


async def test_models_lists_the_strategy_suffixes() -> None:
    async with client() as c:
        ids = [m["id"] for m in (await c.get("/v1/models")).json()["data"]]
    assert "ponder-default" in ids and "ponder-default:mcts" in ids


BAD_REQUESTS: list[tuple[str, Any, int, str | None]] = [
    ("bad json", b"{not json", 400, None),
    ("wrong type", chat_body(temperature="hot"), 400, "temperature"),
    ("empty messages", {"model": "ponder-default", "messages": []}, 400, "messages"),
    ("no user text", chat_body(messages=[{"role": "user", "content": "   "}]), 400, "messages"),
    ("budget out of range", chat_body(search={"budget": 10**9}), 400, "search.budget"),
    ("budget zero", chat_body(search={"budget": 0}), 400, "search.budget"),
    ("unknown strategy", chat_body(search={"strategy": "magic"}), 400, "search.strategy"),
    ("unknown knob", chat_body(search={"strategy": "beam", "knobs": {"width": 3}}), 400, "search.knobs"),
    ("unknown search field", chat_body(search={"bugdet": 5}), 400, "search.bugdet"),
    (
        "greedy only at temperature 0",
        chat_body(temperature=0, search={"strategy": "beam"}),
        400,
        "temperature",
    ),
    ("unknown model", chat_body(model="gpt-5"), 404, "model"),
    ("bad search on a stream", chat_body(stream=True, search={"budget": 10**9}), 400, "search.budget"),
    ("too many stops", chat_body(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("n out of range", chat_body(n=0), 400, "n"),
    (
        "prompt too long",
        chat_body(messages=[{"role": "user", "content": "9 " * 400 + "-> 5"}]),
        400,
        "messages",
    ),
]


@pytest.mark.parametrize(("name", "body", "status", "param"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
async def test_bad_input_gets_an_openai_error(name: str, body: Any, status: int, param: str | None) -> None:
    class ShortContext(FakeEngine):
        async def expand(self, prefixes: Any, *args: Any) -> Any:
            from engines.base import validate_prefixes

            validate_prefixes(prefixes, 256, 10_000)
            return await super().expand(prefixes, *args)

        async def rollout(self, prefixes: Any, *args: Any) -> Any:
            from engines.base import validate_prefixes

            validate_prefixes(prefixes, 256, 10_000)
            return await super().rollout(prefixes, *args)

    async with client(engine=ShortContext()) as c:
        if isinstance(body, bytes):
            r = await c.post(
                "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
            )
        else:
            r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    assert r.headers["x-should-retry"] == "false"


async def test_api_key_is_required_on_v1_only() -> None:
    async with client(api_key="sekret") as c:
        assert (await c.post("/v1/chat/completions", json=chat_body())).status_code == 401
        bad = await c.post("/v1/chat/completions", json=chat_body(), headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"
        ok = await c.post(
            "/v1/chat/completions",
            json=chat_body(search={"budget": 300}),
            headers={"Authorization": "Bearer sekret"},
        )
        assert ok.status_code == 200
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/metrics")).status_code == 200


async def test_saturation_gets_429_with_retry_after() -> None:
    class Slow(FakeEngine):
        async def rollout(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.3)
            return await super().rollout(*args, **kwargs)

    async with client(engine=Slow(), max_running=1, max_queued=1) as c:
        body = chat_body(search={"strategy": "greedy"})
        results = await asyncio.gather(*(c.post("/v1/chat/completions", json=body) for _ in range(4)))
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) == 2 and statuses.count(429) == 2
    limited = next(r for r in results if r.status_code == 429)
    assert limited.headers["retry-after"] and limited.json()["error"]["type"] == "rate_limit_error"


async def test_streaming_sends_progress_then_the_answer_then_done() -> None:
    body = chat_body(
        stream=True, stream_options={"include_usage": True}, search={"strategy": "beam", "budget": 2000}
    )
    async with client() as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert any("ponder" in c for c in chunks), "search progress is streamed"
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])
    assert text.strip()
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    last_answer = next(ch for ch in reversed(chunks) if ch.get("search"))
    assert chunks[-1]["usage"]["compute_units"] == last_answer["search"]["compute_units"] > 0


async def test_reference_answers_are_graded_into_metrics() -> None:
    async with client() as c:
        for _ in range(2):
            await c.post(
                "/v1/chat/completions", json=chat_body(search={"strategy": "best_of_n", "reference": "24"})
            )
        text = (await c.get("/metrics")).text
    assert 'ponder_graded_total{budget_bucket="1024",outcome=' in text
    assert (
        'ponder_requests_total{endpoint="/v1/chat/completions",status="200",strategy="best_of_n"} 2.0' in text
    )
    for name in (
        "ponder_request_duration_seconds_bucket",
        "ponder_tokens_total",
        'ponder_compute_units_total{strategy="best_of_n"}',
        "ponder_budget_utilisation_ratio_bucket",
        "ponder_search_stops_total",
        "ponder_searches_in_flight",
        "ponder_searches_queued",
    ):
        assert name in text, name


async def test_health_reports_a_dead_engine() -> None:
    engine = FakeEngine()
    async with client(engine=engine) as c:
        assert (await c.get("/health")).status_code == 200
        engine.is_healthy = False
        r = await c.get("/health")
    assert r.status_code == 503 and r.json()["engines"]["policy"] is False


async def test_a_dead_engine_gets_503_not_500() -> None:
    class Dead(FakeEngine):
        is_healthy = True

        async def rollout(self, *args: Any, **kwargs: Any) -> Any:
            self.is_healthy = False
            raise RuntimeError("EngineCore died")

    async with client(engine=Dead()) as c:
        r = await c.post("/v1/chat/completions", json=chat_body(search={"strategy": "greedy"}))
        health = await c.get("/health")
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_dead" and r.headers["retry-after"]
    assert health.status_code == 503


async def test_a_dead_engine_mid_stream_ends_the_stream_with_a_server_error() -> None:
    class Dead(FakeEngine):
        async def rollout(self, *args: Any, **kwargs: Any) -> Any:
            self.is_healthy = False
            raise RuntimeError("EngineCore died")

    body = chat_body(stream=True, search={"strategy": "greedy"})
    async with client(engine=Dead()) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert r.status_code == 200 and lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][6:])["error"]
    assert error["code"] == "engine_dead" and error["type"] == "service_unavailable"


async def test_a_stream_without_progress_sends_heartbeats() -> None:
    class Slow(FakeEngine):
        async def rollout(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(1.2)  # greedy reports no progress: only heartbeats fill the wait
            return await super().rollout(*args, **kwargs)

    body = chat_body(stream=True, search={"strategy": "greedy"})
    async with client(engine=Slow()) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = [line async for line in r.aiter_lines() if line]
    assert lines[0].startswith("data: ") and json.loads(lines[0][6:])["choices"][0]["delta"]["role"]
    assert ": keep-alive" in lines and lines[-1] == "data: [DONE]"


@pytest.mark.parametrize("status", [400, 401, 404, 413, 429, 500, 503])
def test_error_types_follow_the_status(status: int) -> None:
    expected = {401: "authentication_error", 429: "rate_limit_error", 500: "server_error"}
    expected[503] = "service_unavailable"
    assert error_type(status) == expected.get(status, "invalid_request_error")


@contextlib.asynccontextmanager
async def live_server(engine: FakeEngine) -> AsyncIterator[str]:
    """A real uvicorn server (an in-memory transport cannot hang up) on the fake engines."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app = create_app(ServerSettings(models=Path("/nonexistent")), engine, FakePRM())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_client_that_leaves_cancels_its_search(stream: bool) -> None:
    class Endless(FakeEngine):
        async def rollout(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(60)  # outlasts the test: only a cancelled search ends sooner
            return await super().rollout(*args, **kwargs)

    engine = Endless()
    body = chat_body(stream=stream, search={"strategy": "greedy"})
    headers = {"X-Request-Id": "leaver"}
    async with live_server(engine) as url, httpx.AsyncClient(base_url=url, timeout=5) as http:
        if stream:
            async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                async for line in r.aiter_lines():
                    if line.startswith(":"):
                        break  # the search is under way (a heartbeat came): hang up
        else:
            with pytest.raises(httpx.TimeoutException):  # gives up waiting for the whole answer
                await http.post("/v1/chat/completions", json=body, headers=headers, timeout=0.5)
        for _ in range(40):
            if "leaver-0" in engine.aborted:
                break
            await asyncio.sleep(0.1)
        # Checked while the server runs: its shutdown would end the search anyway.
        assert "leaver-0" in engine.aborted


async def test_a_model_name_may_hold_a_colon() -> None:
    """`qwen2.5-math:1.5b` is served as itself, and with a strategy suffix after it."""
    name = "qwen2.5-math:1.5b"
    async with client(model_name=name) as c:
        plain = await c.post("/v1/chat/completions", json={**chat_body(model=name), "seed": 1})
        beam = await c.post("/v1/chat/completions", json={**chat_body(model=f"{name}:beam"), "seed": 1})
        other = await c.post("/v1/chat/completions", json=chat_body(model="qwen2.5-math"))
        bogus = await c.post("/v1/chat/completions", json=chat_body(model=f"{name}:"))
    assert plain.status_code == 200 and plain.json()["model"] == name, plain.text
    assert beam.status_code == 200 and beam.json()["search"]["strategy"] == "beam"
    assert other.status_code == bogus.status_code == 404


@pytest.mark.parametrize(
    ("field", "value", "endpoint"),
    [
        ("logprobs", True, "chat"),
        ("top_logprobs", 3, "chat"),
        ("tools", [{"type": "function", "function": {"name": "f"}}], "chat"),
        ("response_format", {"type": "json_object"}, "chat"),
        ("presence_penalty", 0.5, "chat"),
        ("logprobs", 2, "completion"),
        ("echo", True, "completion"),
        ("best_of", 4, "completion"),
    ],
)
async def test_what_the_search_cannot_honour_is_refused_by_name(
    field: str, value: Any, endpoint: str
) -> None:
    body = chat_body() if endpoint == "chat" else {"model": "ponder-default", "prompt": PROMPT + "\n"}
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"
    async with client() as c:
        r = await c.post(path, json={**body, field: value})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and "not supported" in error["message"]
    assert error["type"] == "invalid_request_error"


async def test_unset_or_neutral_unsupported_fields_and_unknown_ones() -> None:
    async with client() as c:
        neutral = {"logprobs": False, "response_format": {"type": "text"}, "presence_penalty": 0, "seed": 1}
        ok = await c.post("/v1/chat/completions", json={**chat_body(), **neutral})
        unknown = await c.post("/v1/chat/completions", json={**chat_body(), "temperature_schedule": "cosine"})
    assert ok.status_code == 200, ok.text
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "temperature_schedule"
