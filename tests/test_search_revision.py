"""Sequential revision on the fake policy and PRM: what a rewrite keeps, batching, budget, cancellation."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
from fake_engine import FakeEngine
from fake_prm import FakePRM

from engines.base import Continuation, Generation, Sampling
from engines.cost import CostWeights
from searchers.base import SearchResult, Trace, best_by_value, value
from searchers.controller import Controller, InvalidSearch, SearchRequest
from searchers.revision import Revision, RevisionKnobs, resume_step
from tasks.countdown import generate
from verifiers.aggregate import AGGREGATIONS
from verifiers.countdown import check_solution

PROMPT = "3 7 9 13 -> 24\n"
GENEROUS = 20_000


class RecordingEngine(FakeEngine):
    """The fake policy, recording each rollout's prefixes and `n`, and honouring `max_tokens` the way a
    real engine does (FakeEngine writes whole solutions whatever the limit, which would overrun any
    budget the metered adapter clamped)."""

    def __init__(self, slip: float = 0.2) -> None:
        super().__init__(slip=slip)
        self.rollouts: list[tuple[list[tuple[int, ...]], int]] = []

    async def rollout(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        self.rollouts.append(([tuple(p) for p in prefixes], n))
        generation = await super().rollout(prefixes, n, sampling, request_id)
        limit = sampling.limit(self.spec, until_step=False)
        rows = [[self.cap(c, limit) for c in row] for row in generation.continuations]
        generated = sum(len(c.token_ids) + (c.finish == "end") for row in rows for c in row)
        return Generation(rows, replace(generation.usage, generated_tokens=generated))

    def cap(self, continuation: Continuation, max_tokens: int) -> Continuation:
        # The end-of-sequence token counts towards the limit, as in vLLM.
        if len(continuation.token_ids) + (continuation.finish == "end") <= max_tokens:
            return continuation
        ids = continuation.token_ids[:max_tokens]
        return Continuation(ids, self.decode(ids), "length", -0.1 * len(ids))


class StallingEngine(RecordingEngine):
    """Answers the first rollout, then hangs on every later one, like a busy engine."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = asyncio.Event()

    async def rollout(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        if self.calls >= 1:
            self.stalled.set()
            await asyncio.Event().wait()
        return await super().rollout(prefixes, n, sampling, request_id)


def request(
    engine: FakeEngine,
    text: str = PROMPT,
    budget: int = GENEROUS,
    seed: int = 1,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
    **knobs: Any,
) -> SearchRequest:
    return SearchRequest(
        prompt_ids=tuple(engine.encode(text)),
        prompt_text=text,
        request_id="r",
        strategy="revision",
        budget=budget,
        knobs=knobs,
        sampling=Sampling(seed=seed),
        progress=progress,
    )


async def search(
    text: str = PROMPT, slip: float = 0.2, **options: Any
) -> tuple[SearchResult, RecordingEngine, FakePRM]:
    engine, prm = RecordingEngine(slip), FakePRM()
    controller = Controller(engine, prm, searchers={"revision": Revision()})
    options.setdefault("include_greedy", False)  # these tests follow the chains alone
    outcome = await controller.run(request(engine, text, **options))
    return outcome, engine, prm


def recorder(events: list[dict[str, Any]]) -> Callable[[str, dict[str, Any]], None]:
    """A progress callback keeping each event's details."""
    return lambda event, details: events.append(details)


def first_doubt(trace: Trace, doubt: float = 0.5) -> int | None:
    return next((i for i, s in enumerate(trace.scores) if s < doubt), None)


def weakest(trace: Trace) -> int:
    return trace.scores.index(min(trace.scores))


async def first_attempt_where(predicate: Callable[[Trace], bool]) -> int:
    """A seed whose first attempt (one chain) the predicate accepts: a case built from the fake PRM."""
    for seed in range(1, 300):
        outcome, _, _ = await search(seed=seed, chains=1, rounds=0)
        if predicate(outcome.candidates[0]):
            return seed
    raise AssertionError("no seed gives such a first attempt")


def flat(steps: Sequence[Sequence[int]]) -> tuple[int, ...]:
    return tuple(t for step in steps for t in step)


# --- what a rewrite keeps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "truncated", "resume", "expected"),
    [
        ((0.9, 0.4, 0.8, 0.1), False, "first_doubt", 1),
        ((0.9, 0.4, 0.8, 0.1), False, "weakest", 3),
        ((0.2, 0.9, 0.9), False, "first_doubt", 0),  # doubted from the start: rewrite from the prompt
        ((0.9, 0.6, 0.8), False, "first_doubt", 1),  # nothing doubted, not accepted: the weakest step
        ((0.6, 0.9, 0.8), True, "first_doubt", 2),  # nothing doubted, cut short: resume at the cut step
        ((0.6, 0.9, 0.8), True, "weakest", 0),
        ((), False, "first_doubt", 0),
    ],
)
def test_resume_step(scores: tuple[float, ...], truncated: bool, resume: str, expected: int) -> None:
    steps = tuple((i,) for i in range(len(scores)))
    trace = Trace(steps=steps, texts=("",) * len(steps), truncated=truncated, scores=scores)
    assert resume_step(trace, RevisionKnobs.model_validate({"resume": resume})) == expected


