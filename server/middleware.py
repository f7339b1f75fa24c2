"""The pure ASGI middleware every request passes: request ids, the API key on /v1, the request counter.

Contract: `RequestContext` gives each request an id (the client's `X-Request-Id`, or a new one) in
`scope["state"]` and on every response; with an API key set, `/v1/*` needs `Authorization: Bearer
<key>` (compared in constant time) and answers 401 otherwise, while `/health` and `/metrics` stay
open; each `POST /v1/*` is counted by path, strategy (which the serving layer puts in the state) and
status. It is not `@app.middleware`: BaseHTTPMiddleware hides the client's disconnect from streaming
responses, and a departed client's search must stop.
"""

from __future__ import annotations

import hmac
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError
from server.metrics import Metrics


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics, api_key: str | None) -> None:
        self.app = app
        self.metrics = metrics
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
            denied = ApiError(
                401, "invalid or missing API key (Authorization: Bearer ...)", code="invalid_api_key"
            )
            await denied.response()(scope, receive, send_with_id)
        else:
            await self.app(scope, receive, send_with_id)
        if path.startswith("/v1/") and scope["method"] == "POST":
            strategy = state.get("strategy") or "unknown"
            self.metrics.requests.labels(path, strategy, str(status)).inc()


def authorized(headers: dict[str, str], api_key: str) -> bool:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())
