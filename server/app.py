"""The FastAPI application: thin routes over `SearchService`, request ids, auth, health and metrics.

Contract: `build_app(service, health, api_key)` returns an app holding no global state; everything it
uses is injected. Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
`GET /health` (503 once an engine died, or no replica of a remote engine answers; `health` may be
async), `GET /metrics`. Every response carries `X-Request-Id` (the client's, or a new one). With an
API key set, `/v1/*` needs `Authorization: Bearer <key>` (compared in constant time); `/health` and
`/metrics` stay open. A client that disconnects cancels its search.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError, error_response, install_error_handlers
from server.protocol import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList
from server.serving import SearchService

log = logging.getLogger("ponder.server")
T = TypeVar("T")
DISCONNECT_POLL_S = 0.25


def build_app(
    service: SearchService,
    health: Callable[[], dict[str, bool] | Awaitable[dict[str, bool]]],
    api_key: str | None = None,
) -> FastAPI:
    app = FastAPI(title="Ponder", version="0.1.0", description="Inference-time search behind an OpenAI API.")
    install_error_handlers(app)
    # A pure ASGI middleware, not @app.middleware: BaseHTTPMiddleware hides the client's disconnect
    # from streaming responses, and a departed client's search must stop.
    app.add_middleware(RequestContext, service=service, api_key=api_key)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest, request: Request) -> Any:
        request.state.strategy = service.strategy_name(body)
        prompt = service.chat_prompt(body)
        rid = request.state.request_id
        if body.stream:
            return SearchStream(service.stream(body, [prompt], rid, chat=True))
        answers = await until_disconnect(request, service.answers(body, [prompt], rid))
        log.info("request %s: chat %s", rid, answers[0].report.strategy)
        return service.chat_response(body, answers)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        request.state.strategy = service.strategy_name(body)
        prompts = service.completion_prompts(body)
        rid = request.state.request_id
        if body.stream:
            return SearchStream(service.stream(body, prompts, rid, chat=False))
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
        checked = health()
        # Remote engines ask their replicas (async); in-process ones answer at once.
        engines = await checked if inspect.isawaitable(checked) else checked
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


class RequestContext:
    """Request ids (X-Request-Id in and out), the API key on /v1, and the request counter."""

    def __init__(self, app: ASGIApp, service: SearchService, api_key: str | None) -> None:
        self.app = app
        self.service = service
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        path = scope["path"]
        if self.api_key is not None and path.startswith("/v1/") and not authorized(headers, self.api_key):
            denied = error_response(
                401, "invalid or missing API key (Authorization: Bearer ...)", code="invalid_api_key"
            )
            await denied(scope, receive, send_with_id)
        else:
            await self.app(scope, receive, send_with_id)
        if path.startswith("/v1/") and scope["method"] == "POST":
            strategy = state.get("strategy") or "unknown"
            self.service.metrics.requests.labels(path, strategy, str(status)).inc()


class SearchStream(StreamingResponse):
    """Server-sent events that close their generator however the response ends.

    Starlette cancels a stream whose client left but does not close its generator: one that was
    suspended at a `yield` (waiting on the socket) would keep its search running until garbage
    collection. Closing it runs the generator's `finally`, which cancels the search now.
    """

    def __init__(self, events: AsyncGenerator[str, None]) -> None:
        super().__init__(events, media_type="text/event-stream")
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.events.aclose()


def authorized(headers: dict[str, str], api_key: str) -> bool:
    scheme, _, token = headers.get("authorization", "").partition(" ")
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
