"""Search logic on the deterministic fake engine and PRM: budget, controller, Best-of-N, beam, DVTS, auto."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from fake_engine import FakeEngine
from fake_prm import FakePRM

from engines.base import Sampling
from engines.budget import Budget, BudgetExhausted, DeadlineExceeded
from engines.metered import MeteredPolicy
from engines.usage import Usage
from searchers.auto import AutoTable
from searchers.best_of_n import vote_decided
from searchers.controller import Controller, InvalidSearch, SearchRequest
from searchers.registry import default_searchers
from verifiers.metered import MeteredVerifier
from verifiers.prm import Candidate

PROBLEMS = ["3 7 9 13 -> 24\n", "2 5 8 -> 11\n", "4 6 10 12 1 -> 30\n", "1 2 -> 3\n"]


def request(text: str, strategy: str, budget: int, knobs: dict[str, Any] | None = None, **extra: Any) -> Any:
    engine = FakeEngine()
    return SearchRequest(
        prompt_ids=tuple(engine.encode(text)),
        prompt_text=text,
        request_id=extra.pop("request_id", "req"),
        strategy=strategy,
        budget=budget,
        knobs=knobs or {},
        sampling=extra.pop("sampling", Sampling(seed=1)),
        **extra,
    )


# --- the budget -------------------------------------------------------------------------------------


def test_budget_clamps_generation_to_what_is_left() -> None:
    budget = Budget(100)
    assert budget.clamp_generation(4, 48, 40) == 25  # 4 x 25 fits, 4 x 48 would not
    budget.settle(100, 0, 0, Usage(generated_tokens=60))
    assert budget.remaining == 40
    with pytest.raises(BudgetExhausted):
        budget.clamp_generation(41, 48, 0)


def test_budget_refuses_scoring_that_does_not_fit_and_caps_verifier_calls() -> None:
    budget = Budget(100, max_verifier_calls=2)
    with pytest.raises(BudgetExhausted):
        budget.reserve(101, 1)
    budget.reserve(50, 2)
    budget.settle(50, 0, 2, Usage(scored_tokens=50, verifier_calls=2))
    with pytest.raises(BudgetExhausted, match="verifier calls"):
        budget.reserve(10, 1)


def test_budget_caps_prefill_in_the_worst_case() -> None:
    budget = Budget(1000, max_prefill_tokens=30)
    with pytest.raises(BudgetExhausted, match="prefill"):
        budget.clamp_generation(2, 10, 31)
    assert budget.remaining == 1000  # a refused call reserves nothing


def test_deadline_stops_calls_and_aborts_a_running_one() -> None:
    class SlowEngine(FakeEngine):
        async def rollout(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(5)

    async def go() -> None:
        engine = SlowEngine()
        budget = Budget.with_timeout(1000, timeout_s=0.05)
        policy = MeteredPolicy(engine, budget, "slow")
        with pytest.raises(DeadlineExceeded):
            await policy.rollout([engine.encode("1 2 -> 3\n")], 1, Sampling())
        assert "slow" in engine.aborted
        with pytest.raises(DeadlineExceeded):
            await policy.rollout([engine.encode("1 2 -> 3\n")], 1, Sampling())
        assert budget.remaining == 1000

    asyncio.run(go())


async def test_metered_verifier_charges_exactly_what_the_prm_reads() -> None:
    engine, prm = FakeEngine(), FakePRM()
    budget = Budget(1000)
    verifier = MeteredVerifier(prm, budget, "r")
    prompt = tuple(engine.encode("3 7 9 13 -> 24\n"))
    step = tuple(engine.encode("13-7=6 [3 9 6]\n")[1:])
    scores = await verifier.score([Candidate(prompt, (step, step))])
    assert budget.spent.scored_tokens == len(prompt) + 2 * (len(step) + 1) == scores.usage.scored_tokens


# --- the controller ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "knobs", "budget", "message"),
    [
        (
            "nope",
            {},
            100,
            "valid strategies: auto, beam, best_of_n, dvts, greedy, mcts, particle_filter, revision",
        ),
        ("best_of_n", {"beams": 3}, 100, "Valid knobs: n, select"),
        ("best_of_n", {"n": 0}, 100, "greater than or equal to 1"),
        ("best_of_n", {"select": "magic"}, 100, "select"),
        ("beam", {"expansions": "many"}, 100, "expansions"),
        ("greedy", {}, 0, "budget must be between 1"),
        ("greedy", {}, 10**9, "budget must be between 1"),
    ],
)
def test_controller_refuses_bad_requests_with_the_valid_options(
    strategy: str, knobs: dict[str, Any], budget: int, message: str
) -> None:
    controller = Controller(FakeEngine(), FakePRM())
    with pytest.raises(InvalidSearch, match=message):
        controller.validate(request(PROBLEMS[0], strategy, budget, knobs))


def test_outcome_selection_needs_a_task_with_a_checker() -> None:
    controller = Controller(FakeEngine(), FakePRM())
    with pytest.raises(InvalidSearch, match="exact checker"):
        controller.validate(request("What is 2+2?", "best_of_n", 100, {"select": "outcome"}))
    controller.validate(request(PROBLEMS[0], "best_of_n", 100, {"select": "outcome"}))


def test_prm_strategies_need_a_prm() -> None:
    controller = Controller(FakeEngine(), None)
    with pytest.raises(InvalidSearch, match="needs a PRM"):
        controller.validate(request(PROBLEMS[0], "beam", 100))
    controller.validate(request(PROBLEMS[0], "best_of_n", 100, {"select": "vote"}))


async def test_usage_is_what_the_engines_reported() -> None:
    engine, prm = FakeEngine(), FakePRM()
    controller = Controller(engine, prm)
    found = await controller.run(request(PROBLEMS[0], "best_of_n", 600, {"n": 4}))
    assert found.usage.policy_calls == 4 and found.usage.verifier_calls == 4
    assert found.usage.scored_tokens == sum(
        len(request(PROBLEMS[0], "x", 1).prompt_ids) + len(t.token_ids) + len(t.steps)
        for t in found.candidates
    )


STRATEGY_KNOBS: list[tuple[str, dict[str, Any]]] = [
    ("greedy", {}),
    ("best_of_n", {}),
    ("best_of_n", {"n": 7}),
    ("best_of_n", {"select": "vote", "adaptive": True, "round_size": 2}),
    ("best_of_n", {"select": "weighted_vote", "n": 12}),
    ("best_of_n", {"select": "outcome"}),
    ("best_of_n", {"include_greedy": False}),
    ("best_of_n", {"select": "vote", "n": 5, "include_greedy": False}),
    ("beam", {}),
    ("beam", {"beams": 8, "expansions": 2}),
    ("dvts", {}),
    ("dvts", {"beams": 16, "expansions": 4}),
    ("beam", {"max_depth": 1}),
    ("mcts", {}),
    ("mcts", {"evaluation": "prm", "children": 2}),
    ("revision", {}),
    ("particle_filter", {}),
    ("particle_filter", {"particles": 8, "ess_threshold": 1.0}),
    ("particle_filter", {"temperature": 1.0, "max_depth": 2}),
    ("auto", {}),
]


async def test_no_search_ever_spends_more_than_its_budget() -> None:
    """A property over random (strategy, knobs, budget, problem, seed, slip) configurations."""
    rng = random.Random(7)
    for trial in range(150):
        strategy, knobs = rng.choice(STRATEGY_KNOBS)
        budget = rng.choice([1, 5, 20, 60, 150, 400, 1000, 3000])
        engine = FakeEngine(slip=rng.random() * 0.5, seed=trial)
        controller = Controller(engine, FakePRM(seed=trial))
        text = rng.choice(PROBLEMS)
        found = await controller.run(
            request(text, strategy, budget, knobs, sampling=Sampling(seed=trial), request_id=f"p{trial}")
        )
        spent = found.usage.generated_tokens + found.usage.scored_tokens
        assert spent <= budget, (strategy, knobs, budget, found.usage)
        assert found.stop_reason in ("done", "budget")


# --- Best-of-N ---------------------------------------------------------------------------------------


def test_vote_decided_needs_a_clear_majority() -> None:
    from collections import Counter

    assert not vote_decided(Counter(), 0.95)
    assert not vote_decided(Counter({"a": 2, "b": 1}), 0.95)
    assert vote_decided(Counter({"a": 5}), 0.95)
    assert not vote_decided(Counter({"a": 5, "b": 4}), 0.95)


async def test_best_of_n_batches_samples_into_few_calls() -> None:
    engine, prm = FakeEngine(), FakePRM()
    found = await Controller(engine, prm).run(request(PROBLEMS[0], "best_of_n", 5000))
    assert len(found.candidates) > 20
    # the greedy solution, a round measuring a sample's cost, then the rest at once (and what is left)
    assert engine.calls <= 5 and prm.calls == engine.calls


async def test_best_of_n_prm_picks_the_highest_value_and_vote_the_majority() -> None:
    engine, prm = FakeEngine(slip=0.3), FakePRM()
    controller = Controller(engine, prm)
    found = await controller.run(request(PROBLEMS[1], "best_of_n", 5000, {"n": 16}))
    values = [t.scores[-1] for t in found.candidates if t.finished]
    assert found.score == max(values)
    voted = await controller.run(request(PROBLEMS[1], "best_of_n", 5000, {"n": 16, "select": "vote"}))
    from collections import Counter

    from verifiers.countdown import claimed_answer

    counts = Counter(claimed_answer(t.text) for t in voted.candidates if t.finished)
    assert claimed_answer(voted.text) == counts.most_common(1)[0][0]


async def test_adaptive_vote_stops_early_when_answers_agree() -> None:
    engine = FakeEngine(slip=0.0)
    knobs = {"select": "vote", "adaptive": True, "round_size": 4, "n": 64}
    found = await Controller(engine, FakePRM()).run(request("1 2 -> 3\n", "best_of_n", 10_000, knobs))
    assert found.stop_reason == "done" and len(found.candidates) < 64


async def test_outcome_selection_returns_a_checked_solution() -> None:
    from tasks.countdown import parse_prompt
    from verifiers.countdown import check_solution

    found = await Controller(FakeEngine(slip=0.1), FakePRM()).run(
        request("1 2 -> 3\n", "best_of_n", 5000, {"select": "outcome", "n": 24})
    )
    problem = parse_prompt("1 2 -> 3")
    assert problem is not None and check_solution(problem, found.text).correct


# --- beam search and DVTS ----------------------------------------------------------------------------


async def test_beam_search_makes_one_engine_and_one_prm_call_per_step() -> None:
    engine, prm = FakeEngine(slip=0.2), FakePRM()
    found = await Controller(engine, prm).run(
        request(PROBLEMS[0], "beam", 60_000, {"beams": 8, "expansions": 2})
    )
    assert found.best.finished and found.stop_reason == "done"
    assert engine.calls == prm.calls == 3  # 4 numbers: 3 steps
    assert found.usage.policy_calls == 8 + 4 * 2 + 4 * 2


async def test_beam_keeps_the_best_beams_and_dvts_one_per_subtree() -> None:
    from searchers.base import Trace
    from searchers.beam import Beam, Branch

    traces = [
        Trace(steps=((i,),), scores=(v,)) for i, v in enumerate([0.9, 0.8, 0.1, 0.2, 0.3, 0.05, 0.7, 0.6])
    ]
    branches = [Branch(t, i // 4) for i, t in enumerate(traces)]
    ctx: Any = type("Ctx", (), {"aggregation": "last"})()
    kept = Beam().keep(ctx, branches, 8, 4)
    assert [b.trace.scores[0] for b in kept] == [0.9, 0.8]
    kept = Beam(diverse=True).keep(ctx, branches, 8, 4)
    assert sorted(b.trace.scores[0] for b in kept) == [0.7, 0.9]


@pytest.mark.parametrize("budget", [100, 300, 600, 1000, 2400, 10_000])
@pytest.mark.parametrize("expansions", [2, 4])
def test_beam_width_spends_the_budget_in_multiples_of_m(budget: int, expansions: int) -> None:
    """N is the most beams whose planned search fits: N paths fit, N + M would not (or N + 1 below M)."""
    from searchers.base import COST_MARGIN, stepwise_path_cost
    from searchers.beam import affordable_beams

    engine = FakeEngine()
    ctx = Controller(engine, FakePRM()).context(request(PROBLEMS[0], "beam", budget), budget)
    n, cost = affordable_beams(ctx, expansions), stepwise_path_cost(ctx) * COST_MARGIN
    step = expansions if n >= expansions else 1
    assert n == 1 or n * cost <= budget
    assert (n + step) * cost > budget
    assert n <= expansions or n % expansions == 0


async def test_beam_search_solves_more_than_sampling() -> None:
    """The fake PRM flags slips and dead ends, so step-level search should beat a single sample."""
    from tasks.countdown import parse_prompt
    from verifiers.countdown import check_solution

    wins_beam = wins_sample = 0
    for seed in range(12):
        engine, prm = FakeEngine(slip=0.3, seed=seed), FakePRM(seed=seed)
        controller = Controller(engine, prm)
        text = PROBLEMS[1]
        problem = parse_prompt(text)
        assert problem is not None
        beam = await controller.run(request(text, "beam", 20_000, {"beams": 8}, sampling=Sampling(seed=seed)))
        sample = await controller.run(
            request(text, "best_of_n", 20_000, {"n": 1, "select": "vote"}, sampling=Sampling(seed=seed))
        )
        wins_beam += check_solution(problem, beam.text).correct
        wins_sample += check_solution(problem, sample.text).correct
    assert wins_beam > wins_sample + 3


# --- auto --------------------------------------------------------------------------------------------


def test_auto_table_picks_the_measured_choice_for_the_bin_and_budget(tmp_path: Any) -> None:
    table = AutoTable(
        bins=[0.3, 0.6],
        budgets=[1.0, 4.0, 16.0],
        choices={
            "0": {"4.0": {"strategy": "beam", "knobs": {"expansions": 2}}, "16.0": {"strategy": "dvts"}},
            "2": {"1.0": {"strategy": "greedy"}},
        },
    )
    assert table.choose(0.1, 5.0) == ("beam", {"expansions": 2})
    assert table.choose(0.1, 100.0) == ("dvts", {})
    assert table.choose(0.9, 2.0) == ("greedy", {})
    assert table.choose(0.1, 2.0)[0] == "best_of_n"  # nothing measured there: the safe default
    path = tmp_path / "table.json"
    table.dump(path, fitted_on="test")
    assert AutoTable.load(path) == table


async def test_auto_probes_with_greedy_then_runs_the_chosen_strategy() -> None:
    table = AutoTable(
        [0.5],
        [1.0],
        {
            "0": {"1.0": {"strategy": "beam", "knobs": {"beams": 4}}},
            "1": {"1.0": {"strategy": "beam", "knobs": {"beams": 4}}},
        },
    )
    engine, prm = FakeEngine(slip=0.5), FakePRM()
    controller = Controller(engine, prm, searchers=default_searchers(table))
    progress: list[tuple[str, dict[str, Any]]] = []
    found = await controller.run(
        request(PROBLEMS[0], "auto", 20_000, {"accept": 1.0}, progress=lambda e, d: progress.append((e, d)))
    )
    assert (
        "auto",
        {
            "probe_value": pytest.approx(progress[0][1]["probe_value"]),
            "strategy": "beam",
            "knobs": {"beams": 4},
        },
    ) in progress
    assert found.knobs["chosen"] == {"strategy": "beam", "knobs": {"beams": 4}}
    assert found.strategy == "auto" and found.best.finished


async def test_auto_with_a_tiny_budget_is_greedy() -> None:
    found = await Controller(FakeEngine(), FakePRM()).run(request(PROBLEMS[0], "auto", 30))
    assert len(found.candidates) <= 1 and found.usage.scored_tokens == 0


# --- cancellation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["best_of_n", "beam", "dvts", "particle_filter", "auto"])
async def test_a_cancelled_search_aborts_its_engine_requests(strategy: str) -> None:
    class Slow(FakeEngine):
        async def expand(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(10)

        async def rollout(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(10)

    engine, prm = Slow(), FakePRM()
    controller = Controller(engine, prm)
    task = asyncio.create_task(controller.run(request(PROBLEMS[0], strategy, 5000, request_id="gone")))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "gone" in engine.aborted and "gone" in prm.aborted


@pytest.mark.parametrize("strategy", ["best_of_n", "revision", "beam", "dvts", "mcts", "particle_filter"])
async def test_an_answer_the_prm_cannot_afford_to_score_is_still_returned(strategy: str) -> None:
    """A budget that pays for one solution but not for scoring it: the solution is the answer."""
    engine = FakeEngine(slip=0.0)
    greedy = await Controller(engine, FakePRM()).run(request("2 5 8 -> 11\n", "greedy", 1000))
    budget = greedy.usage.generated_tokens + 10
    found = await Controller(FakeEngine(slip=0.0), FakePRM()).run(request("2 5 8 -> 11\n", strategy, budget))
    assert found.best.finished and found.text, found
    assert found.stop_reason == "budget"


async def test_auto_keeps_the_probe_when_the_chosen_strategy_is_cut_short() -> None:
    """Budget for the probe and one more sample, not for scoring it: the scored probe stands."""
    # without its greedy candidate (the probe), Best-of-N draws one fresh sample, whatever it costs
    knobs = {"n": 1, "include_greedy": False}
    table = AutoTable([0.5], [1.0], {b: {"1.0": {"strategy": "best_of_n", "knobs": knobs}} for b in "01"})
    controller = Controller(FakeEngine(slip=0.5), FakePRM(), searchers=default_searchers(table))
    greedy = await controller.run(request(PROBLEMS[0], "greedy", 1000))
    tokens = greedy.usage.generated_tokens
    probe_cost = tokens + len(request(PROBLEMS[0], "x", 1).prompt_ids) + tokens + 3
    found = await controller.run(request(PROBLEMS[0], "auto", probe_cost + tokens + 5, {"accept": 1.0}))
    assert found.knobs["chosen"]["strategy"] == "best_of_n" and len(found.candidates) == 2
    assert found.best.finished and found.text == greedy.text and found.best.scored


@pytest.mark.parametrize("strategy", ["best_of_n", "beam", "mcts", "particle_filter", "revision"])
async def test_a_solution_too_long_for_the_prm_scores_zero_instead_of_failing(strategy: str) -> None:
    """A PRM with a short context (a user's PRM may read less than the policy writes) still serves: the
    solutions it cannot read score 0 at every step, and the search returns an answer."""
    prm = FakePRM()
    prm.max_model_len = 24  # shorter than most Countdown solutions with their prompt
    asked = request("3 7 9 13 -> 24", strategy, 2000)
    found = await Controller(FakeEngine(), prm).run(asked)
    assert found.text and found.candidates
    read = len(asked.prompt_ids)
    long = [c for c in found.candidates if c.scored and read + len(c.token_ids) + len(c.steps) > 24]
    assert all(c.scores == (0.0,) * len(c.steps) for c in long)
    assert long or strategy != "best_of_n"  # Best-of-N's whole solutions are all too long here
