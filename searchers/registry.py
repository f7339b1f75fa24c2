"""The strategies a server offers, by name.

Contract: `default_searchers()` returns a fresh `{name: searcher}` map of every built-in strategy;
`auto` is given the others to choose among.
"""

from __future__ import annotations

from searchers.auto import Auto, AutoTable
from searchers.base import Searcher
from searchers.beam import Beam
from searchers.best_of_n import BestOfN
from searchers.greedy import Greedy
from searchers.mcts import MCTS
from searchers.particle_filter import ParticleFilter
from searchers.revision import Revision


def default_searchers(auto_table: AutoTable | None = None) -> dict[str, Searcher]:
    searchers: list[Searcher] = [
        Greedy(),
        BestOfN(),
        Beam(),
        Beam(diverse=True),
        MCTS(),
        ParticleFilter(),
        Revision(),
    ]
    named = {s.name: s for s in searchers}
    named["auto"] = Auto(dict(named), auto_table)
    return named
