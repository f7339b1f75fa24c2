"""No strategy below greedy: every strategy answers from 1x (greedy's cost) up, Best-of-N includes the
greedy solution, and a search that ends without a finished solution rolls its best partial one out at
temperature 0."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from fake_engine import FakeEngine
from fake_prm import FakePRM

from engines.base import Generation, Sampling
from engines.budget import Budget, BudgetExhausted, Reservation
from engines.cost import CostWeights
from engines.usage import Usage
from searchers.auto import AutoTable
from searchers.base import greedy_cost
from searchers.controller import Controller, SearchRequest
from searchers.registry import default_searchers
from tasks.countdown import Problem, SolutionCounter, Step, moves, parse_prompt
from verifiers.aggregate import aggregate
from verifiers.countdown import check_solution
from verifiers.prm import Candidate, Scores

PROBLEMS = ["3 7 9 13 -> 24\n", "2 5 8 -> 11\n", "2 5 8 5 1 -> 52\n", "4 6 10 12 -> 30\n"]

EVERY_STRATEGY: list[tuple[str, dict[str, Any]]] = [
    ("greedy", {}),
    ("best_of_n", {"select": "prm"}),
    ("best_of_n", {"select": "vote"}),
    ("best_of_n", {"select": "weighted_vote"}),
    ("best_of_n", {"select": "outcome"}),
    ("best_of_n", {"select": "vote", "adaptive": True}),
    ("beam", {}),
    ("dvts", {}),
    ("mcts", {}),
    ("mcts", {"evaluation": "prm"}),
    ("revision", {}),
    ("particle_filter", {}),
    ("auto", {}),
]


@dataclass(frozen=True)
class Call:
    kind: str  # "expand" or "rollout"
    prefixes: list[tuple[int, ...]]
    n: int
    sampling: Sampling


class RecordingEngine(FakeEngine):
    """The fake policy, recording every call it receives."""

    def __init__(self, slip: float = 0.2, seed: int = 0) -> None:
        super().__init__(slip=slip, seed=seed)
        self.received: list[Call] = []

    async def expand(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        self.received.append(Call("expand", [tuple(p) for p in prefixes], n, sampling))
        return await super().expand(prefixes, n, sampling, request_id)

    async def rollout(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        self.received.append(Call("rollout", [tuple(p) for p in prefixes], n, sampling))
        return await super().rollout(prefixes, n, sampling, request_id)

    def greedy_calls(self) -> list[Call]:
        return [call for call in self.received if call.sampling.temperature == 0.0]


class GreedyIsRight(RecordingEngine):
    """A policy whose greedy decoding solves the problem and whose every sampled step slips: a search that
    falls below greedy answers wrong."""

    def __init__(self) -> None:
        super().__init__(slip=1.0)
        self.greedy = False
        self.problem: Problem | None = None

    async def _generate(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str, until_step: bool
    ) -> Generation:
        self.greedy = sampling.temperature == 0.0
        self.problem = parse_prompt(self.decode(prefixes[0]).partition("\n")[0])
        return await super()._generate(prefixes, n, sampling, request_id, until_step)

    def _move(self, state: tuple[int, ...], rng: random.Random) -> Step:
        if not self.greedy or self.problem is None:
            return super()._move(state, rng)
        counter = SolutionCounter(self.problem.target)
        return next(step for step in moves(state) if counter.count(step.remaining) > 0)


def search_request(
    text: str, strategy: str, budget: int, knobs: dict[str, Any] | None = None
) -> SearchRequest:
    return SearchRequest(
        prompt_ids=tuple(FakeEngine().encode(text)),
        prompt_text=text,
        request_id="r",
        strategy=strategy,
        budget=budget,
        knobs=knobs or {},
        sampling=Sampling(temperature=0.8, seed=1),
    )


async def one_x(engine: FakeEngine, text: str) -> int:
    """1x: what greedy decoding costs on this problem, in compute units (its prompt prefilled, its
    solution generated), rounded up."""
    greedy = await Controller(engine, FakePRM()).run(search_request(text, "greedy", 1000))
    assert greedy.best.finished
    return math.ceil(units(greedy.usage))


def units(usage: Usage) -> float:
    return CostWeights().units(usage)


def correct(text: str, answer: str) -> bool:
    problem = parse_prompt(text.strip())
    assert problem is not None
    return check_solution(problem, answer).correct


# --- from 1x up -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("strategy", "knobs"), EVERY_STRATEGY)
async def test_at_greedys_cost_every_strategy_answers_as_greedy_does(
    strategy: str, knobs: dict[str, Any]
) -> None:
    for text in PROBLEMS:
        budget = await one_x(GreedyIsRight(), text)
        engine = GreedyIsRight()
        found = await Controller(engine, FakePRM()).run(search_request(text, strategy, budget, knobs))
        assert found.best.finished and correct(text, found.text), (text, found)
        assert units(found.usage) <= budget
        assert found.best in found.candidates


@pytest.mark.parametrize("strategy", ["beam", "dvts", "mcts", "revision", "particle_filter"])
async def test_below_one_path_and_a_greedy_completion_a_search_is_greedy(strategy: str) -> None:
    """At 2x a 4-number problem affords neither a beam's scored path nor a graded rollout with a greedy
    completion held back: the answer is the greedy solution, in one temperature-0 call, with nothing
    spent on a search that could only end with a sampled partial solution."""
    text = PROBLEMS[0]
    budget = 2 * await one_x(GreedyIsRight(), text)
    engine = GreedyIsRight()
    found = await Controller(engine, FakePRM()).run(search_request(text, strategy, budget))
    assert [(call.kind, call.n, call.sampling.temperature) for call in engine.received] == [
        ("rollout", 1, 0.0)
    ]
    assert found.best.finished and correct(text, found.text) and found.stop_reason == "budget"
    assert units(found.usage) <= budget


@pytest.mark.parametrize(("strategy", "knobs"), EVERY_STRATEGY)
async def test_every_strategy_returns_a_finished_answer_from_1x_up(
    strategy: str, knobs: dict[str, Any]
) -> None:
    for index, text in enumerate(PROBLEMS):
        cost = await one_x(FakeEngine(slip=0.3, seed=index), text)
        for multiple in (1, 1.5, 2, 3, 4, 6, 8, 16):
            budget = int(cost * multiple)
            controller = Controller(FakeEngine(slip=0.3, seed=index), FakePRM(seed=index))
            found = await controller.run(search_request(text, strategy, budget, knobs))
            assert found.best.finished, (text, multiple, found)
            assert units(found.usage) <= budget


# --- Best-of-N's greedy candidate ---------------------------------------------------------------------


@pytest.mark.parametrize("select", ["prm", "vote", "weighted_vote", "outcome"])
async def test_best_of_n_draws_the_greedy_solution_first_and_counts_it(select: str) -> None:
    text = PROBLEMS[0]
    greedy = await Controller(FakeEngine(), FakePRM()).run(search_request(text, "greedy", 1000))
    engine = RecordingEngine()
    found = await Controller(engine, FakePRM()).run(
        search_request(text, "best_of_n", 5000, {"n": 6, "select": select})
    )
    first, *rest = engine.received
    assert (first.kind, first.n, first.sampling.temperature) == ("rollout", 1, 0.0)  # its own first call
    assert [call.sampling.temperature for call in rest] == [0.8]  # then the other 5 in one call
    assert [call.n for call in rest] == [5]
    assert len(found.candidates) == 6 and found.candidates[0].text == greedy.text


async def test_include_greedy_false_samples_only() -> None:
    engine = RecordingEngine()
    knobs = {"n": 6, "include_greedy": False}
    found = await Controller(engine, FakePRM()).run(search_request(PROBLEMS[0], "best_of_n", 5000, knobs))
    assert not engine.greedy_calls()
    assert [(call.n, call.sampling.temperature) for call in engine.received] == [(6, 0.8)]
    assert len(found.candidates) == 6


async def test_without_n_the_first_sampled_round_still_measures_a_samples_cost() -> None:
    engine = RecordingEngine()
    await Controller(engine, FakePRM()).run(search_request(PROBLEMS[0], "best_of_n", 5000))
    widths = [(call.n, call.sampling.temperature) for call in engine.received]
    assert widths[:2] == [(1, 0.0), (4, 0.8)] and widths[2][0] > 4  # greedy, a round of 4, the rest


# --- a search that could not finish ---------------------------------------------------------------


def best_partial_by_value(candidates: Sequence[Any]) -> Any:
    partials = [c for c in candidates if not c.finished]
    return max(partials, key=lambda c: (aggregate(c.scores, "last"), len(c.steps)))


class GreedyCutShort(RecordingEngine):
    """A policy whose greedy decoding from the prompt runs past a token limit: its greedy solution is no
    answer, so a search must hold a completion back."""

    async def rollout(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        if sampling.temperature == 0.0 and not self.received:
            sampling = replace(sampling, max_tokens=2)
        return await super().rollout(prefixes, n, sampling, request_id)


@pytest.mark.parametrize(
    ("budget", "knobs"),
    [
        (500, {"beams": 8, "expansions": 2, "evaluation": "step"}),
        (60_000, {"max_depth": 1, "evaluation": "step"}),
    ],
)
async def test_an_unfinished_beam_search_rolls_its_best_partial_beam_out_greedily(
    budget: int, knobs: dict[str, Any]
) -> None:
    """Greedy decoding cut short, and the search cut by the budget (or the depth) before any beam
    finished: one more call, a temperature-0 rollout of the most valuable partial beam, and that complete
    answer is returned."""
    text = PROBLEMS[2]  # 5 numbers: 4 steps
    engine = GreedyCutShort()
    found = await Controller(engine, FakePRM()).run(search_request(text, "beam", budget, knobs))
    greedy, *search, last = engine.received
    assert (greedy.kind, greedy.sampling.temperature, greedy.sampling.max_tokens) == ("rollout", 0.0, 2)
    assert search and all(call.kind == "expand" and call.sampling.temperature == 0.8 for call in search)
    assert found.stop_reason == ("budget" if "beams" in knobs else "done")
    cut_greedy = next(c for c in found.candidates if c.truncated and len(c.token_ids) == 2)
    partials = [c for c in found.candidates[:-1] if c is not cut_greedy]
    assert partials and not any(c.finished for c in partials)  # no beam finished
    partial = best_partial_by_value(partials)
    prompt = search_request(text, "beam", 1).prompt_ids
    assert (last.kind, last.n, last.sampling.temperature) == ("rollout", 1, 0.0)
    # the held tokens were there for it (the adapter's clamp is the limit the engine received)
    held = greedy_cost(Controller(engine, None).context(search_request(text, "beam", budget), budget))
    assert last.sampling.max_tokens is not None
    assert CostWeights().for_generation(last.sampling.max_tokens, len(last.prefixes[0])) >= held - 1
    assert last.prefixes == [(*prompt, *partial.token_ids)]
    assert found.best is found.candidates[-1] and found.best.finished
    assert found.best.steps[: len(partial.steps)] == partial.steps
    assert units(found.usage) <= budget


@pytest.mark.parametrize("strategy", ["beam", "dvts", "mcts", "revision", "particle_filter"])
async def test_a_search_draws_the_greedy_solution_first_and_keeps_it(strategy: str) -> None:
    """A policy whose sampled steps always slip: whatever the search finds, the greedy solution (drawn
    first, at temperature 0) is a candidate and, the PRM valuing it above every slip, the answer."""
    text = PROBLEMS[0]
    engine = GreedyIsRight()
    found = await Controller(engine, FakePRM()).run(search_request(text, strategy, 5000))
    first, *rest = engine.received
    assert (first.kind, first.n, first.sampling.temperature) == ("rollout", 1, 0.0)
    assert rest and all(call.sampling.temperature == 0.8 for call in rest)  # the search did run
    assert correct(text, found.text) and found.best in found.candidates
    assert units(found.usage) <= 5000


@pytest.mark.parametrize("strategy", ["beam", "dvts", "mcts", "revision", "particle_filter"])
async def test_include_greedy_false_searches_without_the_greedy_candidate(strategy: str) -> None:
    engine = RecordingEngine()
    asked = search_request(PROBLEMS[0], strategy, 5000, {"include_greedy": False})
    found = await Controller(engine, FakePRM()).run(asked)
    assert engine.received and not engine.greedy_calls()  # every candidate finished: no fallback either
    assert found.best.finished and units(found.usage) <= 5000


async def test_a_deadline_stop_returns_at_once() -> None:
    """A search stopped by its deadline makes no call past it: the greedy solution drawn first is the
    answer, unscored, and no search call starts."""

    class SlowPRM(FakePRM):
        async def score(self, candidates: Sequence[Candidate], request_id: str) -> Scores:
            await asyncio.sleep(1.0)
            return await super().score(candidates, request_id)

    engine = RecordingEngine()
    asked = search_request(PROBLEMS[0], "beam", 5000)
    asked.timeout_s = 0.1
    found = await Controller(engine, SlowPRM()).run(asked)
    assert found.stop_reason == "deadline" and found.best.finished and not found.best.scores
    assert [(call.kind, call.sampling.temperature) for call in engine.received] == [("rollout", 0.0)]


async def test_auto_hands_its_probe_to_the_chosen_strategy() -> None:
    """The probe is the request's greedy solution: Best-of-N takes it as its greedy candidate instead of
    drawing it again, and it is a candidate once."""
    table = AutoTable([0.5], [1.0], {b: {"1.0": {"strategy": "best_of_n", "knobs": {"n": 4}}} for b in "01"})
    engine = RecordingEngine()
    controller = Controller(engine, FakePRM(), searchers=default_searchers(table))
    asked = search_request(PROBLEMS[0], "auto", 5000, {"accept": 1.0})
    found = await controller.run(asked)
    assert found.knobs["chosen"]["strategy"] == "best_of_n"
    assert len(engine.greedy_calls()) == 1  # the probe only
    assert [call.n for call in engine.received] == [1, 3]  # the probe, then the other 3 samples
    assert len(found.candidates) == 4 and len({id(c) for c in found.candidates}) == 4


# --- the budget's hold ----------------------------------------------------------------------------------


def test_a_hold_lowers_what_is_left_until_released() -> None:
    budget = Budget(100)
    with budget.hold(30) as hold:
        assert budget.remaining == 70 and not budget.can_afford(71)
        reservation = budget.clamp_generation(2, 48, 0)
        assert reservation.max_tokens == 35  # the adapters cannot spend the held units
        budget.settle(reservation, Usage(generated_tokens=60))
        assert budget.remaining == 10
        hold.release()
        assert budget.remaining == 40
        hold.release()  # once only
        assert budget.remaining == 40
    assert budget.remaining == 40


def test_a_hold_takes_at_most_what_is_left() -> None:
    budget = Budget(50)
    budget.settle(Reservation(), Usage(generated_tokens=45))
    with budget.hold(30):
        assert budget.remaining == 0
        with pytest.raises(BudgetExhausted):
            budget.clamp_generation(1, 48, 0)
    assert budget.remaining == 5  # released: what was left, no more
