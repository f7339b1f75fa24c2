"""JSON over HTTP to the replicas of one remote vLLM server, with fail-over and cancellable calls.

Contract: `RemoteClient(urls, ...)` posts a JSON body to a path on the replica `Replicas` picks for a
key and returns the decoded JSON reply. A connection error, a timeout while connecting or a 5xx is a
`ReplicaFailure` (the call moves to another replica); a 4xx raises `RemoteError` with the server's
message. Calls run as tasks tracked under their group (a search's request id): `cancel(group)` cancels
them, which closes their HTTP connections, and vLLM's server aborts a request whose client left.
`probe()` asks every replica's `/health` and marks it up or down; `healthy` reads the last picture.
Nothing blocks the event loop: the httpx client is async and made in the loop that first uses it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import httpx

from engines.replicas import ReplicaFailure, Replicas

T = TypeVar("T")


class RemoteError(RuntimeError):
    """The replica refused the request itself (4xx): another replica would refuse it too."""


class RemoteClient:
    def __init__(
        self,
        urls: Sequence[str],
        cool_off_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 1024,
        transport: httpx.AsyncBaseTransport | None = None,  # tests: httpx.MockTransport
    ) -> None:
        self.replicas = Replicas(urls, cool_off_s)
        self.transport = transport
        # No read timeout: a long generation under load is normal; deadlines are the Budget's job.
        self.timeout = httpx.Timeout(None, connect=connect_timeout_s)
        # One connection per in-flight request (HTTP/1.1): beam search fans out to hundreds at once.
        # Idle connections are dropped before vLLM's uvicorn drops them (VLLM_HTTP_TIMEOUT_KEEP_ALIVE, 5 s),
        # so a request is rarely sent on a connection the server is closing.
        self.limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=256, keepalive_expiry=3.0
        )
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[str, set[asyncio.Task[Any]]] = defaultdict(set)
        self._cancelled: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    @property
    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A client's connection pool belongs to one event loop (tests and servers may run several).
            self._client = httpx.AsyncClient(
                timeout=self.timeout, limits=self.limits, transport=self.transport
            )
            self._loop = loop
        return self._client

    @property
    def healthy(self) -> bool:
        return self.replicas.healthy

    async def post(self, key: str, path: str, body: dict[str, Any]) -> Any:
        async def attempt(url: str) -> Any:
            try:
                try:
                    response = await self.client.post(url + path, json=body)
                except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                    # Most often a kept-alive connection the server closed as we sent: try once more
                    # on a fresh one. A replica that really died refuses that connection at once.
                    response = await self.client.post(url + path, json=body)
            except httpx.TransportError as error:  # connect/read errors and timeouts
                raise ReplicaFailure(f"{type(error).__name__}: {error}") from error
            if response.status_code >= 500:
                raise ReplicaFailure(f"HTTP {response.status_code}: {response.text[:200]}")
            if response.status_code >= 400:
                raise RemoteError(f"{url}{path} refused the request: {response.text[:500]}")
            return response.json()

        return await self.replicas.call(key, attempt)

    def track(self, group: str, call: Awaitable[T]) -> asyncio.Task[T]:
        """Run `call` as a task that `cancel(group)` can reach."""
        task = asyncio.ensure_future(call)
        running = self._running[group]
        running.add(task)

        def forget(done: asyncio.Task[Any]) -> None:
            running.discard(done)
            if not running and self._running.get(group) is running:
                del self._running[group]

        task.add_done_callback(forget)
        return task

    def cancel(self, group: str) -> list[asyncio.Task[Any]]:
        tasks = list(self._running.pop(group, ()))
        for task in tasks:
            self._cancelled.add(task)
            task.cancel()
        return tasks

    def cancelled_by_group(self) -> bool:
        """Whether the running task was cancelled by `cancel(group)` (an abort), not from outside."""
        task = asyncio.current_task()
        return task is not None and task in self._cancelled

    def inflight(self) -> int:
        return sum(len(tasks) for tasks in self._running.values())

    async def probe(self, timeout_s: float = 2.0) -> dict[str, bool]:
        async def one(url: str) -> bool:
            try:
                response = await self.client.get(url + "/health", timeout=timeout_s)
                up = response.status_code == 200
            except httpx.HTTPError:
                up = False
            if up:
                self.replicas.mark_up(url)
            else:
                self.replicas.mark_down(url, "health probe failed")
            return up

        results = await asyncio.gather(*(one(url) for url in self.replicas.urls))
        return dict(zip(self.replicas.urls, results, strict=True))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
