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
from engines.cost import CostWeights
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


WEIGHTS = CostWeights(prefilled=0.5, cached_prompt=0.1, scored=0.25, cached_scored=0.05)


def test_units_price_each_kind_of_token_at_its_weight() -> None:
    usage = Usage(
        prompt_tokens=40,
        cached_prompt_tokens=30,
        generated_tokens=7,
        scored_tokens=100,
        cached_scored_tokens=60,
        policy_calls=3,
        verifier_calls=2,
    )
    assert WEIGHTS.units(usage) == pytest.approx(7 + 10 * 0.5 + 30 * 0.1 + 40 * 0.25 + 60 * 0.05)
    assert CostWeights(1.0, 1.0, 1.0, 1.0).units(usage) == 7 + 40 + 100  # every token alike
    assert CostWeights().measured is None  # the defaults say they are not measured
    with pytest.raises(ValueError, match="scored"):
        CostWeights(scored=-0.1)


def test_budget_clamps_generation_to_what_is_left_in_units() -> None:
    budget = Budget(100, weights=WEIGHTS)
    # the worst case: 40 prompt tokens prefilled (20 units), then 4 x 20 generated tokens
    reservation = budget.clamp_generation(4, 48, 40)
    assert reservation.max_tokens == 20 and budget.remaining == pytest.approx(0)
    # the engine served 30 of the prompt tokens from its cache and sampled 60 tokens
    budget.settle(reservation, Usage(prompt_tokens=40, cached_prompt_tokens=30, generated_tokens=60))
    assert budget.used == pytest.approx(60 + 10 * 0.5 + 30 * 0.1) and budget.remaining == pytest.approx(32)
    with pytest.raises(BudgetExhausted):
        budget.clamp_generation(33, 48, 0)
    with pytest.raises(BudgetExhausted):
        budget.clamp_generation(1, 48, 64)  # the prompt alone costs all that is left
    assert budget.clamp_generation(1, 48, 62).max_tokens == 1


def test_a_cache_hit_weighed_above_prefill_is_reserved_at_its_weight() -> None:
    budget = Budget(100, weights=CostWeights(prefilled=0.0, cached_prompt=2.0, scored=0.1, cached_scored=3.0))
    assert budget.clamp_generation(1, 100, 40).max_tokens == 20  # 40 prompt tokens could all hit: 80 units
    with pytest.raises(BudgetExhausted):
        budget.reserve(7, 1)  # 7 PRM tokens could all hit: 21 units, 20 left


def test_budget_refuses_scoring_that_does_not_fit_and_caps_verifier_calls() -> None:
    budget = Budget(100, max_verifier_calls=2, weights=WEIGHTS)
    with pytest.raises(BudgetExhausted):
        budget.reserve(401, 1)  # 100.25 units, all read as if uncached
    reservation = budget.reserve(400, 2)
    assert budget.remaining == 0
    budget.settle(reservation, Usage(scored_tokens=400, cached_scored_tokens=200, verifier_calls=2))
    assert budget.used == pytest.approx(200 * 0.25 + 200 * 0.05)  # the cached half at its own weight
    with pytest.raises(BudgetExhausted, match="verifier calls"):
        budget.reserve(10, 1)


def test_budget_caps_prefill_in_the_worst_case() -> None:
    budget = Budget(1000, max_prefill_tokens=30, weights=WEIGHTS)
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
    ("beam", {"evaluation": "rollout"}),
    ("dvts", {"evaluation": "rollout", "beams": 8, "expansions": 2}),
    ("mcts", {}),
    ("mcts", {"evaluation": "prm", "children": 2}),
    ("revision", {}),
    ("particle_filter", {}),
    ("particle_filter", {"particles": 8, "ess_threshold": 1.0}),
    ("particle_filter", {"temperature": 1.0, "max_depth": 2}),
    ("mcts", {"evaluation": "prm", "children": 3, "leaves_per_iteration": 2}),
    ("mcts", {"evaluation": "prm+rollout", "final": "visits"}),
    ("mcts", {"evaluation": "rollout", "use_outcome": True}),
    ("revision", {"chains": 2, "resume": "weakest", "rounds": 3}),
    ("auto", {}),
    ("auto", {"accept": 1.0}),
]


def random_weights(rng: random.Random) -> CostWeights:
    """Weights as a deployment might measure them, and extreme ones: scoring nearly free, prefill dearer
    than decoding, cache hits dearer than misses, every token alike."""
    shapes = [
        CostWeights(),
        CostWeights(1.0, 1.0, 1.0, 1.0),
        CostWeights(prefilled=2.0, cached_prompt=0.0, scored=0.05, cached_scored=0.0),
        CostWeights(prefilled=0.02, cached_prompt=0.5, scored=1.5, cached_scored=2.0),
        CostWeights(
            prefilled=rng.uniform(0.0, 2.0),
            cached_prompt=rng.uniform(0.0, 2.0),
            scored=rng.uniform(0.05, 2.0),
            cached_scored=rng.uniform(0.0, 2.0),
        ),
    ]
    return rng.choice(shapes)


