"""Admission control: a bounded number of searches run, a bounded number wait, the rest get 429.

Contract: `async with admission.slot():` runs the body once one of `max_running` slots is free; while
`max_queued` requests already wait, it raises `ApiError(429)` at once (with a Retry-After), so the
queue never grows without bound. The metrics' in-flight and queued gauges follow it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server.errors import ApiError
from server.metrics import Metrics


class Admission:
    def __init__(self, max_running: int, max_queued: int, metrics: Metrics) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.metrics = metrics
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(max_running)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.running >= self.max_running and self.waiting >= self.max_queued:
            raise ApiError(429, "the server is saturated; retry shortly", code="overloaded", retry_after=2)
        self.waiting += 1
        self.metrics.queued.set(self.waiting)
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
            self.metrics.queued.set(self.waiting)
        self.running += 1
        self.metrics.in_flight.set(self.running)
        try:
            yield
        finally:
            self.running -= 1
            self.metrics.in_flight.set(self.running)
            self._slots.release()
