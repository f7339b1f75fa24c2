"""The HTTP routes: each hands its request to a serving object and returns what it says.

Contract: `api_router(chat, completion, models, health, metrics)` returns an `APIRouter` holding only
what it is given: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`, `GET /health`
(the engines' health, after `health()` probed them, which may be async; 503 once an engine died or no
replica of a remote engine answers) and `GET /metrics` (Prometheus' text format).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from server.metrics import Metrics
from server.protocol import ChatCompletionRequest, CompletionRequest, ModelList
from server.serving_chat import ServingChat
from server.serving_completion import ServingCompletion
from server.serving_models import ServingModels
from server.sse import SearchStream

Health = Callable[[], dict[str, bool] | Awaitable[dict[str, bool]]]


def api_router(
    chat: ServingChat,
    completion: ServingCompletion,
    models: ServingModels,
    health: Health,
    metrics: Metrics,
) -> APIRouter:
    router = APIRouter()
    # Each route keeps the name it had when it lived in server/app.py, so the OpenAPI document's
    # operation ids (which clients may generate code from) stay as they were.

    @router.post("/v1/chat/completions", response_model=None, name="chat")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> BaseModel | SearchStream:
        return await chat.create(body, request)

    @router.post("/v1/completions", response_model=None, name="completions")
    async def completions(body: CompletionRequest, request: Request) -> BaseModel | SearchStream:
        return await completion.create(body, request)

    @router.get("/v1/models", name="models")
    async def list_models() -> ModelList:
        return models.model_list()

    @router.get("/health", name="healthz")
    async def healthz() -> JSONResponse:
        checked = health()
        # Remote engines ask their replicas (async); in-process ones answer at once.
        engines = await checked if inspect.isawaitable(checked) else checked
        for name, up in engines.items():
            metrics.engine_up.labels(name).set(1 if up else 0)
        ok = all(engines.values())
        return JSONResponse(
            {"status": "ok" if ok else "engine down", "engines": engines}, status_code=200 if ok else 503
        )

    @router.get("/metrics", name="metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return router
