"""Every strategy end to end on the real vLLM policy and PRM engines with the shipped default models."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engines.base import Sampling
from engines.cost import CostWeights
from engines.usage import Usage
from engines.vllm_engine import VLLMPolicyEngine
from searchers.controller import Controller, SearchRequest
from tasks.sets import load_eval_set
from verifiers.countdown import split_steps
from verifiers.vllm_prm import VLLMPRM

pytestmark = pytest.mark.engine

TASKS = load_eval_set(4, limit=2)
STRATEGIES: list[tuple[str, dict[str, Any]]] = [
    ("greedy", {}),
    ("best_of_n", {}),
    ("best_of_n", {"select": "vote", "adaptive": True}),
    ("best_of_n", {"select": "weighted_vote", "n": 6}),
    ("best_of_n", {"select": "outcome", "n": 6}),
    ("beam", {}),
    ("beam", {"evaluation": "step"}),
    ("dvts", {}),
    ("mcts", {}),
    ("mcts", {"evaluation": "prm+rollout"}),
    ("particle_filter", {}),
    ("particle_filter", {"ess_threshold": 1.0}),
    ("revision", {}),
    ("auto", {"accept": 1.0}),
]


def make_request(
    policy: VLLMPolicyEngine, strategy: str, knobs: dict[str, Any], budget: int, **extra: Any
) -> Any:
    task = TASKS[extra.pop("task", 0)]
    return SearchRequest(
        prompt_ids=tuple(policy.encode(task.prompt)),
        prompt_text=task.prompt,
        request_id=extra.pop("request_id", f"t-{strategy}"),
        strategy=strategy,
        budget=budget,
        knobs=knobs,
        sampling=Sampling(seed=extra.pop("seed", 3)),
        **extra,
    )


def idle(policy: VLLMPolicyEngine, prm: VLLMPRM) -> bool:
    return (
        policy.engine.output_processor.get_num_unfinished_requests() == 0
        and prm.engine.output_processor.get_num_unfinished_requests() == 0
    )


# (strategy, knobs, budget, weights): a small set of the fake-engine property's configurations
BUDGET_CASES: list[tuple[str, dict[str, Any], int, CostWeights]] = [
    ("best_of_n", {}, 300, CostWeights()),
    ("beam", {"beams": 4, "expansions": 2}, 400, CostWeights(2.0, 0.0, 0.05, 0.0)),
    ("beam", {"evaluation": "step"}, 500, CostWeights()),
    ("dvts", {}, 600, CostWeights(0.1, 0.01, 0.3, 0.01)),
    ("mcts", {}, 500, CostWeights(0.02, 0.5, 1.5, 2.0)),
    ("mcts", {"evaluation": "prm"}, 45, CostWeights()),
    ("revision", {}, 250, CostWeights(1.0, 1.0, 1.0, 1.0)),
    ("auto", {"accept": 1.0}, 700, CostWeights(0.37, 0.02, 0.37, 0.02)),
    ("particle_filter", {}, 550, CostWeights(0.2, 0.05, 0.2, 0.05)),
    ("greedy", {}, 20, CostWeights(0.5, 0.1, 0.5, 0.1)),
]


def since(before: Usage, after: Usage) -> Usage:
    return Usage(**{k: v - getattr(before, k) for k, v in vars(after).items()})


@pytest.mark.parametrize(
    ("strategy", "knobs", "budget", "weights"),
    BUDGET_CASES,
    ids=[f"{s}-{b}-{i}" for i, (s, _, b, _) in enumerate(BUDGET_CASES)],
)
async def test_no_search_spends_more_than_its_budget_by_the_engines_own_counts(
    policy_engine: VLLMPolicyEngine,
    prm_engine: VLLMPRM,
    strategy: str,
    knobs: dict[str, Any],
    budget: int,
    weights: CostWeights,
) -> None:
    """The budget against the tokens the vLLM adapters counted from vLLM's outputs (below the metering):
    every token was charged, and the units they cost fit the budget, cache hits at their weights."""
    before = policy_engine.served + prm_engine.served
    controller = Controller(policy_engine, prm_engine, weights=weights)
    found = await controller.run(
        make_request(policy_engine, strategy, knobs, budget, request_id=f"t-unit-{strategy}")
    )
    counted = since(before, policy_engine.served + prm_engine.served)
    assert counted == found.usage
    assert weights.units(counted) <= budget + 1e-9
    assert found.stop_reason in ("done", "budget")
    assert idle(policy_engine, prm_engine)


@pytest.mark.parametrize(
    ("strategy", "knobs"), STRATEGIES, ids=[f"{s}-{i}" for i, (s, _) in enumerate(STRATEGIES)]
)
async def test_every_strategy_runs_on_the_real_engines_within_budget(
    policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM, strategy: str, knobs: dict[str, Any]
) -> None:
    controller = Controller(policy_engine, prm_engine)
    budget = 900
    found = await controller.run(make_request(policy_engine, strategy, knobs, budget))
    assert controller.weights.units(found.usage) <= budget
    assert found.usage.generated_tokens > 0 and found.usage.policy_calls > 0
    assert found.best.finished and split_steps(found.text), found
    assert found.text == "".join(found.best.texts)
    if strategy not in ("greedy",) and knobs.get("select") not in ("vote", "outcome"):
        assert found.usage.scored_tokens > 0 and found.score is not None
    assert idle(policy_engine, prm_engine)


async def test_step_level_search_reuses_the_prefix_cache(
    policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM
) -> None:
    controller = Controller(policy_engine, prm_engine)
    found = await controller.run(
        make_request(policy_engine, "beam", {"beams": 16, "evaluation": "step"}, 20_000, task=1)
    )
    assert found.usage.cached_prompt_tokens > 0


async def test_concurrent_searches_share_the_engines(
    policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM
) -> None:
    controller = Controller(policy_engine, prm_engine)
    requests = [
        make_request(policy_engine, s, {}, 600, task=i % 2, request_id=f"t-many-{i}")
        for i, s in enumerate(["best_of_n", "beam", "mcts", "revision", "dvts", "auto"])
    ]
    results = await asyncio.gather(*(controller.run(r) for r in requests))
    assert all(controller.weights.units(r.usage) <= 600 for r in results)
    assert idle(policy_engine, prm_engine)


@pytest.mark.parametrize("strategy", ["best_of_n", "beam", "mcts", "particle_filter", "revision"])
async def test_a_cancelled_search_leaves_the_engines_idle(
    policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM, strategy: str
) -> None:
    controller = Controller(policy_engine, prm_engine)
    request = make_request(policy_engine, strategy, {}, 60_000, request_id=f"t-gone-{strategy}")
    task = asyncio.create_task(controller.run(request))
    await asyncio.sleep(0.4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)
    assert idle(policy_engine, prm_engine)


async def test_a_deadline_ends_the_search_with_its_best_so_far(
    policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM
) -> None:
    controller = Controller(policy_engine, prm_engine)
    found = await controller.run(make_request(policy_engine, "best_of_n", {"n": 1000}, 60_000, timeout_s=1.0))
    assert found.stop_reason == "deadline"
    await asyncio.sleep(0.3)
    assert idle(policy_engine, prm_engine)


@pytest.mark.parametrize("seed", [2**63 - 1, -(2**62)])
async def test_a_seed_at_the_edge_of_64_bits_still_searches(
    policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM, seed: int
) -> None:
    """Seeds derived from the request's (per round, pass and sample) stay inside the 64 bits vLLM
    takes: a client's large or negative seed is searched with, not refused by the engine."""
    controller = Controller(policy_engine, prm_engine)
    found = await controller.run(make_request(policy_engine, "particle_filter", {}, 400, seed=seed))
    assert found.usage.policy_calls > 1 and found.best.finished
    assert idle(policy_engine, prm_engine)
