"""The FastAPI application: thin routes over `SearchService`, request ids, auth, health and metrics.

Contract: `build_app(service, health, api_key)` returns an app holding no global state; everything it
uses is injected. Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
`GET /health` (503 once an engine died), `GET /metrics`. Every response carries `X-Request-Id` (the
client's, or a new one). With an API key set, `/v1/*` needs `Authorization: Bearer <key>` (compared in
constant time); `/health` and `/metrics` stay open. A client that disconnects cancels its search.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from server.errors import ApiError, error_response, install_error_handlers
from server.protocol import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList
from server.serving import SearchService

log = logging.getLogger("ponder.server")
T = TypeVar("T")
DISCONNECT_POLL_S = 0.25


def build_app(
    service: SearchService, health: Callable[[], dict[str, bool]], api_key: str | None = None
) -> FastAPI:
    app = FastAPI(title="Ponder", version="0.1.0", description="Inference-time search behind an OpenAI API.")
    install_error_handlers(app)

    @app.middleware("http")
    async def request_ids(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = request_id
        if api_key is not None and request.url.path.startswith("/v1/") and not authorized(request, api_key):
            response: Response = error_response(
                401, "invalid or missing API key (Authorization: Bearer ...)", code="invalid_api_key"
            )
        else:
            response = await call_next(request)
        response.headers["X-Request-Id"] = request_id
        if request.url.path.startswith("/v1/") and request.method == "POST":
            strategy = getattr(request.state, "strategy", None) or "unknown"
            service.metrics.requests.labels(request.url.path, strategy, str(response.status_code)).inc()
        return response

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest, request: Request) -> Any:
        request.state.strategy = service.strategy_name(body)
        prompt = service.chat_prompt(body)
        rid = request.state.request_id
        if body.stream:
            return StreamingResponse(
                service.stream(body, [prompt], rid, chat=True), media_type="text/event-stream"
            )
        answers = await until_disconnect(request, service.answers(body, [prompt], rid))
        log.info("request %s: chat %s", rid, answers[0].report.strategy)
        return service.chat_response(body, answers)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        request.state.strategy = service.strategy_name(body)
        prompts = service.completion_prompts(body)
        rid = request.state.request_id
        if body.stream:
            return StreamingResponse(
                service.stream(body, prompts, rid, chat=False), media_type="text/event-stream"
            )
        answers = await until_disconnect(request, service.answers(body, prompts, rid))
        log.info("request %s: completion %s", rid, answers[0].report.strategy)
        return service.completion_response(body, answers)

    @app.get("/v1/models")
    async def models() -> ModelList:
        names = [service.model_name] + [
            f"{service.model_name}:{s}" for s in sorted(service.controller.searchers)
        ]
        return ModelList(data=[ModelCard(id=name) for name in names])

    @app.get("/health")
    async def healthz() -> JSONResponse:
        engines = health()
        for name, up in engines.items():
            service.metrics.engine_up.labels(name).set(1 if up else 0)
        ok = all(engines.values())
        return JSONResponse(
            {"status": "ok" if ok else "engine down", "engines": engines}, status_code=200 if ok else 503
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    return app


def authorized(request: Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


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
