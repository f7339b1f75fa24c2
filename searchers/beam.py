"""PRM-guided step-level beam search, and diverse verifier tree search (DVTS).

Contract (the published recipe's semantics):
- Knobs: `beams` N (None: as many as the budget affords for a whole search),
  `expansions` M per kept beam, `max_depth` in steps.
- Round 0 samples N first steps. Each round the PRM scores every new step (one verifier call), finished
  solutions are set aside, the N/M best unfinished beams by PRM value are kept, and each is expanded M
  times (one engine call for all), so N candidates are always in flight.
- DVTS (`Beam(diverse=True)`, strategy `dvts`) splits the N first steps into N/M independent subtrees
  and keeps only the best beam of each: less pruning of the lone promising path, more diversity.
- The answer is the best finished solution by `ctx.aggregation`. Never below greedy
  (`never_below_greedy`): a budget too small for one beam's whole path and a greedy completion gets the
  greedy solution; otherwise N is sized on the budget less one greedy completion, held back until a
  beam finishes, and a search stopped (budget, depth) before any did rolls its best partial beam out
  at temperature 0. A deadline stop returns the best partial one as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from engines.budget import Hold, SearchStopped, StopReason
from searchers.base import (
    COST_MARGIN,
    Knobs,
    SearchContext,
    SearcherDefaults,
    SearchResult,
    Trace,
    best_by_value,
    never_below_greedy,
    result,
    score,
    stepwise_path_cost,
    value,
)


class BeamKnobs(Knobs):
    beams: int | None = Field(None, ge=1, le=256, description="N; None: as many as the budget affords")
    expansions: int = Field(4, ge=1, le=64, description="M: samples per kept beam each step")
    max_depth: int = Field(40, ge=1, le=200, description="steps before the search gives up")


@dataclass(frozen=True)
class Branch:
    trace: Trace
    group: int  # the subtree (DVTS) it belongs to; always 0 for plain beam search


class Beam(SearcherDefaults):
    Knobs: ClassVar[type[BeamKnobs]] = BeamKnobs

    def __init__(self, diverse: bool = False) -> None:
        self.diverse = diverse
        self.name = "dvts" if diverse else "beam"

    def needs_prm(self, knobs: BeamKnobs) -> bool:
        return True

    async def run(self, ctx: SearchContext, knobs: BeamKnobs) -> SearchResult:
        path = stepwise_path_cost(ctx) * COST_MARGIN
        return await never_below_greedy(
            ctx, self.name, knobs, path, True, lambda hold: self.search(ctx, knobs, hold)
        )

    async def search(self, ctx: SearchContext, knobs: BeamKnobs, hold: Hold) -> SearchResult:
        n = knobs.beams or affordable_beams(ctx, knobs.expansions)
        m = min(knobs.expansions, n)
        finished: list[Trace] = []
        frontier: list[Branch] = []
        stop: StopReason = "done"
        try:
            frontier = await self.first_steps(ctx, n, m)
            frontier = await scored(ctx, frontier)
            for depth in range(1, knobs.max_depth):
                finished += [b.trace for b in frontier if b.trace.ended]
                if any(t.finished for t in finished):
                    hold.release()  # an answer is in hand: the fallback's tokens may go to the search
                kept = self.keep(ctx, [b for b in frontier if not b.trace.ended], n, m)
                ctx.report("step", depth=depth, finished=len(finished), beams=len(kept))
                if not kept:
                    break
                frontier = await self.expand(ctx, kept, m, depth)
                frontier = await scored(ctx, frontier)
        except SearchStopped as stopped:
            stop = stopped.reason  # an unscored frontier stays: its finished solutions are still answers
        candidates = finished + [b.trace for b in frontier if b.trace not in finished]
        if not candidates:
            return result(ctx, self.name, Trace(), [], stop, knobs)
        return result(ctx, self.name, best_by_value(candidates, ctx.aggregation), candidates, stop, knobs)

    async def first_steps(self, ctx: SearchContext, n: int, m: int) -> list[Branch]:
        generation = await ctx.policy.expand([ctx.prompt_ids], n, ctx.seeded(0))
        traces = [ctx.grow(Trace(), c) for c in generation.continuations[0]]
        # DVTS: consecutive groups of M first steps form the N/M subtrees
        return [Branch(t, i // m if self.diverse else 0) for i, t in enumerate(traces)]

    def keep(self, ctx: SearchContext, live: list[Branch], n: int, m: int) -> list[Branch]:
        """The best N/M beams (plain), or the best beam of each subtree (DVTS)."""
        ranked = sorted(live, key=lambda b: value(b.trace, ctx.aggregation), reverse=True)
        if not self.diverse:
            return ranked[: max(n // m, 1)]
        best: dict[int, Branch] = {}
        for beam in ranked:
            best.setdefault(beam.group, beam)
        return list(best.values())

    async def expand(self, ctx: SearchContext, kept: list[Branch], m: int, depth: int) -> list[Branch]:
        generation = await ctx.policy.expand([ctx.prefix(b.trace) for b in kept], m, ctx.seeded(depth))
        return [
            Branch(ctx.grow(beam.trace, c), beam.group)
            for beam, row in zip(kept, generation.continuations, strict=True)
            for c in row
        ]


async def scored(ctx: SearchContext, branches: list[Branch]) -> list[Branch]:
    """The branches with PRM scores, in one verifier call."""
    traces = await score(ctx, [b.trace for b in branches])
    return [Branch(t, b.group) for t, b in zip(traces, branches, strict=True)]


def affordable_paths(ctx: SearchContext) -> int:
    """The most step-level paths whose whole search fits the budget, with a margin for longer steps (at
    least 1, at most 256): beam's N before rounding, and the particle filter's particle count."""
    return max(1, min(256, int(ctx.budget.remaining // (stepwise_path_cost(ctx) * COST_MARGIN))))


def affordable_beams(ctx: SearchContext, expansions: int) -> int:
    """The most beams N whose whole search fits the budget (`affordable_paths`), rounded down to a
    multiple of M once it exceeds M, so the N/M kept beams' expansions are N again. Not rounded to a
    power of two: the rest of a budget between two powers would go unspent."""
    n = affordable_paths(ctx)
    return n - n % expansions if n > expansions else n
