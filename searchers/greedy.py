"""Greedy decoding: one temperature-0 solution, the 1x reference every budget is measured against.

Contract: no knobs; one rollout; `stop_reason` is "budget" when the budget cut the solution short.
"""

from __future__ import annotations

from typing import ClassVar

from engines.budget import SearchStopped, StopReason
from searchers.base import (
    Knobs,
    SearchContext,
    SearcherDefaults,
    SearchResult,
    Trace,
    greedy_solution,
    result,
)


class GreedyKnobs(Knobs):
    pass


class Greedy(SearcherDefaults):
    name: ClassVar[str] = "greedy"
    Knobs: ClassVar[type[GreedyKnobs]] = GreedyKnobs

    def needs_prm(self, knobs: GreedyKnobs) -> bool:
        return False

    async def run(self, ctx: SearchContext, knobs: GreedyKnobs) -> SearchResult:
        try:
            trace = await greedy_solution(ctx)
        except SearchStopped as stopped:
            return result(ctx, self.name, Trace(), [], stopped.reason, knobs)
        # cut short of the token limit asked for: the budget lowered it
        asked = ctx.sampling.limit(ctx.policy.spec, until_step=False)
        stop: StopReason = "budget" if trace.truncated and len(trace.token_ids) < asked else "done"
        return result(ctx, self.name, trace, [trace], stop, knobs)
