"""Particle filtering on the fake policy and PRM: rounds and calls, weighting, systematic resampling, finished
particles, the budget, lineages, cancellation."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from fake_engine import FakeEngine
from fake_prm import FakePRM

from engines.base import Generation, Sampling
from searchers.base import SearchContext, Trace, greedy_cost
from searchers.beam import affordable_paths
from searchers.controller import Controller, InvalidSearch, SearchRequest
from searchers.particle_filter import (
    Particle,
    ParticleFilter,
    effective_sample_size,
    log_likelihood,
    normalised,
    resampling_offset,
    reweighed,
    selected,
    systematic_resample,
)
from tasks.countdown import parse_prompt
from verifiers.countdown import check_solution
from verifiers.prm import Candidate, Scores

PROBLEMS = ["3 7 9 13 -> 24\n", "2 5 8 -> 11\n", "4 6 10 12 1 -> 30\n", "1 2 -> 3\n"]


class RecordingEngine(FakeEngine):
    """The fake policy, noting each expand call's prefixes, width and continuations."""

    def __init__(self, slip: float = 0.2, seed: int = 0) -> None:
        super().__init__(slip=slip, seed=seed)
        self.expansions: list[tuple[list[tuple[int, ...]], int, Generation]] = []

    async def expand(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        generation = await super().expand(prefixes, n, sampling, request_id)
        self.expansions.append(([tuple(p) for p in prefixes], n, generation))
        return generation


def request(
    engine: FakeEngine, text: str, budget: int, knobs: dict[str, Any] | None = None, **extra: Any
) -> Any:
    return SearchRequest(
        prompt_ids=tuple(engine.encode(text)),
        prompt_text=text,
        request_id=extra.pop("request_id", "pf"),
        strategy=extra.pop("strategy", "particle_filter"),
        budget=budget,
        knobs=knobs or {},
        sampling=extra.pop("sampling", Sampling(seed=1)),
        **extra,
    )


def controller(engine: FakeEngine, prm: FakePRM) -> Controller:
    return Controller(engine, prm, searchers={"particle_filter": ParticleFilter()})


def recorder() -> tuple[list[dict[str, Any]], Any]:
    events: list[dict[str, Any]] = []
    return events, lambda event, details: events.append(details)


# --- whole searches ---------------------------------------------------------------------------------


async def test_one_engine_call_and_one_prm_call_per_round() -> None:
    """Without slips every particle takes 3 steps on 4 numbers: 3 rounds, each one call of each kind
    (after the greedy solution's own rollout and scoring)."""
    engine, prm = RecordingEngine(slip=0.0), FakePRM()
    found = await controller(engine, prm).run(request(engine, PROBLEMS[0], 60_000, {"particles": 8}))
    assert found.best.finished and found.stop_reason == "done"
    assert engine.calls == prm.calls == 1 + 3
    assert found.usage.policy_calls == 1 + 3 * 8  # one sample per particle per round
    assert [n for _, n, _ in engine.expansions] == [8, 1, 1]
    assert [len(prefixes) for prefixes, _, _ in engine.expansions] == [1, 8, 8]


async def test_rounds_batch_every_live_particle_and_finished_ones_are_not_extended() -> None:
    """Slipped particles end early (the fake policy stops on an illegal prefix): each round's one engine
    call carries exactly the particles still live, and no ended particle is extended again."""
    events, progress = recorder()
    engine, prm = RecordingEngine(slip=0.4), FakePRM()
    knobs = {"particles": 12, "ess_threshold": 0.01}  # never resampled: the population is fixed
    found = await controller(engine, prm).run(request(engine, PROBLEMS[2], 60_000, knobs, progress=progress))
    assert found.stop_reason == "done"
    assert engine.calls - 1 == len(engine.expansions) == len(events) + 1  # the greedy rollout first
    assert prm.calls <= engine.calls
    later = engine.expansions[1:]
    assert [len(prefixes) for prefixes, _, _ in later] == [e["live"] for e in events if e["live"]]
    assert any(0 < e["live"] < 12 and e["finished"] > 0 for e in events)  # some ended, others went on
    ended: set[tuple[int, ...]] = set()
    for prefixes, _, generation in engine.expansions:
        assert not ended & set(prefixes)
        for prefix, row in zip(prefixes, generation.continuations, strict=True):
            ended |= {prefix + c.token_ids for c in row if c.finish != "step"}


async def test_every_finished_particle_is_kept_even_when_resampled_away() -> None:
    prompt = FakeEngine().encode(PROBLEMS[2])
    for seed in range(4):
        engine, prm = RecordingEngine(slip=0.4, seed=seed), FakePRM(seed=seed)
        knobs = {"particles": 12, "ess_threshold": 1.0}  # resampled every round
        found = await controller(engine, prm).run(request(engine, PROBLEMS[2], 60_000, knobs))
        finished = {
            prefix[len(prompt) :] + c.token_ids
            for prefixes, _, generation in engine.expansions
            for prefix, row in zip(prefixes, generation.continuations, strict=True)
            for c in row
            if c.finish == "end"
        }
        kept = {tuple(c.token_ids) for c in found.candidates if c.finished}
        assert finished and finished <= kept and len(kept - finished) <= 1  # and the greedy solution
        assert found.best.finished and found.score == max(
            c.scores[-1] for c in found.candidates if c.finished
        )


@pytest.mark.parametrize("threshold", [1.0, 0.5, 0.01])
async def test_it_resamples_exactly_when_the_ess_falls_below_the_threshold(threshold: float) -> None:
    events, progress = recorder()
    engine, prm = FakeEngine(slip=0.3), FakePRM()
    knobs = {"particles": 16, "ess_threshold": threshold}
    await controller(engine, prm).run(request(engine, PROBLEMS[2], 60_000, knobs, progress=progress))
    assert events
    for event in events:  # the reported ESS is rounded to 3 decimals
        if event["resampled"]:
            assert event["ess"] <= threshold * 16 + 1e-3
        else:
            assert event["ess"] >= threshold * 16 - 1e-3
    resamples = sum(e["resampled"] for e in events)
    assert resamples == events[-1]["resamples"]
    if threshold == 1.0:
        assert resamples == len(events)  # the fake PRM's weights are never all equal
    if threshold == 0.01:
        assert resamples == 0  # ESS >= 1 > 0.01 x 16


async def test_the_budget_sets_the_particle_count() -> None:
    counts = []
    for budget in [300, 2000, 20_000]:
        engine, prm = RecordingEngine(), FakePRM()
        search = controller(engine, prm)
        asked = request(engine, PROBLEMS[0], budget)
        ctx = search.context(asked, budget)
        with ctx.budget.hold(greedy_cost(ctx)):  # what never_below_greedy holds back while it plans
            planned = affordable_paths(ctx)
        found = await search.run(asked)
        counts.append(engine.expansions[0][1])
        assert counts[-1] == planned
        assert search.weights.units(found.usage) <= budget
    assert counts[0] < counts[1] < counts[2]


async def test_never_spends_more_than_the_budget() -> None:
    rng = random.Random(11)
    reasons = set()
    for case in range(80):
        engine = FakeEngine(slip=rng.random() * 0.5, seed=case)
        knobs = {
            "particles": rng.choice([None, None, 1, 3, 16]),
            "temperature": rng.choice([0.001, 0.2, 1.0]),
            "ess_threshold": rng.choice([0.01, 0.5, 1.0]),
            "max_depth": rng.choice([1, 2, 40]),
        }
        budget = rng.choice([1, 5, 20, 60, 150, 400, 1000, 3000])
        search = request(
            engine,
            rng.choice(PROBLEMS),
            budget,
            knobs,
            aggregation=rng.choice(["last", "min", "prod", "mean"]),
            sampling=Sampling(seed=rng.choice([None, case])),
            max_verifier_calls=rng.choice([None, None, 5, 40]),
        )
        searching = controller(engine, FakePRM(seed=case))
        found = await searching.run(search)
        assert searching.weights.units(found.usage) <= budget, (knobs, budget)
        assert found.stop_reason in ("done", "budget"), (knobs, budget)
        reasons.add(found.stop_reason)
    assert reasons == {"done", "budget"}


async def test_the_same_seed_gives_the_same_search() -> None:
    runs = []
    for _ in range(2):
        engine, prm = FakeEngine(slip=0.3), FakePRM()
        found = await controller(engine, prm).run(
            request(engine, PROBLEMS[2], 5000, sampling=Sampling(seed=5))
        )
        runs.append((found.text, [c.token_ids for c in found.candidates], found.usage))
    assert runs[0] == runs[1]


class LineagePRM(FakePRM):
    """Trusts only the descendants of the first first-step it is shown; doubts every other lineage."""

    def __init__(self) -> None:
        super().__init__()
        self.favoured: tuple[int, ...] | None = None

    async def score(self, candidates: Sequence[Candidate], request_id: str) -> Scores:
        scores = await super().score(candidates, request_id)
        if self.favoured is None:
            self.favoured = candidates[0].steps[0]
        rows = [[0.99 if c.steps[0] == self.favoured else 0.01] * len(c.steps) for c in candidates]
        return Scores(rows, scores.usage)


async def test_a_high_weight_particles_lineage_takes_over_after_resampling() -> None:
    engine, prm = RecordingEngine(slip=0.0), LineagePRM()
    events, progress = recorder()
    knobs = {"particles": 8, "temperature": 0.05}  # the favoured lineage has all the weight
    found = await controller(engine, prm).run(request(engine, PROBLEMS[2], 60_000, knobs, progress=progress))
    first_steps = {c.token_ids for c in engine.expansions[0][2].continuations[0]}
    assert len(first_steps) > 1 and events[0]["resampled"]
    prompt = len(engine.encode(PROBLEMS[2]))
    extended = engine.expansions[1][0]
    assert all(prefix[prompt:] == prm.favoured for prefix in extended)  # every copy descends from it
    assert found.candidates and all(c.steps[0] == prm.favoured for c in found.candidates)


async def test_particle_filtering_solves_more_than_sampling() -> None:
    """The fake PRM flags slips and dead ends, so weighting by it should beat a single sample."""
    problem = parse_prompt(PROBLEMS[1].strip())
    assert problem is not None
    wins_filter = wins_sample = 0
    for seed in range(12):
        engine, prm = FakeEngine(slip=0.3, seed=seed), FakePRM(seed=seed)
        everything = Controller(engine, prm)
        sampling = Sampling(seed=seed)
        found = await everything.run(
            request(engine, PROBLEMS[1], 20_000, {"particles": 8}, sampling=sampling)
        )
        one = {"n": 1, "select": "vote"}
        single = await everything.run(
            request(engine, PROBLEMS[1], 20_000, one, sampling=sampling, strategy="best_of_n")
        )
        wins_filter += check_solution(problem, found.text).correct
        wins_sample += check_solution(problem, single.text).correct
    assert wins_filter > wins_sample + 3


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"temperature": 0}, "temperature"),
        ({"ess_threshold": 0}, "ess_threshold"),
        ({"ess_threshold": 1.5}, "ess_threshold"),
        ({"particles": 0}, "particles"),
        ({"beams": 4}, "Valid knobs: include_greedy, particles, temperature, ess_threshold, max_depth"),
    ],
)
def test_bad_knobs_are_refused(knobs: dict[str, Any], message: str) -> None:
    engine = FakeEngine()
    with pytest.raises(InvalidSearch, match=message):
        controller(engine, FakePRM()).validate(request(engine, PROBLEMS[0], 100, knobs))