async def test_first_doubt_keeps_the_steps_before_the_first_doubted_one() -> None:
    def distinguishes_the_modes(trace: Trace) -> bool:
        doubted = first_doubt(trace)
        return trace.finished and doubted is not None and 0 < doubted < weakest(trace)

    seed = await first_attempt_where(distinguishes_the_modes)
    outcome, engine, _ = await search(seed=seed, chains=1, rounds=1, accept=1.0, resume="first_doubt")
    first, revised = outcome.candidates
    kept = first_doubt(first)
    assert kept is not None
    assert all(s >= 0.5 for s in first.scores[:kept])  # only trusted steps are kept
    prompt_ids = engine.encode(PROMPT)
    assert engine.rollouts[1] == ([(*prompt_ids, *flat(first.steps[:kept]))], 1)
    assert revised.steps[:kept] == first.steps[:kept]
    assert revised.token_ids[: len(flat(first.steps[:kept]))] == list(flat(first.steps[:kept]))
    assert revised.scores[:kept] == first.scores[:kept]  # the causal PRM reads the kept steps the same
    assert revised.scored and len(revised.steps) > kept


async def test_weakest_keeps_the_steps_before_the_lowest_scoring_one() -> None:
    def distinguishes_the_modes(trace: Trace) -> bool:
        doubted = first_doubt(trace)
        return trace.finished and doubted is not None and doubted < weakest(trace)

    seed = await first_attempt_where(distinguishes_the_modes)
    outcome, engine, _ = await search(seed=seed, chains=1, rounds=1, accept=1.0, resume="weakest")
    first, revised = outcome.candidates
    kept = weakest(first)
    assert engine.rollouts[1] == ([(*engine.encode(PROMPT), *flat(first.steps[:kept]))], 1)
    assert revised.steps[:kept] == first.steps[:kept]


async def test_a_doubted_first_step_restarts_from_the_prompt() -> None:
    seed = await first_attempt_where(lambda trace: first_doubt(trace) == 0)
    outcome, engine, _ = await search(seed=seed, chains=1, rounds=1, accept=1.0)
    assert engine.rollouts[1] == ([tuple(engine.encode(PROMPT))], 1)
    assert len(outcome.candidates) == 2


async def test_each_round_rewrites_the_chains_best_attempt_so_far() -> None:
    outcome, engine, _ = await search(seed=3, chains=1, rounds=4, accept=1.0)
    prompt_ids = tuple(engine.encode(PROMPT))
    for round_index in range(1, 5):
        base = best_by_value(outcome.candidates[:round_index], "last")
        kept = first_doubt(base)
        kept = weakest(base) if kept is None else kept
        assert engine.rollouts[round_index] == ([(*prompt_ids, *flat(base.steps[:kept]))], 1)


# --- rounds and batching -------------------------------------------------------------------------------


async def test_one_rollout_and_one_scoring_call_per_round() -> None:
    events: list[dict[str, Any]] = []
    outcome, engine, prm = await search(chains=4, rounds=3, accept=1.0, progress=recorder(events))
    assert engine.calls == prm.calls == 4
    assert engine.rollouts[0] == ([tuple(engine.encode(PROMPT))], 4)
    assert [(len(prefixes), n) for prefixes, n in engine.rollouts[1:]] == [(4, 1)] * 3
    assert [e["round"] for e in events] == [0, 1, 2, 3]
    assert len(outcome.candidates) == 16 and outcome.stop_reason == "done"


