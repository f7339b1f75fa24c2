"""Which replica of a remote engine serves a call, and what happens when one fails.

Contract: `Replicas(urls, cool_off_s)` holds the base URLs of one engine's replicas (vLLM servers).
- `order(key)` ranks them for a key (a search's request id) by rendezvous hashing: every call of one
  search goes to the same replica (so its prefixes stay in that replica's prefix cache), different
  searches spread evenly, and removing a replica moves only the searches that were on it. Replicas
  marked down go last, so they are tried only when every healthy one has failed.
- `call(key, attempt)` runs `attempt(url)` on the first replica of `order(key)`; a `ReplicaFailure`
  (connection error, 5xx: raised by the adapters) marks that replica down for `cool_off_s` and the
  call moves to the next one. Each replica is tried at most once per call; when all fail the call
  raises `EngineUnavailable`. Any other exception (a 4xx: the request itself is wrong) propagates.
- `healthy` is true while at least one replica is not cooling off; `mark_up`/`mark_down` let a health
  probe correct the picture. After its cool-off a replica is tried again by the next call that ranks it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from engines.base import EngineUnavailable

log = logging.getLogger("ponder.replicas")
T = TypeVar("T")


class ReplicaFailure(Exception):
    """The replica, not the request, failed: retrying the same call elsewhere may succeed."""


def rendezvous_score(key: str, url: str) -> int:
    digest = hashlib.blake2b(f"{key}\0{url}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Replicas:
    def __init__(
        self, urls: Sequence[str], cool_off_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not urls:
            raise ValueError("a remote engine needs at least one replica URL")
        self.urls = [url.rstrip("/") for url in urls]
        if len(set(self.urls)) != len(self.urls):
            raise ValueError(f"duplicate replica URLs: {self.urls}")
        self.cool_off_s = cool_off_s
        self.clock = clock
        self._down_until: dict[str, float] = {}

    def is_up(self, url: str) -> bool:
        return self._down_until.get(url, float("-inf")) <= self.clock()

    @property
    def healthy(self) -> bool:
        return any(self.is_up(url) for url in self.urls)

    def mark_down(self, url: str, reason: str = "") -> None:
        if self.is_up(url):
            log.warning("replica %s is down for %.0f s: %s", url, self.cool_off_s, reason)
        self._down_until[url] = self.clock() + self.cool_off_s

    def mark_up(self, url: str) -> None:
        self._down_until.pop(url, None)

    def order(self, key: str) -> list[str]:
        ranked = sorted(self.urls, key=lambda url: rendezvous_score(key, url), reverse=True)
        return [url for url in ranked if self.is_up(url)] + [url for url in ranked if not self.is_up(url)]

    async def call(self, key: str, attempt: Callable[[str], Awaitable[T]]) -> T:
        failures: list[str] = []
        for url in self.order(key):
            try:
                return await attempt(url)
            except ReplicaFailure as failure:
                self.mark_down(url, str(failure))
                failures.append(f"{url}: {failure}")
        raise EngineUnavailable("no replica could serve the call: " + "; ".join(failures))
