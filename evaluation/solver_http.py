"""The HTTP `Solver`: every search goes to a running Ponder server through its OpenAI-compatible API.

Contract:
- `HttpSolver.connect(address, concurrency, style)` opens one `httpx.AsyncClient` on `address.url` (with
  `Authorization: Bearer KEY` when a key is given) for as long as the `async with` lasts. At most
  `concurrency` requests are in flight at once, and each has `address.timeout_s` seconds.
- A search is `POST /v1/completions` (`prompt`) or `POST /v1/chat/completions` (one user message), as
  `evaluation.solver.prompt_style` says, with `model` exactly as given (names such as
  `qwen2.5-math:1.5b` pass through untouched), `temperature`, `seed` and `search: {strategy, budget,
  knobs, return_candidates: true}`; the request id travels as `X-Request-Id`. Tokens come from the
  response's `usage` (`completion_tokens`, `prompt_tokens`, `prompt_tokens_details.cached_tokens`,
  `scored_tokens`), the stop reason and the candidates' texts from its `search` report.
- Greedy with its probe value is one request per task: `auto` with `accept` 0, which answers with its
  greedy probe and reports the PRM's value of it as `score` (0.0 when there is none: no steps, or a
  greedy solution cut short, which the in-process path still scores). Its wall time includes that
  scoring. The raw engine rate cannot be measured from here (None), and auto's table is the server's.
- Any answer but 200 raises `ServerError` with the status and the OpenAI-format error's message, type,
  param and code; so do an unreachable server, a timeout and a response without Ponder's `search`
  report. A 429 (the server's queue is full) is retried up to `RETRIES_ON_429` times after its
  `Retry-After`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx

from engines.cost import CostWeights
from engines.usage import Usage
from evaluation.solver import (
    GREEDY_BUDGET,
    Attempt,
    GreedyRun,
    PromptStyle,
    SearchFailed,
    Solved,
    Solver,
    prompt_style,
)
from searchers.auto import AutoTable
from tasks.datasets import Task

RETRIES_ON_429 = 5
_HEADER_UNSAFE = re.compile(r"[^\x21-\x7e]")


class ServerError(SearchFailed):
    """The server answered with an error (or not at all); the message says what it said."""


@dataclass(frozen=True)
class ServerAddress:
    url: str  # e.g. http://127.0.0.1:8000
    model: str  # the model id the server serves, passed through as given
    api_key: str | None = None
    timeout_s: float = 600.0  # per request


class HttpSolver:
    def __init__(
        self, client: httpx.AsyncClient, address: ServerAddress, concurrency: int, style: PromptStyle | None
    ) -> None:
        self.client = client
        self.address = address
        self.style = style
        self.gate = asyncio.Semaphore(concurrency)

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        address: ServerAddress,
        concurrency: int,
        style: PromptStyle | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> AsyncIterator[HttpSolver]:
        headers = {"Authorization": f"Bearer {address.api_key}"} if address.api_key else {}
        async with httpx.AsyncClient(
            base_url=address.url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(address.timeout_s),
            limits=httpx.Limits(max_connections=concurrency),
            transport=transport,
        ) as client:
            yield cls(client, address, concurrency, style)

    def with_auto_table(self, table: AutoTable) -> Solver | None:
        return None  # the server's auto chooses by the table it loaded

    async def engine_tokens_per_s(self) -> float | None:
        return None

    async def solve(self, task: Task, attempt: Attempt) -> Solved:
        return solved_of(await self.search(task, attempt), prompt_style(task, self.style))

    async def greedy(self, tasks: Sequence[Task]) -> GreedyRun:
        started = time.perf_counter()
        answers = await asyncio.gather(*(self.search(task, greedy_attempt(task)) for task in tasks))
        wall = time.perf_counter() - started
        solved = [
            without_the_probe(solved_of(a, prompt_style(t, self.style)), a)
            for t, a in zip(tasks, answers, strict=True)
        ]
        probe = [float(a["search"].get("score") or 0.0) for a in answers]
        return GreedyRun(solved, probe, wall)

    async def search(self, task: Task, attempt: Attempt) -> dict[str, Any]:
        """The server's JSON answer to one search of `task`."""
        path, body = self.request(task, attempt)
        headers = {"X-Request-Id": _HEADER_UNSAFE.sub("_", attempt.request_id)}
        for tries in range(RETRIES_ON_429 + 1):
            async with self.gate:
                response = await self._post(path, body, headers, attempt.request_id)
            if response.status_code == 429 and tries < RETRIES_ON_429:
                await asyncio.sleep(_retry_after(response))
                continue
            break
        if response.status_code != 200:
            raise ServerError(error_message(response, f"{self.address.url}{path}", attempt.request_id))
        answer: dict[str, Any] = response.json()
        if not isinstance(answer.get("search"), dict):
            raise ServerError(
                f"{self.address.url}{path} answered {attempt.request_id} without Ponder's `search` report "
                "(a single search per request is expected): is it a Ponder server?"
            )
        return answer

    def request(self, task: Task, attempt: Attempt) -> tuple[str, dict[str, Any]]:
        """The endpoint and the body of one search."""
        body: dict[str, Any] = {
            "model": self.address.model,
            "temperature": attempt.temperature,
            "seed": attempt.seed,
            "search": {
                "strategy": attempt.strategy,
                "budget": attempt.budget,
                "knobs": attempt.knobs,
                "return_candidates": True,
            },
        }
        if prompt_style(task, self.style) == "chat":
            return "/v1/chat/completions", {**body, "messages": [{"role": "user", "content": task.prompt}]}
        return "/v1/completions", {**body, "prompt": task.prompt}

    async def _post(
        self, path: str, body: dict[str, Any], headers: dict[str, str], request_id: str
    ) -> httpx.Response:
        where = f"{self.address.url}{path}"
        try:
            return await self.client.post(path, json=body, headers=headers)
        except httpx.TimeoutException:
            raise ServerError(
                f"{where} did not answer {request_id} within {self.address.timeout_s:g} s "
                "(raise --request-timeout, or lower --concurrency)"
            ) from None
        except httpx.TransportError as error:
            raise ServerError(f"cannot reach {where}: {type(error).__name__}: {error}") from None