def test_it_needs_a_prm() -> None:
    engine = FakeEngine()
    with pytest.raises(InvalidSearch, match="needs a PRM"):
        Controller(engine, None).validate(request(engine, PROBLEMS[0], 100))


# --- weighing -----------------------------------------------------------------------------------------


def test_a_particles_evidence_is_its_value_over_the_temperature() -> None:
    live = Trace(steps=((1,), (2,)), scores=(0.9, 0.6))
    finished = Trace(steps=((1,),), scores=(0.8,), finished=True)
    cut = Trace(steps=((1,),), scores=(0.8,), truncated=True)
    assert log_likelihood(live, 0.2, "last") == pytest.approx(3.0)
    assert log_likelihood(live, 0.5, "min") == pytest.approx(1.2)
    assert log_likelihood(finished, 0.2, "last") == pytest.approx(4.0)
    assert log_likelihood(cut, 0.2, "last") == -math.inf  # it can never finish


def test_log_weights_add_up_until_a_resampling_resets_them() -> None:
    """Between resamplings each round's evidence adds to the last (SMC's importance weights carry over)."""
    population = [
        Particle(Trace(steps=((1,),), scores=(0.5,)), 1.0),
        Particle(Trace(steps=((2,),), scores=(0.1,))),
    ]
    once = reweighed(population, 0.5, "last")
    assert [p.log_weight for p in once] == pytest.approx([2.0, 0.2])
    assert [p.log_weight for p in reweighed(once, 0.5, "last")] == pytest.approx([3.0, 0.4])


