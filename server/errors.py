"""Every error the server returns, in OpenAI's shape, with the right status, type and retry advice.

Contract: `ApiError(status, message, param, code)` is raised anywhere on the request path. It is the one
place an error body is built: `body()` is `{"error": {"message", "type", "param", "code"}}`, sent as
a JSON response by `install_error_handlers` or as the last chunk of a stream, whose status is already
200. The `type` follows the status (`error_type`): 4xx are `invalid_request_error` except 401
`authentication_error`, 403 `permission_error` and 429 `rate_limit_error`; 503 is
`service_unavailable`, any other 5xx `server_error`. Failures that will fail again (4xx except 429)
carry `x-should-retry: false`, so the official client does not repeat an expensive search; 429 and 503
carry `Retry-After`. Validation errors become 400 (never 422), a malformed body 400, anything
unexpected 500 without internals (`internal_error`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.protocol import ErrorDetail, ErrorResponse

log = logging.getLogger("ponder.server")

TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def error_type(status: int) -> str:
    if status in TYPES:
        return TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        retry_after: int = 1,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> ErrorResponse:
        detail = ErrorDetail(
            message=self.message, type=error_type(self.status), param=self.param, code=self.code
        )
        return ErrorResponse(error=detail)

    def headers(self) -> dict[str, str]:
        if self.status in (429, 503):
            return {"Retry-After": str(self.retry_after)}
        if 400 <= self.status < 500:
            return {"x-should-retry": "false"}
        return {}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body().model_dump(), status_code=self.status, headers=self.headers())


def internal_error() -> ApiError:
    """What a client learns of an unexpected failure: that it happened, and where the logs name it."""
    return ApiError(500, "internal error; the request id is in the X-Request-Id header")


def describe_validation(errors: list[Any]) -> tuple[str, str | None]:
    """One readable message and the first offending parameter, from pydantic's error list."""
    parts, param = [], None
    for error in errors:
        location = [str(x) for x in error.get("loc", ()) if x != "body"]
        where = ".".join(location) or "body"
        param = param or (where if location else None)
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")  # pydantic's wrapper
        parts.append(f"{where}: {message}")
    return "; ".join(parts) or "invalid request", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = describe_validation(list(error.errors()))
        return ApiError(400, message, param, "invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return ApiError(error.status_code, str(error.detail)).response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("request %s failed", getattr(request.state, "request_id", "?"))
        return internal_error().response()
