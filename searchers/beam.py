"""PRM-guided step-level beam search, and diverse verifier tree search (DVTS).

Contract (the published recipe's semantics):
- Knobs: `beams` N (None: as many as the budget affords for a whole search),
  `expansions` M per kept beam, `max_depth` in steps.
- Round 0 samples N first steps. Each round the PRM scores every new step (one verifier call), finished
  solutions are set aside, the N/M best unfinished beams by PRM value are kept, and each is expanded M
  times (one engine call for all), so N candidates are always in flight.
- DVTS (`Beam(diverse=True)`, strategy `dvts`) splits the N first steps into N/M independent subtrees
  and keeps only the best beam of each: less pruning of the lone promising path, more diversity.
- Without N the budget sets the width and the search runs in passes (`in_passes`): the first is sized
  at a path's uncached price, and while budget is left each next one is sized at what a path really
  cost (the prefix caches serve much of it), on new seeds. N given: one pass.
- The answer is the best finished solution of every pass by `ctx.aggregation`. Never below greedy
  (`never_below_greedy`): the greedy solution is drawn and scored first; a budget that cannot pay for
  one beam's whole path after it gets the greedy solution, and otherwise it is a candidate, the answer
  where the PRM values it above the search's. A deadline stop returns at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from pydantic import Field

from engines.base import derived_seed
from engines.budget import Hold, SearchStopped, StopReason
from searchers.base import (
    COST_MARGIN,
    PartialSearchKnobs,
    SearchContext,
    SearcherDefaults,
    SearchResult,
    Trace,
    answer_score,
    best_by_value,
    distinct,
    never_below_greedy,
    result,
    score,
    stepwise_path_cost,
    value,
)


class BeamKnobs(PartialSearchKnobs):
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
        def width(path_units: float | None) -> int:
            return affordable_beams(ctx, knobs.expansions, path_units)

        return await in_passes(
            ctx, knobs.beams, width, lambda pass_ctx, n: self.one_pass(pass_ctx, knobs, hold, n)
        )

    async def one_pass(self, ctx: SearchContext, knobs: BeamKnobs, hold: Hold, n: int) -> SearchResult:
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


# --- width and passes ----------------------------------------------------------------------------


def affordable_paths(ctx: SearchContext, path_units: float | None = None) -> int:
    """The most step-level paths whose whole search fits what is left, with a margin (at most 256): beam's
    N before rounding, and the particle filter's particle count. A path is priced at `path_units` where
    earlier passes measured it, else at its uncached price (`stepwise_path_cost`). May be 0."""
    price = stepwise_path_cost(ctx) if path_units is None else max(path_units, 1.0)
    return max(0, min(256, int(ctx.budget.remaining // (price * COST_MARGIN))))


def affordable_beams(ctx: SearchContext, expansions: int, path_units: float | None = None) -> int:
    """The most beams N whose whole search fits the budget (`affordable_paths`), rounded down to a
    multiple of M once it exceeds M, so the N/M kept beams' expansions are N again. Not rounded to a
    power of two: the rest of a budget between two powers would go unspent."""
    n = affordable_paths(ctx, path_units)
    return n - n % expansions if n > expansions else n


async def in_passes(
    ctx: SearchContext,
    fixed_width: int | None,
    width: Callable[[float | None], int],
    one_pass: Callable[[SearchContext, int], Awaitable[SearchResult]],
) -> SearchResult:
    """A step-level search whose width the budget sets, run again on what its passes leave.

    The first pass is as wide as `width(None)` (paths at their uncached price; at least 1). The prefix
    caches serve much of a step-level path (each step re-sends its prefix to both models), so a pass
    spends less than it planned: while the last pass ended "done" and the rest affords one more path at
    the units a path really took so far (`width(units per path)`), another pass runs, on its own seeds.
    A fixed width (the request's N) runs once. The answer is the best solution of every pass
    (`best_by_value` over their distinct candidates); the stop reason is the last pass's."""
    passes: list[SearchResult] = []
    paths, spent = 0, 0.0
    while True:
        n = fixed_width or (width(spent / paths) if passes else max(width(None), 1))
        if n < 1:
            break
        if passes:
            ctx.report("pass", index=len(passes), width=n, units_per_path=round(spent / paths, 2))
        start = ctx.budget.used
        passes.append(await one_pass(pass_context(ctx, len(passes)), n))
        paths, spent = paths + n, spent + ctx.budget.used - start
        if fixed_width is not None or passes[-1].stop_reason != "done":
            break
    return merged(ctx, passes)


def pass_context(ctx: SearchContext, index: int) -> SearchContext:
    """The context of pass `index`: the request's own for the first, new seeds (where it has one) after."""
    seed = ctx.sampling.seed
    if index == 0 or seed is None:
        return ctx
    return replace(ctx, sampling=replace(ctx.sampling, seed=derived_seed(seed, 104_729, index)))


def merged(ctx: SearchContext, passes: Sequence[SearchResult]) -> SearchResult:
    last = passes[-1]
    candidates = distinct(c for found in passes for c in found.candidates)
    if len(passes) == 1 or not candidates:
        return last
    best = best_by_value(candidates, ctx.aggregation)
    return replace(
        last, best=best, candidates=candidates, usage=ctx.budget.spent, score=answer_score(ctx, best)
    )
