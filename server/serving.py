"""What both OpenAI endpoints share: a request checked once, its searches run, the answers or a stream out.

Contract:
- `SearchServing` gets the controller, the served models, admission and metrics injected (no global
  state). `ServingChat` and `ServingCompletion` add only what differs: how a request becomes prompts,
  which parameter a prompt the engine refuses is blamed on, and how answers become choices and chunks.
- `create(body, raw_request)` is a whole route. `check` makes every check of the server in one place,
  before anything runs or streams: the model (404), the prompts, temperature 0 only with `greedy`, and
  each search's strategy, knobs and budget against the controller (400 listing the valid ones).
- A prompt is rendered once and travels as token ids from then on. `n` runs n searches per prompt
  concurrently under one admission slot, each with the request's budget; `server.answers` shapes
  their results and sums their usage.
- Streaming sends the endpoint's first chunks at once, search progress as chunks with no choices and a
  `ponder` field, the answers, an optional usage chunk, then `[DONE]`. A comment line every
  `HEARTBEAT_S` without progress notices a departed client, whose search is then cancelled. An error
  once the stream has started is its last chunk before `[DONE]`.
- A client that leaves before its whole answer is ready cancels its search too (polled every
  `DISCONNECT_POLL_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Generic, Literal, TypeVar

from fastapi import Request
from pydantic import BaseModel

from engines.base import EngineUnavailable, InvalidPrompt, Sampling, gather_or_cancel
from engines.spec import PolicySpec
from searchers.base import SearchResult
from searchers.controller import Controller, InvalidSearch, SearchRequest
from server import sse
from server.admission import Admission
from server.answers import Answer, shape_answer, usage
from server.errors import ApiError, internal_error
from server.metrics import Metrics
from server.protocol import (
    ProgressChunk,
    SamplingFields,
    SearchOptions,
    StreamChunk,
    UsageChunk,
)
from server.serving_models import ServingModels

log = logging.getLogger("ponder.server")
Body = TypeVar("Body", bound=SamplingFields)
T = TypeVar("T")
Progress = Callable[[str, dict[str, Any]], None]
HEARTBEAT_S = 0.5
DISCONNECT_POLL_S = 0.25


@dataclass(frozen=True)
class Prompt:
    ids: tuple[int, ...]
    text: str  # what task detection and grading read: the prompt, or the last user message


@dataclass(frozen=True)
class Plan:
    """A request that passed every check: the searches it runs and what its answers report."""

    body: SamplingFields
    budget: int
    searches: tuple[SearchRequest, ...]  # n per prompt


class SearchServing(ABC, Generic[Body]):
    kind: ClassVar[str]  # for logs: "chat" or "completion"
    prompt_param: ClassVar[str]  # the parameter a prompt the engine refuses is blamed on
    id_prefix: ClassVar[str]  # of a stream's chunk ids
    chunk_object: ClassVar[Literal["chat.completion.chunk", "text_completion"]]

    def __init__(
        self, controller: Controller, models: ServingModels, admission: Admission, metrics: Metrics
    ) -> None:
        self.controller = controller
        self.models = models
        self.admission = admission
        self.metrics = metrics

    # --- what each endpoint says --------------------------------------------------------------------
    @abstractmethod
    def prompts(self, body: Body) -> list[Prompt]:
        """The request's prompts as token ids (400 for an empty one)."""

    @abstractmethod
    def response(self, body: Body, answers: list[Answer]) -> BaseModel:
        """The whole (non-streamed) response."""

    @abstractmethod
    def first_chunks(self, head: StreamChunk, choices: int) -> list[BaseModel]:
        """What a stream sends before the search has found anything."""

    @abstractmethod
    def answer_chunks(self, head: StreamChunk, index: int, answer: Answer) -> list[BaseModel]:
        """One choice of a stream, once its search is done."""

    # --- the route ----------------------------------------------------------------------------------
    async def create(self, body: Body, raw_request: Request) -> BaseModel | sse.SearchStream:
        request_id: str = raw_request.state.request_id
        requested = self.models.requested_strategy(body.model, body.search or SearchOptions())
        # Set before the other checks, so that a refused request is still counted under its strategy.
        raw_request.state.strategy = requested or self.controller.limits.default_strategy
        plan = self.check(body, requested, request_id)
        if body.stream:
            return sse.SearchStream(self.stream(plan, request_id))
        answers = await until_disconnect(raw_request, self.run(plan))
        log.info("request %s: %s %s", request_id, self.kind, answers[0].report.strategy)
        return self.response(body, answers)

    def check(self, body: Body, requested: str | None, request_id: str) -> Plan:
        """Every check the server makes of a request (after pydantic's), in one place."""
        prompts = self.prompts(body)
        if body.temperature == 0 and requested != "greedy":
            raise ApiError(
                400,
                "temperature 0 allows only strategy 'greedy'; search needs samples to choose "
                "from (use temperature > 0)",
                param="temperature",
            )
        spec = self.controller.policy.spec
        searches = tuple(
            search_request(body, prompt, requested, f"{request_id}-{k}", k, spec)
            for p, prompt in enumerate(prompts)
            for k in range(p * body.n, (p + 1) * body.n)
        )
        budgets = [self.validate(search) for search in searches]  # the same for every search
        return Plan(body, budgets[0], searches)

    def validate(self, search: SearchRequest) -> int:
        """The controller's checks of one search (strategy, knobs, budget, PRM); its budget."""
        try:
            _, _, budget = self.controller.validate(search)
        except InvalidSearch as error:
            raise ApiError(400, str(error), param=error.param, code="invalid_search") from None
        return budget

    # --- running the searches -----------------------------------------------------------------------
    async def run(self, plan: Plan, progress: Progress | None = None) -> list[Answer]:
        async with self.admission.slot():
            return await gather_or_cancel([self.answer(plan, search, progress) for search in plan.searches])

    async def answer(self, plan: Plan, search: SearchRequest, progress: Progress | None) -> Answer:
        started = time.perf_counter()
        result = await self.search(replace(search, progress=progress))
        seconds = time.perf_counter() - started
        weights = self.controller.weights
        units = weights.units(result.usage)
        self.metrics.observe_search(
            result.strategy, result.usage, units, plan.budget, result.stop_reason, seconds
        )
        answer = shape_answer(plan.body, search.prompt_text, result, plan.budget, weights)
        if answer.report.correct is not None:
            self.metrics.observe_grade(result.strategy, plan.budget, answer.report.correct)
        return answer

    async def search(self, request: SearchRequest) -> SearchResult:
        """One search through the controller, its failures as API errors."""
        try:
            return await self.controller.run(request)
        except InvalidPrompt as error:
            raise ApiError(400, str(error), param=self.prompt_param, code="invalid_prompt") from None
        except EngineUnavailable as error:
            # Remote engines: every replica failed this call; they may come back, so the client may retry.
            raise ApiError(
                503, f"no engine replica could serve the request: {error}", code="engine_unavailable"
            ) from error
        except Exception as error:
            if not self.engines_healthy():
                raise ApiError(
                    503, "an engine has died; the server needs a restart", code="engine_dead"
                ) from error
            raise

    def engines_healthy(self) -> bool:
        verifier = self.controller.verifier
        return self.controller.policy.is_healthy and (verifier is None or verifier.is_healthy)

    # --- streaming ----------------------------------------------------------------------------------
    async def stream(self, plan: Plan, request_id: str) -> AsyncGenerator[str, None]:
        """Server-sent events: first chunks now, progress while searching, the answers, usage, [DONE]."""
        head = StreamChunk(
            id=f"{self.id_prefix}-{request_id}",
            object=self.chunk_object,
            created=int(time.time()),
            model=plan.body.model,
        )
        for chunk in self.first_chunks(head, len(plan.searches)):
            yield sse.event(chunk)
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        task = asyncio.ensure_future(
            self.run(plan, lambda name, details: events.put_nowait({"event": name, **details}))
        )
        try:
            while not task.done():
                progress = await next_progress(task, events)
                if progress is not None:
                    yield sse.event(ProgressChunk(**head.model_dump(), ponder=progress))
                elif not task.done():
                    # Clients ignore a comment; writing it is how a departed client is noticed.
                    yield sse.KEEP_ALIVE
            answers = task.result()
        except ApiError as error:
            yield sse.event(error.body()) + sse.DONE  # the status is already 200: the error ends the stream
            return
        except Exception:
            log.exception("request %s failed", request_id)
            yield sse.event(internal_error().body()) + sse.DONE
            return
        finally:
            if not task.done():
                task.cancel()  # the client left: stop the search, which aborts its engine requests
                await asyncio.gather(task, return_exceptions=True)
        for index, answer in enumerate(answers):
            for chunk in self.answer_chunks(head, index, answer):
                yield sse.event(chunk)
        if plan.body.stream_options is not None and plan.body.stream_options.include_usage:
            yield sse.event(UsageChunk(**head.model_dump(), usage=usage(answers, self.controller.weights)))
        yield sse.DONE


