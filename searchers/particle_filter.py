"""Particle filtering over solution steps (Puri et al. 2025, "A Probabilistic Inference Approach to
Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods"): sequential Monte Carlo with the
policy as the proposal and the PRM as the likelihood.

Contract:
- Knobs: `particles` N (None: as many as the budget affords for a whole search, planned as beam's
  width), `temperature` of the softmax that turns PRM values into weights, `ess_threshold` (resample when
  the effective sample size falls below it times N), `max_depth` in steps.
- Round 0 samples N first steps (one engine call). Each round the PRM scores every new step (one
  verifier call; a step sampled twice is read once), then each particle's log-weight grows by its value
  (`ctx.aggregation`) over the temperature: a softmax over the population. Finished particles stay in the
  population and are never extended; each round they gain their final value again (as in its_hub: a
  solution keeps being weighed against the live particles). A particle a token limit cut short weighs
  nothing (it can never finish). When ESS = 1 / sum(w^2) < `ess_threshold` x N, the population is
  resampled systematically (one uniform draw per round, seeded by the request's seed and the round) and
  every log-weight is reset to 0; otherwise the weights carry over, as SMC's importance weights do, so a
  round that does not resample keeps the evidence of the rounds before it. Resampling every round
  (`ess_threshold` 1.0, as its_hub does) makes each round's weights exactly softmax(value / temperature).
  Then every unfinished particle is extended one step, all in one engine call of one sample per prefix
  (copies of a resampled particle are separate prefixes, which the prefix cache makes cheap).
- It stops when every particle has ended ("done"), at `max_depth` ("done"), or when an adapter raises
  `SearchStopped` (its reason). Each round reports "step": depth, live particles, finished ones so far,
  the ESS, whether it resampled and how often it has.
- The answer: the best finished particle by `ctx.aggregation` (a resampled-away one included). Like the
  other step-level searchers it runs under `never_below_greedy`: the greedy solution comes first, is the
  answer when the rest of the budget cannot pay for one path, and else a candidate. Without `particles`
  the budget sets N and the filter runs in passes, as beam does (`searchers.beam.in_passes`): later
  passes are sized at what a particle's path really cost. Candidates: every distinct particle that ended,
  and each pass's last population.
- Why temperature 0.2: PRM values lie in [0, 1], so softmax(value) alone would weigh a step the PRM
  trusts (0.9) under 2.2 times one it doubts (0.1). At 0.2 that ratio is e^4 = 55, close to what the
  published method's weights (the PRM's odds, p / (1 - p), a slope of 4 to 6 in log-weight between p =
  0.5 and 0.8) give in the middle range, without their blow-up near 0 and 1, where a PRM is least
  calibrated. Lower temperatures approach beam search; higher ones, independent sampling.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

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
    distinct,
    never_below_greedy,
    result,
    score,
    stepwise_path_cost,
    value,
)
from searchers.beam import affordable_paths, in_passes
from verifiers.aggregate import Aggregation

ESS_TOLERANCE = 1e-9  # equal weights give ESS = N up to rounding: that is no reason to resample


class ParticleFilterKnobs(PartialSearchKnobs):
    particles: int | None = Field(default=None, ge=1, le=256, description="N; None: as the budget affords")
    # at least 0.001: log-weights (values over it, summed over rounds) stay far from overflowing
    temperature: float = Field(default=0.2, ge=0.001, le=100.0, description="of the softmax over PRM values")
    ess_threshold: float = Field(default=0.5, gt=0.0, le=1.0, description="resample when ESS < it x N")
    max_depth: int = Field(default=40, ge=1, le=200, description="steps before the search gives up")


@dataclass(frozen=True)
class Particle:
    trace: Trace
    log_weight: float = 0.0  # since the last resampling


class ParticleFilter(SearcherDefaults):
    name: ClassVar[str] = "particle_filter"
    Knobs: ClassVar[type[ParticleFilterKnobs]] = ParticleFilterKnobs

    def needs_prm(self, knobs: ParticleFilterKnobs) -> bool:
        return True

    async def run(self, ctx: SearchContext, knobs: ParticleFilterKnobs) -> SearchResult:
        path = stepwise_path_cost(ctx) * COST_MARGIN
        return await never_below_greedy(
            ctx, self.name, knobs, path, True, lambda hold: self.search(ctx, knobs, hold)
        )

    async def search(self, ctx: SearchContext, knobs: ParticleFilterKnobs, hold: Hold) -> SearchResult:
        return await in_passes(
            ctx,
            knobs.particles,
            lambda path_units: affordable_paths(ctx, path_units),
            lambda pass_ctx, n: self.one_pass(pass_ctx, knobs, hold, n),
        )

    async def one_pass(
        self, ctx: SearchContext, knobs: ParticleFilterKnobs, hold: Hold, n: int
    ) -> SearchResult:
        population: list[Particle] = []
        ended: dict[tuple[int, ...], Trace] = {}  # every particle that ended, by its tokens
        resamples = 0
        stop: StopReason = "done"
        try:
            population = await first_steps(ctx, n)
            population = await scored(ctx, population)
            for depth in range(1, knobs.max_depth):
                population = reweighed(population, knobs.temperature, ctx.aggregation)
                keep_ended(ended, population)
                if any(t.finished for t in ended.values()):
                    hold.release()  # an answer is in hand: the fallback's tokens may go to the search
                if all(p.trace.ended for p in population):
                    break
                offset = resampling_offset(ctx, depth, len(population))
                population, ess, resampled = selected(population, knobs.ess_threshold, offset)
                resamples += resampled
                live = sum(not p.trace.ended for p in population)
                finished = sum(t.finished for t in ended.values())
                ctx.report(
                    "step",
                    depth=depth,
                    live=live,
                    finished=finished,
                    ess=round(ess, 3),
                    resampled=resampled,
                    resamples=resamples,
                )
                if not live:
                    break
                population = await advance(ctx, population, depth)
                population = await scored(ctx, population)
        except SearchStopped as stopped:
            stop = stopped.reason  # an unscored population stays: its finished particles are still answers
        candidates = distinct([*ended.values(), *(p.trace for p in population)])
        if not candidates:
            return result(ctx, self.name, Trace(), [], stop, knobs)
        return result(ctx, self.name, best_by_value(candidates, ctx.aggregation), candidates, stop, knobs)


# --- propose --------------------------------------------------------------------------------------


async def first_steps(ctx: SearchContext, n: int) -> list[Particle]:
    generation = await ctx.policy.expand([ctx.prompt_ids], n, ctx.seeded(0))
    return [Particle(ctx.grow(Trace(), c)) for c in generation.continuations[0]]


async def advance(ctx: SearchContext, population: list[Particle], depth: int) -> list[Particle]:
    """Every particle that has not ended one step further, in one engine call of one sample per prefix;
    ended particles stay as they are."""
    live = [i for i, p in enumerate(population) if not p.trace.ended]
    prefixes = [ctx.prefix(population[i].trace) for i in live]
    generation = await ctx.policy.expand(prefixes, 1, ctx.seeded(depth))
    out = list(population)
    for i, row in zip(live, generation.continuations, strict=True):
        out[i] = replace(population[i], trace=ctx.grow(population[i].trace, row[0]))
    return out


async def scored(ctx: SearchContext, population: list[Particle]) -> list[Particle]:
    """The particles with PRM scores, in one verifier call that reads each distinct trace once."""
    unique = list(dict.fromkeys(p.trace for p in population))
    by_trace = dict(zip(unique, await score(ctx, unique), strict=True))
    return [replace(p, trace=by_trace[p.trace]) for p in population]


# --- weigh ----------------------------------------------------------------------------------------


def log_likelihood(trace: Trace, temperature: float, how: Aggregation) -> float:
    """What a round's evidence adds to a particle's log-weight: its PRM value over the temperature (a
    finished particle's final value, each round it stays); -inf for one a token limit cut short."""
    if trace.truncated and not trace.finished:
        return -math.inf
    return value(trace, how) / temperature


def reweighed(population: list[Particle], temperature: float, how: Aggregation) -> list[Particle]:
    return [
        replace(p, log_weight=p.log_weight + log_likelihood(p.trace, temperature, how)) for p in population
    ]


def normalised(log_weights: Sequence[float]) -> list[float]:
    """The softmax of the log-weights; uniform when every one is -inf (no particle is worth anything)."""
    top = max(log_weights)
    if top == -math.inf:
        return [1 / len(log_weights)] * len(log_weights)
    weights = [math.exp(w - top) for w in log_weights]
    total = sum(weights)
    return [w / total for w in weights]


def effective_sample_size(weights: Sequence[float]) -> float:
    """1 / sum(w^2) of normalised weights: N when they are equal, 1 when one particle has them all."""
    return 1 / sum(w * w for w in weights)


# --- resample -------------------------------------------------------------------------------------


def systematic_resample(weights: Sequence[float], offset: float) -> list[int]:
    """N indices drawn at the positions offset + i/N (offset in [0, 1/N)) against the cumulative
    weights: index k is drawn floor or ceil of N·w_k times, and a zero-weight index never."""
    n = len(weights)
    cumulative = list(itertools.accumulate(weights))
    total = cumulative[-1]
    last = max(i for i, w in enumerate(weights) if w > 0)  # rounding must not land past it
    return [min(bisect.bisect_right(cumulative, (offset + i / n) * total), last) for i in range(n)]


def resampling_offset(ctx: SearchContext, round_index: int, n: int) -> float:
    """The round's uniform draw in [0, 1/N): reproducible with the request's seed, fresh without one."""
    return random.Random(ctx.seeded(round_index).seed).random() / n


def selected(
    population: list[Particle], threshold: float, offset: float
) -> tuple[list[Particle], float, bool]:
    """The population after this round's selection, its ESS, and whether it was resampled: only when
    the ESS fell below `threshold` x N; the copies start again at log-weight 0."""
    weights = normalised([p.log_weight for p in population])
    ess = effective_sample_size(weights)
    if ess >= threshold * len(population) * (1 - ESS_TOLERANCE):
        return population, ess, False
    return [Particle(population[i].trace) for i in systematic_resample(weights, offset)], ess, True


# --- the answer -----------------------------------------------------------------------------------


def keep_ended(ended: dict[tuple[int, ...], Trace], population: Sequence[Particle]) -> None:
    """Record the population's ended particles: resampling may drop them, the answer may not."""
    for particle in population:
        if particle.trace.ended:
            ended.setdefault(tuple(particle.trace.token_ids), particle.trace)
