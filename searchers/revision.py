"""Sequential revision with PRM feedback: parallel chains of attempts, each rewriting its best one so far
from the step the verifier doubts.

Contract:
- Knobs: `chains` (parallel chains: the parallel half of the parallel x sequential mix), `rounds`
  (revisions per chain after its first attempt; None: until the budget stops it), `accept` (a chain
  stops once its latest attempt is finished and valued at least this), `resume` (a rewrite starts
  before the first step scored below `doubt`, or before the lowest-scoring step) and `doubt`.
- Round 0 samples `chains` whole solutions in one rollout call and scores them in one verifier call
  (fewer chains when the budget cannot afford that many, never fewer than one). Each later round
  rewrites every still-active chain's best attempt so far: the steps before the resume point are kept
  (their token ids extend the prompt), the rest is rolled out again; all chains go in one rollout call
  (n=1 per prefix, seeded per round so rewrites differ) and one scoring call.
- The search ends "done" when every chain is accepted or `rounds` is reached, "budget" when the next
  round's estimated cost does not fit (only the chains that fit are revised, cheapest first), or with
  the reason of a `SearchStopped` from the adapters. The answer is the best of all attempts of all
  chains by PRM value; every attempt is a candidate, including a last round the verifier could not
  afford to judge.
- Never below greedy (`never_below_greedy`): the greedy solution is drawn and scored first; a budget
  that then cannot pay for one chain's first attempt gets the greedy solution, and otherwise it is a
  candidate and the answer where the PRM values it above every attempt.

What "revision" means here, honestly: the policy never reads its previous attempt. In-context revision
(the previous attempt in the prompt, as in Snell et al. 2024's revision model) needs a policy trained on
(attempt, better attempt) pairs; the embedded policy only ever saw "numbers -> target" prompts followed
by solution steps. So this is revision in backtracking form: the PRM's step scores say where the
previous attempt went wrong, and the policy rewrites it from there, conditioned on the steps before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from engines.budget import Hold, SearchStopped, StopReason
from searchers.base import (
    COST_MARGIN,
    PartialSearchKnobs,
    SearchContext,
    SearcherDefaults,
    SearchResult,
    Trace,
    best_by_value,
    never_below_greedy,
    result,
    score,
    value,
)
from verifiers.aggregate import Aggregation

Resume = Literal["first_doubt", "weakest"]


class RevisionKnobs(PartialSearchKnobs):
    chains: int = Field(4, ge=1, le=256, description="parallel chains of attempts")
    rounds: int | None = Field(
        None, ge=0, le=1024, description="revisions per chain after the first attempt; None: until the budget"
    )
    accept: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="a chain stops once its latest attempt is finished and valued at least this",
    )
    resume: Resume = Field(
        "first_doubt", description="rewrite from the first step below `doubt`, or from the weakest step"
    )
    doubt: float = Field(0.5, ge=0.0, le=1.0, description="a step scored below this is doubted")


@dataclass
class Chain:
    """One line of attempts, each a rewrite of the chain's best attempt before it."""

    attempts: list[Trace]

    @property
    def latest(self) -> Trace:
        return self.attempts[-1]

    def best(self, how: Aggregation) -> Trace:
        return best_by_value(self.attempts, how)

    def accepted(self, knobs: RevisionKnobs, how: Aggregation) -> bool:
        # A cut-off attempt is no answer, however much the verifier trusts its steps.
        return self.latest.finished and value(self.latest, how) >= knobs.accept


@dataclass(frozen=True)
class Plan:
    """One chain's rewrite in the next round: the steps it keeps and what the rewrite should cost."""

    chain: Chain
    kept: Trace
    cost: float


@dataclass(frozen=True)
class Pace:
    """The size of an attempt, measured on the attempts so far (the task's hints before there are any)."""

    steps: float  # per attempt
    step_tokens: float

    @classmethod
    def measure(cls, ctx: SearchContext, attempts: Sequence[Trace]) -> Pace:
        written = [a for a in attempts if a.steps]
        if not written:
            return cls(ctx.hints.steps, ctx.hints.step_tokens)
        steps = sum(len(a.steps) for a in written)
        return cls(steps / len(written), sum(len(a.token_ids) for a in written) / steps)

    def rewrite_cost(self, ctx: SearchContext, kept: Trace) -> float:
        """Compute units to roll out an attempt after `kept` (the prompt and the kept steps sent as its
        prompt) and have the PRM read all of it (the same count as `ctx.score_cost`: prompt, tokens and
        one tag per step)."""
        new_steps = max(self.steps - len(kept.steps), 1.0)
        new_tokens = new_steps * self.step_tokens
        prefix = len(ctx.prompt_ids) + len(kept.token_ids)
        read = prefix + new_tokens + len(kept.steps) + new_steps
        return (ctx.generation_units(new_tokens, prefix) + ctx.scoring_units(read)) * COST_MARGIN