def test_weights_are_a_softmax_and_the_ess_counts_the_particles_that_matter() -> None:
    assert normalised([0.0, math.log(3.0)]) == pytest.approx([0.25, 0.75])
    assert normalised([1000.0, 1000.0]) == pytest.approx([0.5, 0.5])  # no overflow
    assert normalised([-math.inf, 0.0]) == [0.0, 1.0]
    assert normalised([-math.inf, -math.inf]) == [0.5, 0.5]
    assert effective_sample_size([0.25] * 4) == pytest.approx(4.0)
    assert effective_sample_size([1.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert effective_sample_size([0.5, 0.5, 0.0, 0.0]) == pytest.approx(2.0)


def test_selection_resamples_only_below_the_threshold_and_resets_the_weights() -> None:
    population = [Particle(Trace(steps=((i,),)), w) for i, w in enumerate([2.0, 0.0, 0.0, 0.0])]
    kept, ess, resampled = selected(population, 0.1, 0.1)
    assert not resampled and kept == population and 1 < ess < 4
    drawn, same_ess, resampled = selected(population, 1.0, 0.1)
    assert resampled and same_ess == ess and len(drawn) == 4
    assert all(p.log_weight == 0.0 for p in drawn)
    assert Counter(p.trace.steps[0][0] for p in drawn)[0] >= 2  # the heavy one, copied
    equal = [Particle(p.trace, 1.5) for p in population]
    assert not selected(equal, 1.0, 0.1)[2]  # equal weights: nothing to gain


# --- systematic resampling ------------------------------------------------------------------------------


def test_systematic_resampling_draws_each_index_floor_or_ceil_of_n_w_times() -> None:
    assert sorted(systematic_resample([0.5, 0.25, 0.25, 0.0], 0.1)) == [0, 0, 1, 2]
    rng = random.Random(3)
    for _ in range(300):
        n = rng.randint(1, 12)
        raw = [rng.random() if rng.random() > 0.2 else 0.0 for _ in range(n)]
        if not any(raw):
            raw[0] = 1.0
        weights = [w / sum(raw) for w in raw]
        counts = Counter(systematic_resample(weights, rng.random() / n))
        assert sum(counts.values()) == n
        for k, w in enumerate(weights):
            assert math.floor(n * w - 1e-9) <= counts[k] <= math.ceil(n * w + 1e-9)
            assert w > 0 or counts[k] == 0


def test_equal_weights_draw_each_index_once() -> None:
    rng = random.Random(5)
    for n in [1, 2, 3, 7, 16, 256]:
        for _ in range(20):
            assert systematic_resample([1 / n] * n, rng.random() / n) == list(range(n))


def test_a_dominant_weight_takes_every_draw() -> None:
    weights = normalised([20.0, 0.0, 0.0, 0.0])  # the others weigh e^-20 each
    for offset in [0.0, 0.1, 0.2499]:
        assert systematic_resample(weights, offset) == [0, 0, 0, 0]


def test_the_resampling_draw_is_reproducible_with_the_seed() -> None:
    engine = FakeEngine()

    def context(seed: int | None) -> SearchContext:
        asked = request(engine, PROBLEMS[0], 1000, sampling=Sampling(seed=seed))
        return controller(engine, FakePRM()).context(asked, 1000)

    seeded, again, other = context(4), context(4), context(5)
    draws = [resampling_offset(seeded, r, 8) for r in range(1, 6)]
    assert draws == [resampling_offset(again, r, 8) for r in range(1, 6)]
    assert draws != [resampling_offset(other, r, 8) for r in range(1, 6)]
    assert len(set(draws)) == len(draws)  # a fresh draw each round
    assert all(0 <= d < 1 / 8 for d in draws)
    assert 0 <= resampling_offset(context(None), 1, 8) < 1 / 8
