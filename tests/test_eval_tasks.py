"""`ponder eval search` on a user's own task file: the HTTP solver's requests and errors."""

from __future__ import annotations

import json

import httpx
import pytest

from evaluation.solver import Attempt
from evaluation.solver_http import HttpSolver, ServerAddress, ServerError
from searchers.auto import AutoTable
from tasks.datasets import Task

# --- the HTTP solver, against a mock transport --------------------------------------------------------

ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "so \\boxed{27}"}}],
    "usage": {
        "prompt_tokens": 30,
        "completion_tokens": 90,
        "prompt_tokens_details": {"cached_tokens": 12},
        "scored_tokens": 140,
    },
    "search": {
        "strategy": "best_of_n",
        "stop_reason": "budget",
        "budget": 250,
        "candidates": 2,
        "score": 0.7,
        "candidate_texts": [{"text": "\\boxed{26}"}, {"text": "so \\boxed{27}"}],
    },
}
MATH_TASK = Task("q-1", "Mia has 12 apples ...", "27", None, "math")
ATTEMPT = Attempt("eval-best_of_n_prm-2.0-q-1", "best_of_n", {"select": "prm"}, 250, 0.8, 3)


async def test_the_http_solver_sends_the_search_and_reads_usage_and_candidates() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    address = ServerAddress("http://server:8000/", "qwen2.5-math:1.5b", api_key="secret")
    async with HttpSolver.connect(address, 2, transport=httpx.MockTransport(handler)) as solver:
        solved = await solver.solve(MATH_TASK, ATTEMPT)
        assert solver.with_auto_table(AutoTable([], [])) is None
        assert await solver.engine_tokens_per_s() is None
    request = seen[0]
    assert str(request.url) == "http://server:8000/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer secret"
    assert request.headers["x-request-id"] == ATTEMPT.request_id
    assert json.loads(request.content) == {
        "model": "qwen2.5-math:1.5b",  # passed through, ':' and all
        "temperature": 0.8,
        "seed": 3,
        "search": {
            "strategy": "best_of_n",
            "budget": 250,
            "knobs": {"select": "prm"},
            "return_candidates": True,
        },
        "messages": [{"role": "user", "content": MATH_TASK.prompt}],
    }
    assert solved.text == "so \\boxed{27}" and solved.candidate_texts == ("\\boxed{26}", "so \\boxed{27}")
    assert (solved.generated, solved.prompt, solved.cached, solved.scored) == (90, 30, 12, 140)
    assert solved.stop_reason == "budget"


@pytest.mark.parametrize(
    ("response", "fragments"),
    [
        (
            httpx.Response(
                400,
                json={
                    "error": {
                        "message": "budget must be between 1 and 100 tokens, got 250",
                        "type": "invalid_request_error",
                        "param": "search.budget",
                        "code": "invalid_search",
                    }
                },
            ),
            ["answered 400", ATTEMPT.request_id, "budget must be between 1 and 100", "code invalid_search"],
        ),
        (httpx.Response(502, text="<html>bad gateway</html>"), ["answered 502", "bad gateway"]),
        (httpx.Response(200, json={"choices": []}), ["without Ponder's `search` report"]),
    ],
)
async def test_a_server_error_is_raised_with_its_message(
    response: httpx.Response, fragments: list[str]
) -> None:
    address = ServerAddress("http://server:8000", "m")
    async with HttpSolver.connect(address, 1, transport=httpx.MockTransport(lambda r: response)) as solver:
        with pytest.raises(ServerError) as error:
            await solver.solve(MATH_TASK, ATTEMPT)
    for fragment in fragments:
        assert fragment in str(error.value)


async def test_a_full_queue_is_retried_and_an_unreachable_server_named() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"message": "busy"}})])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, httpx.Response(200, json=ANSWER))

    address = ServerAddress("http://server:8000", "m")
    async with HttpSolver.connect(address, 1, transport=httpx.MockTransport(handler)) as solver:
        assert (await solver.solve(MATH_TASK, ATTEMPT)).text == "so \\boxed{27}"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with HttpSolver.connect(address, 1, transport=httpx.MockTransport(refuse)) as solver:
        with pytest.raises(ServerError, match="cannot reach http://server:8000/v1/chat/completions"):
            await solver.solve(MATH_TASK, ATTEMPT)