def search_request(
    body: SamplingFields, prompt: Prompt, strategy: str | None, search_id: str, index: int, spec: PolicySpec
) -> SearchRequest:
    """One search of a request; the policy's spec bounds its steps and, unless the request does, its
    solutions."""
    options = body.search or SearchOptions()
    limit = body.token_limit()
    sampling = Sampling(
        temperature=body.temperature,
        top_p=body.top_p,
        seed=None if body.seed is None else body.seed + index,
        max_tokens=limit or spec.max_solution_tokens,
        max_step_tokens=min(limit or spec.max_step_tokens, spec.max_step_tokens),
    )
    return SearchRequest(
        prompt_ids=prompt.ids,
        prompt_text=prompt.text,
        request_id=search_id,
        strategy=strategy,
        budget=options.budget,
        knobs=options.knobs,
        aggregation=options.aggregation,
        sampling=sampling,
        timeout_s=options.timeout_s,
        max_verifier_calls=options.max_verifier_calls,
    )


async def next_progress(
    task: asyncio.Future[Any], events: asyncio.Queue[dict[str, Any]]
) -> dict[str, Any] | None:
    """The next progress event; None once the task is done or `HEARTBEAT_S` passed without one."""
    getter = asyncio.ensure_future(events.get())
    done, _ = await asyncio.wait({task, getter}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    return None


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it (and so its search and engine requests) if the client goes away."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ApiError(499, "client closed the request")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