class Revision(SearcherDefaults):
    name: ClassVar[str] = "revision"
    Knobs: ClassVar[type[RevisionKnobs]] = RevisionKnobs

    def needs_prm(self, knobs: RevisionKnobs) -> bool:
        return True  # the PRM says where each attempt goes wrong, and picks the answer

    async def run(self, ctx: SearchContext, knobs: RevisionKnobs) -> SearchResult:
        path = Pace.measure(ctx, []).rewrite_cost(ctx, Trace())  # one chain's first attempt
        return await never_below_greedy(
            ctx, self.name, knobs, path, True, lambda hold: self.search(ctx, knobs, hold)
        )

    async def search(self, ctx: SearchContext, knobs: RevisionKnobs, hold: Hold) -> SearchResult:
        chains: list[Chain] = []
        try:
            stop = await self.grow(ctx, knobs, chains, hold)
        except SearchStopped as stopped:
            stop = stopped.reason
        attempts = all_attempts(chains)
        if not attempts:
            return result(ctx, self.name, Trace(), [], stop, knobs)
        return result(ctx, self.name, best_by_value(attempts, ctx.aggregation), attempts, stop, knobs)

    async def grow(
        self, ctx: SearchContext, knobs: RevisionKnobs, chains: list[Chain], hold: Hold
    ) -> StopReason:
        """Grows `chains` in place, so that a search stopped mid-round keeps every attempt written."""
        await first_round(ctx, knobs, chains)
        report(ctx, 0, chains, revised=len(chains))
        round_index = 1
        while True:
            if any(attempt.finished for attempt in all_attempts(chains)):
                hold.release()  # an answer is in hand: the fallback's tokens may go to revisions
            active = [chain for chain in chains if not chain.accepted(knobs, ctx.aggregation)]
            if not active or (knobs.rounds is not None and round_index > knobs.rounds):
                return "done"
            pace = Pace.measure(ctx, all_attempts(chains))
            plans = affordable(ctx, [plan(ctx, knobs, chain, pace) for chain in active])
            if not plans:
                return "budget"
            await revise(ctx, plans, round_index)
            report(ctx, round_index, chains, revised=len(plans))
            round_index += 1


async def first_round(ctx: SearchContext, knobs: RevisionKnobs, chains: list[Chain]) -> None:
    cost = Pace.measure(ctx, []).rewrite_cost(ctx, Trace())
    # Always try one chain; the adapter cuts it to the budget.
    width = min(knobs.chains, max(1, int(ctx.budget.remaining // cost)))
    generation = await ctx.policy.rollout([ctx.prompt_ids], width, ctx.seeded(0))
    chains += [Chain([ctx.grow(Trace(), c)]) for c in generation.continuations[0]]
    await judge(ctx, chains)


async def revise(ctx: SearchContext, plans: Sequence[Plan], round_index: int) -> None:
    prefixes = [ctx.prefix(p.kept) for p in plans]
    generation = await ctx.policy.rollout(prefixes, 1, ctx.seeded(round_index))
    for p, row in zip(plans, generation.continuations, strict=True):
        p.chain.attempts.append(ctx.grow(p.kept, row[0]))
    await judge(ctx, [p.chain for p in plans])


async def judge(ctx: SearchContext, chains: Sequence[Chain]) -> None:
    """Scores the chains' latest attempts in one verifier call. The PRM reads each attempt whole: it
    scores a sequence, not a suffix, so the kept steps are read again (and their scores recomputed the
    same, the PRM being causal); an attempt that rewrote nothing keeps its scores and costs nothing."""
    scored = await score(ctx, [chain.latest for chain in chains])
    for chain, attempt in zip(chains, scored, strict=True):
        chain.attempts[-1] = attempt


def plan(ctx: SearchContext, knobs: RevisionKnobs, chain: Chain, pace: Pace) -> Plan:
    # Revise the best attempt so far, not the latest: the verifier's value is the only evidence of
    # progress, so a rewrite it rates lower must not cost the chain the trusted prefix it had; the
    # per-round seed still makes every rewrite of the same attempt different.
    base = chain.best(ctx.aggregation)
    kept = keep(base, resume_step(base, knobs))
    return Plan(chain, kept, pace.rewrite_cost(ctx, kept))


def resume_step(trace: Trace, knobs: RevisionKnobs) -> int:
    """The index of the first step to rewrite (= the number of steps kept); 0 restarts from the prompt."""
    if not trace.steps or not trace.scored:
        return 0
    scores = trace.scores
    weakest = min(range(len(scores)), key=scores.__getitem__)
    if knobs.resume == "weakest":
        return weakest
    # Nothing doubted: an attempt cut by the token limit resumes at its cut step (the steps before it are
    # trusted), a finished one that was still not accepted at its weakest step, the likeliest flaw.
    undoubted = len(scores) - 1 if trace.truncated else weakest
    return next((i for i, s in enumerate(scores) if s < knobs.doubt), undoubted)


def keep(trace: Trace, steps: int) -> Trace:
    """The first `steps` steps with their scores (the log-probability of a kept step is not known per
    step, so a rewrite's `logprob` covers only what it rewrote)."""
    return Trace(steps=trace.steps[:steps], texts=trace.texts[:steps], scores=trace.scores[:steps])


def affordable(ctx: SearchContext, plans: Sequence[Plan]) -> list[Plan]:
    """The plans the budget affords, cheapest first (a chain keeping more trusted steps costs less and is
    nearer an answer), returned in chain order."""
    left = float(ctx.budget.remaining)
    chosen: set[int] = set()
    for index in sorted(range(len(plans)), key=lambda i: plans[i].cost):
        if plans[index].cost > left:
            break
        chosen.add(index)
        left -= plans[index].cost
    return [p for i, p in enumerate(plans) if i in chosen]


def all_attempts(chains: Sequence[Chain]) -> list[Trace]:
    return [attempt for chain in chains for attempt in chain.attempts]


def report(ctx: SearchContext, round_index: int, chains: Sequence[Chain], revised: int) -> None:
    attempts = all_attempts(chains)
    best = best_by_value(attempts, ctx.aggregation) if attempts else Trace()
    ctx.report(
        "round",
        round=round_index,
        revised=revised,
        attempts=len(attempts),
        best=value(best, ctx.aggregation),
        used=round(ctx.budget.used, 2),
    )