async def test_no_search_ever_spends_more_than_its_budget() -> None:
    """A property over random (strategy, knobs, budget, weights, problem, seed, slip, PRM cache)
    configurations, checked against the tokens the fake engines counted themselves: a searcher that
    called an engine around the metered adapters would show up as well as a budget that overspent."""
    rng = random.Random(7)
    reasons = set()
    for trial in range(240):
        strategy, knobs = rng.choice(STRATEGY_KNOBS)
        budget = rng.choice([1, 5, 20, 60, 150, 400, 1000, 3000])
        weights = random_weights(rng)
        engine = FakeEngine(slip=rng.random() * 0.5, seed=trial)
        prm = FakePRM(seed=trial, prefix_cache=rng.random() < 0.5)
        controller = Controller(engine, prm, weights=weights)
        text = rng.choice(PROBLEMS)
        found = await controller.run(
            request(text, strategy, budget, knobs, sampling=Sampling(seed=trial), request_id=f"p{trial}")
        )
        case = (strategy, knobs, budget, weights, found.usage)
        counted = engine.served + prm.served
        assert counted == found.usage, case  # every token was charged, through the adapters
        assert weights.units(counted) <= budget + 1e-9, case
        assert found.stop_reason in ("done", "budget"), case
        reasons.add(found.stop_reason)
    assert reasons == {"done", "budget"}


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
    assert engine.calls == prm.calls == 1 + 3  # the greedy solution first, then 4 numbers: 3 steps
    assert found.usage.policy_calls == 1 + 8 + 4 * 2 + 4 * 2


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


@pytest.mark.parametrize("strategy", ["beam", "dvts", "particle_filter"])
async def test_a_budget_sized_search_runs_more_passes_on_what_its_caches_saved(strategy: str) -> None:
    """The first pass plans paths at their uncached price; the fake engines' prefix caches make them
    cheaper, so later passes, sized at the measured price, spend the rest: less than one more path's
    worth is left, and never more than the budget is spent."""
    budget = 3000
    events: list[tuple[str, dict[str, Any]]] = []
    asked = request(PROBLEMS[0], strategy, budget, progress=lambda e, d: events.append((e, d)))
    found = await Controller(FakeEngine(slip=0.2), FakePRM()).run(asked)
    passes = [d for e, d in events if e == "pass"]
    assert passes and [p["index"] for p in passes] == list(range(1, len(passes) + 1))
    spent = CostWeights().units(found.usage)
    assert spent <= budget
    assert budget - spent < passes[-1]["units_per_path"] * 1.1 * 2  # at most about one path unspent
    assert found.best.finished and found.best in found.candidates


@pytest.mark.parametrize(("strategy", "knob"), [("beam", "beams"), ("particle_filter", "particles")])
async def test_a_search_of_the_requested_width_runs_once(strategy: str, knob: str) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    asked = request(PROBLEMS[0], strategy, 60_000, {knob: 4}, progress=lambda e, d: events.append((e, d)))
    await Controller(FakeEngine(slip=0.2), FakePRM()).run(asked)
    assert not [d for e, d in events if e == "pass"]


async def test_each_pass_draws_on_its_own_seeds() -> None:
    from searchers.beam import pass_context

    ctx = Controller(FakeEngine(), FakePRM()).context(request(PROBLEMS[0], "beam", 1000), 1000)
    seeds = [pass_context(ctx, index).seeded(0).seed for index in range(3)]
    assert seeds[0] == ctx.seeded(0).seed and len(set(seeds)) == 3


async def test_beam_with_rollouts_samples_whole_solutions_and_ranks_a_step_by_its_rollout() -> None:
    """Each round is one rollout call and one PRM call; a kept beam's steps carry its rollout's first
    scores, and every finished rollout is an answer candidate."""
    from searchers.base import Trace
    from searchers.beam import Beam, Branch

    engine, prm = FakeEngine(slip=0.3), FakePRM()
    knobs = {"beams": 8, "expansions": 2, "evaluation": "rollout", "include_greedy": False}
    found = await Controller(engine, prm).run(request(PROBLEMS[2], "beam", 60_000, knobs))
    assert found.best.finished
    assert engine.calls == prm.calls  # one rollout call, then one scoring call, each round
    assert found.usage.policy_calls == 8 + (engine.calls - 1) * 4 * 2
    finished = [c for c in found.candidates if c.finished]
    assert len(finished) > 1 and all(c.scored for c in finished)
    # ranking: the step whose rollout the PRM values more is kept, whatever the step's own score
    weak_step_good_rollout = Branch(Trace(((1,),), scores=(0.1,)), 0, Trace(((1,), (2,)), scores=(0.1, 0.9)))
    strong_step_bad_rollout = Branch(Trace(((3,),), scores=(0.8,)), 0, Trace(((3,), (4,)), scores=(0.8, 0.2)))
    ctx: Any = type("Ctx", (), {"aggregation": "last"})()
    kept = Beam().keep(ctx, [strong_step_bad_rollout, weak_step_good_rollout], 2, 2)
    assert kept == [weak_step_good_rollout]


