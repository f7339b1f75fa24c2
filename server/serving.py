"""The serving layer: OpenAI requests in, searches through the controller, OpenAI responses out.

Contract:
- `SearchService` gets the controller, metrics and admission injected (no global state). The model
  name picks the strategy where it carries a suffix (`ponder-default:beam`); else the request's
  `search.strategy`; else the server's default. An unknown model is a 404, bad search settings a 400
  listing the valid ones.
- A chat request renders the chat template once; the prompt travels as token ids from then on. `n`
  runs n searches concurrently, each with the request's budget; usage sums them.
- `completion_tokens` counts every token the policy generated (all candidates), with
  `reasoning_tokens` for those not returned; `prompt_tokens_details.cached_tokens` comes from the
  prefix cache; `scored_tokens` are the PRM's.
- Streaming sends a first chunk at once, search progress as chunks with no choices (the official
  client accepts them) and a `ponder` field, the answer, an optional usage chunk, then `[DONE]`. A
  comment line every `HEARTBEAT_S` without progress notices a departed client, whose search is then
  cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from engines.base import EngineUnavailable, InvalidPrompt, Sampling, gather_or_cancel
from engines.usage import Usage
from searchers.base import SearchResult
from searchers.controller import Controller, InvalidSearch, SearchRequest
from searchers.task_tools import task_tools
from server.admission import Admission
from server.errors import ApiError
from server.metrics import Metrics
from server.protocol import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageOut,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionTokensDetails,
    PromptTokensDetails,
    SearchOptions,
    SearchReport,
    UsageInfo,
)
from tasks.datasets import Task
from verifiers.outcome import grade

log = logging.getLogger("ponder.server")
AnyRequest = ChatCompletionRequest | CompletionRequest
Progress = Callable[[str, dict[str, Any]], None]
HEARTBEAT_S = 0.5


@dataclass(frozen=True)
class Prompt:
    ids: tuple[int, ...]
    text: str  # what task detection and grading read: the prompt, or the last user message


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    result: SearchResult
    report: SearchReport


class SearchService:
    def __init__(
        self, controller: Controller, metrics: Metrics, admission: Admission, model_name: str
    ) -> None:
        self.controller = controller
        self.metrics = metrics
        self.admission = admission
        self.model_name = model_name

    # --- request -> search --------------------------------------------------------------------------
    def strategy_for(self, model: str, options: SearchOptions) -> str | None:
        if model == self.model_name:  # a name may hold ':' itself (qwen2.5-math:1.5b)
            return options.strategy
        base, _, suffix = model.rpartition(":")
        if base != self.model_name or not suffix:
            raise ApiError(
                404,
                f"model {model!r} does not exist; this server serves {self.model_name!r} "
                f"(optionally {self.model_name}:<strategy>)",
                param="model",
                code="model_not_found",
            )
        return suffix

    def engines_healthy(self) -> bool:
        verifier = self.controller.verifier
        return self.controller.policy.is_healthy and (verifier is None or verifier.is_healthy)

    def strategy_name(self, request: AnyRequest) -> str:
        """The strategy this request will run (404 for an unknown model), for logs and metrics."""
        chosen = self.strategy_for(request.model, request.search or SearchOptions())
        return chosen or self.controller.limits.default_strategy

    def chat_prompt(self, request: ChatCompletionRequest) -> Prompt:
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users or not users[-1].strip():
            raise ApiError(400, "messages must include a non-empty user message", param="messages")
        return Prompt(tuple(self.controller.policy.render_chat(messages)), users[-1])

    def completion_prompts(self, request: CompletionRequest) -> list[Prompt]:
        texts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if any(not t.strip() for t in texts):
            raise ApiError(400, "prompt must not be empty", param="prompt")
        return [Prompt(tuple(self.controller.policy.encode(t)), t) for t in texts]

    def search_request(
        self, request: AnyRequest, prompt: Prompt, request_id: str, index: int, progress: Progress | None
    ) -> SearchRequest:
        options = request.search or SearchOptions()
        if request.temperature == 0 and (self.strategy_for(request.model, options) or "") != "greedy":
            raise ApiError(
                400,
                "temperature 0 allows only strategy 'greedy'; search needs samples to choose "
                "from (use temperature > 0)",
                param="temperature",
            )
        limit = request.token_limit()
        sampling = Sampling(
            temperature=request.temperature,
            top_p=request.top_p,
            seed=None if request.seed is None else request.seed + index,
            max_tokens=limit or Sampling().max_tokens,
            max_step_tokens=min(limit or Sampling().max_step_tokens, Sampling().max_step_tokens),
        )
        return SearchRequest(
            prompt_ids=prompt.ids,
            prompt_text=prompt.text,
            request_id=f"{request_id}-{index}",
            strategy=self.strategy_for(request.model, options),
            budget=options.budget,
            knobs=options.knobs,
            aggregation=options.aggregation,
            sampling=sampling,
            timeout_s=options.timeout_s,
            max_verifier_calls=options.max_verifier_calls,
            progress=progress,
        )

    async def answer(
        self,
        request: AnyRequest,
        prompt: Prompt,
        request_id: str,
        index: int,
        progress: Progress | None = None,
    ) -> Answer:
        search = self.search_request(request, prompt, request_id, index, progress)
        try:
            _, _, budget = self.controller.validate(search)
        except InvalidSearch as error:
            raise ApiError(400, str(error), param=error.param, code="invalid_search") from None
        started = time.perf_counter()
        try:
            result = await self.controller.run(search)
        except InvalidPrompt as error:
            raise ApiError(
                400,
                str(error),
                param="messages" if isinstance(request, ChatCompletionRequest) else "prompt",
                code="invalid_prompt",
            ) from None
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
        self.metrics.observe_search(
            result.strategy, result.usage, budget, result.stop_reason, time.perf_counter() - started
        )
        return self.shape(request, prompt, result, budget)

    def shape(self, request: AnyRequest, prompt: Prompt, result: SearchResult, budget: int) -> Answer:
        options = request.search or SearchOptions()
        text, stopped = cut_at_stop(result.text, request.stop)
        finish = "stop" if stopped or result.best.finished else "length"
        correct = None
        if options.reference is not None:
            correct = self.grade(prompt.text, text, options.reference)
            self.metrics.observe_grade(result.strategy, budget, correct)
        report = SearchReport(
            strategy=result.strategy,
            stop_reason=result.stop_reason,
            budget=budget,
            candidates=len(result.candidates),
            score=result.score,
            knobs=result.knobs,
            correct=correct,
            candidate_texts=[
                {"text": c.text, "scores": list(c.scores), "finished": c.finished} for c in result.candidates
            ]
            if options.return_candidates
            else None,
            tree=result.tree if options.return_tree else None,
        )
        return Answer(text, finish, result, report)

    @staticmethod
    def grade(prompt_text: str, completion: str, reference: str) -> bool:
        kind = task_tools(prompt_text).kind
        task = Task(
            "request",
            prompt_text.strip() + "\n",
            reference,
            None,
            "countdown" if kind == "countdown" else "math",
        )
        try:
            return grade(task, completion)
        except ValueError:
            return False

    async def answers(
        self, request: AnyRequest, prompts: list[Prompt], request_id: str, progress: Progress | None = None
    ) -> list[Answer]:
        async with self.admission.slot():
            jobs = [
                self.answer(request, prompt, request_id, p * request.n + i, progress)
                for p, prompt in enumerate(prompts)
                for i in range(request.n)
            ]
            return await gather_or_cancel(jobs)

    # --- responses ----------------------------------------------------------------------------------
    def usage(self, answers: list[Answer]) -> UsageInfo:
        total = sum((a.result.usage for a in answers), Usage())
        returned = sum(len(a.result.best.token_ids) + a.result.best.finished for a in answers)
        return UsageInfo(
            prompt_tokens=total.prompt_tokens,
            completion_tokens=total.generated_tokens,
            total_tokens=total.prompt_tokens + total.generated_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=total.cached_prompt_tokens),
            completion_tokens_details=CompletionTokensDetails(
                reasoning_tokens=max(total.generated_tokens - returned, 0)
            ),
            scored_tokens=total.scored_tokens,
            cached_scored_tokens=total.cached_scored_tokens,
        )

    def chat_response(self, request: ChatCompletionRequest, answers: list[Answer]) -> ChatCompletionResponse:
        choices = [
            ChatChoice(index=i, message=ChatMessageOut(content=a.text), finish_reason=a.finish_reason)
            for i, a in enumerate(answers)
        ]
        reports = [a.report for a in answers]
        return ChatCompletionResponse(
            model=request.model,
            choices=choices,
            usage=self.usage(answers),
            search=reports[0] if len(reports) == 1 else reports,
        )

    def completion_response(self, request: CompletionRequest, answers: list[Answer]) -> CompletionResponse:
        choices = [
            CompletionChoice(index=i, text=a.text, finish_reason=a.finish_reason)
            for i, a in enumerate(answers)
        ]
        reports = [a.report for a in answers]
        return CompletionResponse(
            model=request.model,
            choices=choices,
            usage=self.usage(answers),
            search=reports[0] if len(reports) == 1 else reports,
        )

    # --- streaming ----------------------------------------------------------------------------------
    async def stream(
        self, request: AnyRequest, prompts: list[Prompt], request_id: str, chat: bool
    ) -> AsyncGenerator[str, None]:
        """Server-sent events: a first chunk now, progress while searching, the answer, usage, [DONE]."""
        chunk_id = f"{'chatcmpl' if chat else 'cmpl'}-{request_id}"
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        base = {
            "id": chunk_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": request.model,
        }

        def progress(event: str, details: dict[str, Any]) -> None:
            events.put_nowait({"event": event, **details})

        def sse(body: dict[str, Any]) -> str:
            return f"data: {json.dumps({**base, **body})}\n\n"

        n = len(prompts) * request.n
        if chat:
            yield sse(
                {
                    "choices": [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                            "logprobs": None,
                        }
                        for i in range(n)
                    ]
                }
            )
        task = asyncio.ensure_future(self.answers(request, prompts, request_id, progress))
        try:
            while not task.done():
                getter = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait(
                    {task, getter}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    yield sse({"choices": [], "ponder": getter.result()})
                    continue
                getter.cancel()
                if not done:
                    # An SSE comment (clients ignore it): writing it is how a departed client is noticed.
                    yield ": keep-alive\n\n"
            answers = task.result()
        except ApiError as error:
            detail = {"message": error.message, "type": "invalid_request_error", "param": error.param}
            yield f"data: {json.dumps({'error': {**detail, 'code': error.code}})}\n\n"
            yield "data: [DONE]\n\n"
            return
        finally:
            if not task.done():
                task.cancel()  # the client left: stop the search, which aborts its engine requests
                await asyncio.gather(task, return_exceptions=True)
        for i, a in enumerate(answers):
            if chat:
                yield sse(
                    {
                        "choices": [
                            {
                                "index": i,
                                "delta": {"content": a.text},
                                "finish_reason": None,
                                "logprobs": None,
                            }
                        ]
                    }
                )
                yield sse(
                    {
                        "choices": [
                            {"index": i, "delta": {}, "finish_reason": a.finish_reason, "logprobs": None}
                        ],
                        "search": a.report.model_dump(),
                    }
                )
            else:
                yield sse(
                    {
                        "choices": [
                            {"index": i, "text": a.text, "finish_reason": a.finish_reason, "logprobs": None}
                        ],
                        "search": a.report.model_dump(),
                    }
                )
        if request.stream_options is not None and request.stream_options.include_usage:
            yield sse({"choices": [], "usage": self.usage(answers).model_dump()})
        yield "data: [DONE]\n\n"


def cut_at_stop(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
    """The text up to the first stop sequence (OpenAI leaves the stop sequence out)."""
    stops = [stop] if isinstance(stop, str) else (stop or [])
    cuts = [text.find(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)
