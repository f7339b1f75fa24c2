"""Best-of-N: sample whole solutions, pick one by PRM, by vote, by PRM-weighted vote, or by an outcome check.

Contract:
- Knobs: `n` (None: as many as the budget affords), `select` (prm | vote | weighted_vote | outcome),
  `adaptive` (stop sampling once the vote is decided: adaptive consistency), `round_size`,
  `confidence`.
- Samples are drawn in as few engine calls as possible: without `n` a first round of `round_size`
  measures what a sample really costs, then the rest of the budget goes out in one call. With
  `adaptive` it samples `round_size` at a time and stops when P(leading answer is the majority) ≥
  `confidence` under a uniform prior on the two leading answers' shares.
- `vote` is self-consistency (the answer most samples commit to; `ctx.answer_of`), `weighted_vote`
  sums PRM values per answer, `outcome` takes the first sample the environment verifier accepts.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from engines.budget import SearchStopped, StopReason
from searchers.base import (
    COST_MARGIN,
    Knobs,
    SearchContext,
    SearchResult,
    Trace,
    best_by_value,
    result,
    score,
    value,
)

Selection = Literal["prm", "vote", "weighted_vote", "outcome"]


class BestOfNKnobs(Knobs):
    n: int | None = Field(None, ge=1, le=1024, description="samples; None: as many as the budget affords")
    select: Selection = "prm"
    adaptive: bool = Field(False, description="stop once the vote is decided (vote / weighted_vote)")
    round_size: int = Field(4, ge=1, le=256)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)


class BestOfN:
    name: ClassVar[str] = "best_of_n"
    Knobs: ClassVar[type[BestOfNKnobs]] = BestOfNKnobs

    def needs_prm(self, knobs: BestOfNKnobs) -> bool:
        return knobs.select in ("prm", "weighted_vote")

    def needs_checker(self, knobs: BestOfNKnobs) -> bool:
        return knobs.select == "outcome"

    async def run(self, ctx: SearchContext, knobs: BestOfNKnobs) -> SearchResult:
        if knobs.select == "outcome" and ctx.checker is None:
            raise ValueError("select=outcome needs a task with an environment verifier")
        traces, stop = await self.sample(ctx, knobs)
        if not traces:
            return result(ctx, self.name, Trace(), [], stop, knobs)
        return result(ctx, self.name, select(ctx, traces, knobs.select), traces, stop, knobs)

    async def sample(self, ctx: SearchContext, knobs: BestOfNKnobs) -> tuple[list[Trace], StopReason]:
        needs_prm = self.needs_prm(knobs)
        cost = sample_cost(ctx, ctx.hints.solution_tokens, needs_prm)
        traces: list[Trace] = []
        round_index = 0
        try:
            while True:
                want = self.round_size(ctx, knobs, len(traces), round_index, cost)
                if want <= 0:
                    break
                generation = await ctx.policy.rollout([ctx.prompt_ids], want, ctx.seeded(round_index))
                new = [ctx.grow(Trace(), c) for c in generation.continuations[0]]
                traces += new  # kept even if scoring them is refused: unscored answers still count
                if needs_prm:
                    traces[-len(new) :] = await score(ctx, new)
                mean_tokens = generation.usage.generated_tokens / want
                cost = sample_cost(ctx, mean_tokens, needs_prm)
                ctx.report("samples", count=len(traces))
                round_index += 1
                if knobs.adaptive and vote_decided(votes(ctx, traces), knobs.confidence):
                    return traces, "done"
        except SearchStopped as stopped:
            return traces, stopped.reason
        # Without `n` (or short of it) the budget is what ended the sampling.
        return traces, "done" if knobs.n is not None and len(traces) >= knobs.n else "budget"

    @staticmethod
    def round_size(ctx: SearchContext, knobs: BestOfNKnobs, drawn: int, round_index: int, cost: float) -> int:
        affordable = int(ctx.budget.remaining // (cost * COST_MARGIN))
        if drawn == 0:
            affordable = max(affordable, 1)  # always try one answer; the adapter cuts it to the budget
        want = affordable if knobs.n is None else min(affordable, knobs.n - drawn)
        if knobs.adaptive or (knobs.n is None and round_index == 0):
            return min(want, knobs.round_size)
        return want


def sample_cost(ctx: SearchContext, solution_tokens: float, scored: bool) -> float:
    """Budget tokens one sample takes: its generation, plus the PRM reading prompt and solution."""
    scoring = len(ctx.prompt_ids) + solution_tokens * 1.1 if scored else 0.0
    return max(solution_tokens + scoring, 1.0)


def votes(ctx: SearchContext, traces: Sequence[Trace]) -> Counter[str]:
    return Counter(a for t in traces if t.finished and (a := ctx.answer_of(t.text)) is not None)


def vote_decided(counts: Counter[str], confidence: float) -> bool:
    """P(the leader's share beats the runner-up's) ≥ confidence, with a Beta(1, 1) prior:
    P(Beta(a+1, b+1) > 1/2) = P(Binomial(a+b+1, 1/2) ≤ a)."""
    ranked = [c for _, c in counts.most_common(2)] + [0, 0]
    lead, second = ranked[0], ranked[1]
    if lead == 0:
        return False
    trials = lead + second + 1
    p = sum(math.comb(trials, j) for j in range(lead + 1)) / 2**trials
    return p >= confidence


def select(ctx: SearchContext, traces: Sequence[Trace], how: Selection) -> Trace:
    if how == "prm":
        return best_by_value(traces, ctx.aggregation)
    if how == "outcome":
        assert ctx.checker is not None
        return next((t for t in traces if t.finished and ctx.checker(t.text)), traces[0])
    weights: dict[str, float] = defaultdict(float)
    for trace in traces:
        answer = ctx.answer_of(trace.text) if trace.finished else None
        if answer is not None:
            weights[answer] += value(trace, ctx.aggregation) if how == "weighted_vote" else 1.0
    if not weights:
        return next((t for t in traces if t.finished), traces[0])
    winner = max(weights, key=lambda a: weights[a])  # ties: the answer seen first
    members = [t for t in traces if t.finished and ctx.answer_of(t.text) == winner]
    return best_by_value(members, ctx.aggregation) if how == "weighted_vote" else members[0]