def test_derived_seeds_fit_64_bits_and_keep_small_seeds_as_they_were() -> None:
    from engines.base import derived_seed

    assert derived_seed(3, 7919, 2) == 3 * 7919 + 2  # the seeds every committed sweep drew with
    for seed in [0, 30_000, 2**62, 2**63 - 1, 2**80, -1, -(2**70)]:
        for multiplier in [7919, 104_729, 1_000_003]:
            assert 0 <= derived_seed(seed, multiplier, 5) < 2**63
    assert derived_seed(2**62, 7919, 1) != derived_seed(2**62, 7919, 2)


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


# --- planning in compute units -------------------------------------------------------------------------

CHEAP_PRM = CostWeights(prefilled=0.1, cached_prompt=0.0, scored=0.05, cached_scored=0.0)
EVERY_TOKEN_ALIKE = CostWeights(1.0, 1.0, 1.0, 1.0)


def test_planners_price_calls_with_the_budgets_weights() -> None:
    """Each planner's estimate, in units, under weights where no kind of token costs 1."""
    from searchers.base import Trace
    from searchers.base import stepwise_path_cost as path_cost
    from searchers.best_of_n import sample_cost
    from searchers.revision import Pace

    weights = CostWeights(prefilled=0.5, cached_prompt=0.25, scored=0.2, cached_scored=0.1)
    ctx = Controller(FakeEngine(), FakePRM(), weights=weights).context(request(PROBLEMS[0], "beam", 900), 900)
    prompt, step, steps = len(ctx.prompt_ids), ctx.hints.step_tokens, ctx.hints.steps
    assert sample_cost(ctx, 40, scored=True) == pytest.approx(40 + 0.5 * prompt + 0.2 * (prompt + 44))
    assert sample_cost(ctx, 40, scored=False) == pytest.approx(40 + 0.5 * prompt)
    assert path_cost(ctx) == pytest.approx(
        sum(
            step + 0.5 * (prompt + (d - 1) * step) + 0.2 * (prompt + d * (step + 1))
            for d in range(1, steps + 1)
        )
    )
    kept = Trace(steps=((5, 6, 7),), texts=("x",), scores=(0.9,))
    rewrite = (2 * 10) + 0.5 * (prompt + 3) + 0.2 * (prompt + 3 + 20 + 1 + 2)  # 2 new steps of 10 tokens
    assert Pace(3, 10).rewrite_cost(ctx, kept) == pytest.approx(rewrite * 1.1)
    assert ctx.score_units([kept]) == pytest.approx(0.2 * (prompt + 4))


@pytest.mark.parametrize("strategy", ["best_of_n", "beam", "dvts", "mcts", "revision"])
async def test_a_cheaper_prm_buys_more_search_for_the_same_budget(strategy: str) -> None:
    """Where PRM tokens and prefills cost less, the same budget buys more PRM-scored candidates: a planner
    that counted every token as one unit would plan the same search under both weights."""
    calls = []
    for weights in (EVERY_TOKEN_ALIKE, CHEAP_PRM):
        controller = Controller(FakeEngine(slip=0.3), FakePRM(), weights=weights)
        found = await controller.run(request(PROBLEMS[0], strategy, 2000))
        assert weights.units(found.usage) <= 2000
        calls.append(found.usage.verifier_calls)
    assert calls[1] > 1.5 * calls[0], calls


async def test_prm_cache_hits_are_charged_at_their_own_weight() -> None:
    weights = CostWeights(prefilled=0.4, cached_prompt=0.0, scored=1.0, cached_scored=0.0)
    engine, prm = FakeEngine(), FakePRM(prefix_cache=True)
    found = await Controller(engine, prm, weights=weights).run(
        request(PROBLEMS[0], "beam", 3000, {"beams": 8})
    )
    usage = found.usage
    assert usage.cached_scored_tokens > 0 and usage.cached_prompt_tokens > 0
    charged = usage.generated_tokens + 0.4 * usage.prefilled_prompt_tokens
    charged += usage.scored_tokens - usage.cached_scored_tokens
    assert weights.units(usage) == pytest.approx(charged)


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
    sample = controller.weights.units(greedy.usage)  # its prompt and its tokens
    read = len(request(PROBLEMS[0], "x", 1).prompt_ids) + len(greedy.best.token_ids) + len(greedy.best.steps)
    probe = controller.weights.for_scoring(read)  # what scoring one sample costs: more than 5 units
    assert probe > 5
    found = await controller.run(
        request(PROBLEMS[0], "auto", int(sample + probe + sample + 5), {"accept": 1.0})
    )
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
