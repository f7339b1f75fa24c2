"""Which engine requests belong to which search, so one call can abort them all.

Contract: `InflightRequests.track(group)` is a context manager that yields a fresh engine request id
under `group` (a search's request id) and forgets it when the request ends; `take(group)` returns and
forgets every id still running under `group` (what to pass to the engine's abort).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class InflightRequests:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._ids = itertools.count()
        self._running: dict[str, set[str]] = defaultdict(set)

    @contextmanager
    def track(self, group: str) -> Iterator[str]:
        request_id = f"{group}-{self.kind}-{next(self._ids)}"
        self._running[group].add(request_id)
        try:
            yield request_id
        finally:
            running = self._running.get(group)
            if running is not None:
                running.discard(request_id)
                if not running:
                    del self._running[group]

    def take(self, group: str) -> list[str]:
        return sorted(self._running.pop(group, ()))

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._running.values())