async def test_accepted_chains_stop_revising() -> None:
    outcome, engine, prm = await search(chains=3, accept=0.0)
    assert engine.calls == prm.calls == 1
    assert len(outcome.candidates) == 3 and outcome.stop_reason == "done"


async def test_without_rounds_the_budget_ends_the_search() -> None:
    outcome, engine, _ = await search(budget=2000, chains=2, accept=1.0)
    assert outcome.stop_reason == "budget" and engine.calls > 3
    assert CostWeights().units(outcome.usage) <= 2000


# --- budget --------------------------------------------------------------------------------------------


async def test_usage_never_exceeds_the_budget() -> None:
    rng = random.Random(7)
    problems = [p.prompt() for tier in (3, 4, 5) for p in generate(tier, 3, seed=0)] + ["4 6 8 -> 40\n"]
    for _ in range(80):
        budget = rng.randint(1, 3000)
        knobs: dict[str, Any] = {
            "chains": rng.randint(1, 8),
            "rounds": rng.choice([None, 0, 1, 3]),
            "accept": rng.uniform(0.5, 1.0),
            "resume": rng.choice(["first_doubt", "weakest"]),
            "doubt": rng.uniform(0.1, 0.9),
        }
        engine, prm = RecordingEngine(slip=rng.choice([0.0, 0.2, 0.5])), FakePRM()
        controller = Controller(engine, prm, searchers={"revision": Revision()})
        search_request = request(engine, rng.choice(problems), budget, rng.randint(0, 10**6), **knobs)
        search_request.aggregation = rng.choice(AGGREGATIONS)
        outcome = await controller.run(search_request)
        case = f"budget={budget} knobs={knobs} prompt={search_request.prompt_text!r}"
        assert CostWeights().units(outcome.usage) <= budget, case
        assert outcome.stop_reason in ("done", "budget"), case
        if outcome.candidates:
            assert outcome.best in outcome.candidates, case
        else:  # a budget that cannot pay for the prompt's prefill: nothing was sampled
            assert outcome.usage.generated_tokens == 0 and outcome.stop_reason == "budget", case


# --- quality -------------------------------------------------------------------------------------------


async def test_revision_beats_its_first_round() -> None:
    solved_first = solved_revised = 0
    for problem in generate(3, 8, seed=0):
        text = problem.prompt()
        rounds: list[dict[str, Any]] = []
        first, _, _ = await search(text, budget=3000, rounds=0)
        revised, _, _ = await search(text, budget=3000, progress=recorder(rounds))
        assert rounds[0]["best"] == value(first.best, "last")  # the same first round, then revisions
        assert value(revised.best, "last") >= value(first.best, "last")
        solved_first += check_solution(problem, first.text).correct
        solved_revised += check_solution(problem, revised.text).correct
    assert solved_revised > solved_first


# --- cancellation and validation -----------------------------------------------------------------------


async def test_cancellation_mid_search_aborts_the_request() -> None:
    engine, prm = StallingEngine(), FakePRM()
    controller = Controller(engine, prm, searchers={"revision": Revision()})
    task = asyncio.create_task(controller.run(request(engine, accept=1.0)))
    await engine.stalled.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "r" in engine.aborted and "r" in prm.aborted


@pytest.mark.parametrize(
    "knobs",
    [
        {"chains": 0},
        {"chains": "four"},
        {"rounds": -1},
        {"accept": 1.5},
        {"resume": "latest"},
        {"doubt": -0.1},
        {"beam_width": 4},
    ],
)
def test_invalid_knobs_are_refused(knobs: dict[str, Any]) -> None:
    engine = FakeEngine()
    controller = Controller(engine, FakePRM(), searchers={"revision": Revision()})
    with pytest.raises(InvalidSearch) as refused:
        controller.validate(request(engine, **knobs))
    assert refused.value.param == "search.knobs"


def test_a_server_without_a_prm_refuses_revision() -> None:
    engine = FakeEngine()
    controller = Controller(engine, None, searchers={"revision": Revision()})
    with pytest.raises(InvalidSearch) as refused:
        controller.validate(request(engine))
    assert refused.value.param == "search.strategy"
