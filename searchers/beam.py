"""PRM-guided step-level beam search, and diverse verifier tree search (DVTS).

Contract (the published recipe's semantics):
- Knobs: `beams` N (None: as many as the budget affords for a whole search),
  `expansions` M per kept beam, `max_depth` in steps, `evaluation` (step or rollout).
- Round 0 samples N first steps. Each round the PRM scores every new step (one verifier call), finished
  solutions are set aside, the N/M best unfinished beams by PRM value are kept, and each is expanded M
  times (one engine call for all), so N candidates are always in flight. (With rollout evaluation each
  step is sampled as the start of a whole solution, see below.)
- DVTS (`Beam(diverse=True)`, strategy `dvts`) splits the N first steps into N/M independent subtrees
  and keeps only the best beam of each: less pruning of the lone promising path, more diversity.
- `evaluation="rollout"` (the default; lookahead to the end): each sample of a round is a whole
  solution from the beam's prefix (one rollout call instead of one step call); its first step is the
  new beam, ranked by the PRM's value of the whole solution (one verifier call reads the rollouts; a
  beam's own steps take their first scores), and every finished rollout is an answer candidate. Why:
  the PRM tells finished solutions apart much better than first steps, and whole-solution requests
  keep the policy engine nearer its raw throughput than step-long ones (150 tier-4 dev problems, at
  64x: beam 40.7% -> 41.3%, DVTS 40.7% -> 42.7%, engine efficiency 0.61 -> 0.86 and 0.69 -> 0.85; at
  16x: 32.7% -> 35.3% and 34.0% -> 35.3%). A path is planned at the rollouts' price
  (`beam_path_cost`). `evaluation="step"` is the published recipe: one step a sample, ranked by its
  own score.
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
from typing import ClassVar, Literal

from pydantic import Field

from engines.base import Continuation, derived_seed
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
    first_step,
    never_below_greedy,
    result,
    score,
    stepwise_path_cost,
    value,
)

Evaluation = Literal["step", "rollout"]


class BeamKnobs(PartialSearchKnobs):
    beams: int | None = Field(None, ge=1, le=256, description="N; None: as many as the budget affords")
    expansions: int = Field(4, ge=1, le=64, description="M: samples per kept beam each step")
    max_depth: int = Field(40, ge=1, le=200, description="steps before the search gives up")
    evaluation: Evaluation = Field(
        "rollout",
        description="rank a new step by its own PRM score, or by the PRM's value of a whole "
        "solution sampled through it (rollout)",
    )


@dataclass(frozen=True)
class Branch:
    trace: Trace
    group: int  # the subtree (DVTS) it belongs to; always 0 for plain beam search
    rollout: Trace | None = None  # with rollout evaluation, the solution sampled through its last step

    def ranked_by(self) -> Trace:
        """What its PRM value is read from: its rollout where it has one, else itself."""
        return self.rollout if self.rollout is not None else self.trace


class Beam(SearcherDefaults):
    Knobs: ClassVar[type[BeamKnobs]] = BeamKnobs

    def __init__(self, diverse: bool = False) -> None:
        self.diverse = diverse
        self.name = "dvts" if diverse else "beam"

    def needs_prm(self, knobs: BeamKnobs) -> bool:
        return True

    async def run(self, ctx: SearchContext, knobs: BeamKnobs) -> SearchResult:
        path = beam_path_cost(ctx, knobs.evaluation) * COST_MARGIN
        return await never_below_greedy(
            ctx, self.name, knobs, path, True, lambda hold: self.search(ctx, knobs, hold)
        )

    async def search(self, ctx: SearchContext, knobs: BeamKnobs, hold: Hold) -> SearchResult:
        def width(path_units: float | None) -> int:
            return affordable_beams(ctx, knobs.expansions, path_units, knobs.evaluation)

        return await in_passes(
            ctx, knobs.beams, width, lambda pass_ctx, n: self.one_pass(pass_ctx, knobs, hold, n)
        )

    async def one_pass(self, ctx: SearchContext, knobs: BeamKnobs, hold: Hold, n: int) -> SearchResult:
        m = min(knobs.expansions, n)
        finished: list[Trace] = []
        frontier: list[Branch] = []
        stop: StopReason = "done"
        try:
            rolls_out = knobs.evaluation == "rollout"
            frontier = await self.first_steps(ctx, n, m, rolls_out)
            frontier = await scored(ctx, frontier)
            for depth in range(1, knobs.max_depth):
                finished += [b.trace for b in frontier if b.trace.ended]
                finished += [b.rollout for b in frontier if b.rollout is not None and b.rollout.ended]
                if any(t.finished for t in finished):
                    hold.release()  # an answer is in hand: the fallback's tokens may go to the search
                kept = self.keep(ctx, [b for b in frontier if not b.trace.ended], n, m)
                ctx.report("step", depth=depth, finished=len(finished), beams=len(kept))
                if not kept:
                    break
                frontier = await self.expand(ctx, kept, m, depth, rolls_out)
                frontier = await scored(ctx, frontier)
        except SearchStopped as stopped:
            stop = stopped.reason  # an unscored frontier stays: its finished solutions are still answers
        candidates = finished + [b.trace for b in frontier if b.trace not in finished]
        if not candidates:
            return result(ctx, self.name, Trace(), [], stop, knobs)
        return result(ctx, self.name, best_by_value(candidates, ctx.aggregation), candidates, stop, knobs)

    async def first_steps(self, ctx: SearchContext, n: int, m: int, rolls_out: bool) -> list[Branch]:
        call = ctx.policy.rollout if rolls_out else ctx.policy.expand
        generation = await call([ctx.prompt_ids], n, ctx.seeded(0))
        # DVTS: consecutive groups of M first steps form the N/M subtrees
        return [
            branch_of(ctx, Trace(), c, i // m if self.diverse else 0)
            for i, c in enumerate(generation.continuations[0])
        ]

    def keep(self, ctx: SearchContext, live: list[Branch], n: int, m: int) -> list[Branch]:
        """The best N/M beams (plain), or the best beam of each subtree (DVTS)."""
        ranked = sorted(live, key=lambda b: value(b.ranked_by(), ctx.aggregation), reverse=True)
        if not self.diverse:
            return ranked[: max(n // m, 1)]
        best: dict[int, Branch] = {}
        for beam in ranked:
            best.setdefault(beam.group, beam)
        return list(best.values())

    async def expand(
        self, ctx: SearchContext, kept: list[Branch], m: int, depth: int, rolls_out: bool
    ) -> list[Branch]:
        call = ctx.policy.rollout if rolls_out else ctx.policy.expand
        generation = await call([ctx.prefix(b.trace) for b in kept], m, ctx.seeded(depth))
        return [
            branch_of(ctx, beam.trace, c, beam.group)
            for beam, row in zip(kept, generation.continuations, strict=True)
            for c in row
        ]


def branch_of(ctx: SearchContext, parent: Trace, sampled: Continuation, group: int) -> Branch:
    """The branch a sampled continuation of `parent` makes: its first step; and where it sampled more
    than one step (a rollout), the whole solution it sampled, which ranks the step."""
    step = first_step(sampled, ctx.policy.split_steps, ctx.policy.decode)
    if step is sampled:  # one step (or nothing more): the branch is where it ended
        return Branch(ctx.grow(parent, sampled), group)
    return Branch(ctx.grow(parent, step), group, ctx.grow(parent, sampled))


async def scored(ctx: SearchContext, branches: list[Branch]) -> list[Branch]:
    """The branches with PRM scores, in one verifier call: a branch with a rollout is read through its
    rollout, and its own steps take the rollout's first scores (the PRM reads left to right, so a step's
    score does not depend on the steps after it)."""
    read = await score(ctx, [b.ranked_by() for b in branches])
    out = []
    for branch, trace in zip(branches, read, strict=True):
        if branch.rollout is None:
            out.append(Branch(trace, branch.group))
            continue
        own = replace(branch.trace, scores=trace.scores[: len(branch.trace.steps)])
        out.append(Branch(own if trace.scored else branch.trace, branch.group, trace))
    return out


# --- width and passes ----------------------------------------------------------------------------


def affordable_paths(
    ctx: SearchContext, path_units: float | None = None, evaluation: Evaluation = "step"
) -> int:
    """The most step-level paths whose whole search fits what is left, with a margin (at most 256): beam's
    N before rounding, and the particle filter's particle count. A path is priced at `path_units` where
    earlier passes measured it, else at its uncached price (`beam_path_cost`). May be 0."""
    price = beam_path_cost(ctx, evaluation) if path_units is None else max(path_units, 1.0)
    return max(0, min(256, int(ctx.budget.remaining // (price * COST_MARGIN))))


def affordable_beams(
    ctx: SearchContext, expansions: int, path_units: float | None = None, evaluation: Evaluation = "step"
) -> int:
    """The most beams N whose whole search fits the budget (`affordable_paths`), rounded down to a
    multiple of M once it exceeds M, so the N/M kept beams' expansions are N again. Not rounded to a
    power of two: the rest of a budget between two powers would go unspent."""
    n = affordable_paths(ctx, path_units, evaluation)
    return n - n % expansions if n > expansions else n


def beam_path_cost(ctx: SearchContext, evaluation: Evaluation) -> float:
    """Compute units of one beam's whole path, uncached (planned from `ctx.hints`): step by step
    (`stepwise_path_cost`), or with rollout evaluation, at each depth the rest of a solution sampled
    after the prefix and the whole solution read by the PRM."""
    if evaluation == "step":
        return stepwise_path_cost(ctx)
    step, steps, prompt = ctx.hints.step_tokens, ctx.hints.steps, len(ctx.prompt_ids)
    return sum(
        ctx.generation_units(step * (steps - depth + 1), prompt + (depth - 1) * step)
        + ctx.scoring_units(prompt + steps * (step + 1))
        for depth in range(1, steps + 1)
    )


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