def greedy_attempt(task: Task) -> Attempt:
    """`auto` that always keeps its greedy probe: greedy's answer, with the PRM's value of it as `score`."""
    return Attempt(f"eval-greedy-{task.id}", "auto", {"accept": 0.0}, GREEDY_BUDGET, 0.8, 0)


def solved_of(answer: dict[str, Any], style: PromptStyle) -> Solved:
    try:
        choice = answer["choices"][0]
        usage = answer["usage"]
        report = answer["search"]
        details = usage.get("prompt_tokens_details") or {}
        return Solved(
            text=str(choice["message"]["content"] if style == "chat" else choice["text"]),
            candidate_texts=tuple(str(c["text"]) for c in report.get("candidate_texts") or ()),
            generated=int(usage["completion_tokens"]),
            prompt=int(usage["prompt_tokens"]),
            cached=int(details.get("cached_tokens", 0)),
            scored=int(usage.get("scored_tokens", 0)),
            stop_reason=str(report["stop_reason"]),
            cached_scored=int(usage.get("cached_scored_tokens", 0)),
            units=float(usage.get("compute_units", 0.0)),  # at the server's weights
        )
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise ServerError(f"unexpected response shape ({type(error).__name__}: {error}): {answer}") from None


def without_the_probe(solved: Solved, answer: dict[str, Any]) -> Solved:
    """Greedy's cost without the PRM's scoring of it: the server's greedy is auto's probe, which scores
    its solution, while greedy itself (the 1x unit, and in-process) reads no PRM."""
    reported = answer["search"]["cost_weights"]
    # only the PRM's weights matter: the probe's usage holds nothing else
    weights = CostWeights(scored=float(reported["scored"]), cached_scored=float(reported["cached_scored"]))
    probe = weights.units(Usage(scored_tokens=solved.scored, cached_scored_tokens=solved.cached_scored))
    return replace(solved, units=round(solved.units - probe, 3))


def error_message(response: httpx.Response, where: str, request_id: str) -> str:
    """The OpenAI-format error the server sent (`{"error": {"message", "type", "param", "code"}}`)."""
    head = f"{where} answered {response.status_code} to {request_id}"
    try:
        error = response.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        return f"{head}: {response.text[:500]}"
    extra = ", ".join(f"{key} {error[key]}" for key in ("type", "param", "code") if error.get(key))
    return f"{head}: {message}" + (f" ({extra})" if extra else "")


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.1), 30.0)
    except ValueError:
        return 1.0
