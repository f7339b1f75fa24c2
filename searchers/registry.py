"""The strategies a server offers, by name.

Contract: `default_searchers()` returns a fresh `{name: searcher}` map of every built-in strategy;
`auto` is given the others to choose among.
"""

from __future__ import annotations

from searchers.base import Searcher
from searchers.best_of_n import BestOfN
from searchers.greedy import Greedy


def default_searchers() -> dict[str, Searcher]:
    searchers: list[Searcher] = [Greedy(), BestOfN()]
    return {s.name: s for s in searchers}
