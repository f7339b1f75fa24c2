"""Server-sent events: how a stream's chunks go on the wire, and the response that carries them.

Contract: `event(chunk)` frames one pydantic chunk as a `data:` event (`model_dump_json`, one line);
`KEEP_ALIVE` is a comment event, which clients ignore; `DONE` ends an OpenAI stream. `SearchStream`
sends an async generator of those as `text/event-stream` and closes the generator however the
response ends, so a departed client's search is cancelled at once.

The framing is these three lines, not a library's: FastAPI's `fastapi.sse` frames only path operations
that are themselves generators (ours answer JSON or a stream depending on `stream`, and refuse a bad
request with a JSON error before any stream starts), and it pings on a fixed module-wide timer
(15 s), not on our `HEARTBEAT_S` without progress. sse-starlette hooks uvicorn's exit signal and cancels
open streams at shutdown, where ours finish within the graceful-shutdown time like any request.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

KEEP_ALIVE = ": keep-alive\n\n"
DONE = "data: [DONE]\n\n"


def event(chunk: BaseModel) -> str:
    return f"data: {chunk.model_dump_json()}\n\n"


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
