"""Every error the server returns, in OpenAI's shape, with the right status and retry advice.

Contract: `ApiError(status, message, type, param, code)` is raised anywhere on the request path and
rendered by `install_error_handlers` as `{"error": {"message", "type", "param", "code"}}`. Failures
that will fail again (4xx except 429) carry `x-should-retry: false`, so the official client does not
repeat an expensive search; 429 carries `Retry-After`. Validation errors become 400 (never 422), a
malformed body 400, anything unexpected 500 without internals, and a dead engine 503.
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
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


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


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, retry_after: int = 1
) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorDetail(message=message, type=TYPES.get(status, "error"), param=param, code=code)
    )
    headers = {}
    if status == 429 or status == 503:
        headers["Retry-After"] = str(retry_after)
    elif 400 <= status < 500:
        headers["x-should-retry"] = "false"
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def describe_validation(errors: list[Any]) -> tuple[str, str | None]:
    """One readable message and the first offending parameter, from pydantic's error list."""
    parts, param = [], None
    for error in errors:
        location = [str(x) for x in error.get("loc", ()) if x != "body"]
        where = ".".join(location) or "body"
        param = param or (where if location else None)
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.message, error.param, error.code, error.retry_after)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = describe_validation(list(error.errors()))
        return error_response(400, message, param, "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("request %s failed", getattr(request.state, "request_id", "?"))
        return error_response(500, "internal error; the request id is in the X-Request-Id header")
