"""Best-of-N: sample whole solutions, pick one by PRM, by vote, by PRM-weighted vote, or by an outcome check.

Contract:
- Knobs: `n` (None: as many as the budget affords), `select` (prm | vote | weighted_vote | outcome),
  `adaptive` (stop sampling once the vote is decided: adaptive consistency), `round_size`,
  `confidence`, `include_greedy`.
- With `include_greedy` (the default) the first candidate is the greedy (temperature-0) solution, in
  its own first call (none where the request holds it already, as `auto`'s probe): it counts toward
  `n` and is selected like any sample (it votes once), so that Best-of-N is never below greedy.
- Samples are drawn in as few engine calls as possible: without `n` a first sampled round of
  `round_size` measures what a sample really costs, then the rest of the budget goes out in one call.
  With `adaptive` it samples `round_size` at a time and stops when P(leading answer is the majority) ≥
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
    greedy_solution,
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
    include_greedy: bool = Field(True, description="the greedy solution is the first candidate")


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
        sampled_rounds = 0  # the greedy candidate aside: the first sampled round measures a sample's cost
        try:
            while True:
                greedy = knobs.include_greedy and not traces
                want = 1 if greedy else self.round_size(ctx, knobs, len(traces), sampled_rounds, cost)
                if want <= 0:
                    break
                new = [await greedy_solution(ctx)] if greedy else await self.draw(ctx, want, sampled_rounds)
                traces += new  # kept even if scoring them is refused: unscored answers still count
                if needs_prm:
                    traces[-len(new) :] = await score(ctx, new)
                cost = sample_cost(ctx, mean_generated(new), needs_prm)
                ctx.report("samples", count=len(traces))
                sampled_rounds += not greedy
                if knobs.adaptive and vote_decided(votes(ctx, traces), knobs.confidence):
                    return traces, "done"
        except SearchStopped as stopped:
            return traces, stopped.reason
        # Without `n` (or short of it) the budget is what ended the sampling.
        return traces, "done" if knobs.n is not None and len(traces) >= knobs.n else "budget"

    @staticmethod
    async def draw(ctx: SearchContext, want: int, round_index: int) -> list[Trace]:
        """`want` samples at the request's temperature, in one engine call."""
        generation = await ctx.policy.rollout([ctx.prompt_ids], want, ctx.seeded(round_index))
        return [ctx.grow(Trace(), c) for c in generation.continuations[0]]

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
    """Compute units one sample takes: its generation after the prompt, plus the PRM reading prompt and
    solution (with a tenth more for the step tags)."""
    prompt = len(ctx.prompt_ids)
    scoring = ctx.scoring_units(prompt + solution_tokens * 1.1) if scored else 0.0
    return max(ctx.generation_units(solution_tokens, prompt) + scoring, 1.0)


def mean_generated(traces: Sequence[Trace]) -> float:
    """The tokens a sample generated, on average (its end-of-sequence token included, as engines count)."""
    return sum(len(t.token_ids) + t.finished for t in traces) / len(traces)


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
