"""MCTS on the fake policy and PRM: answers, batching, the budget, selection and backup, cancellation."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from fake_engine import FakeEngine
from fake_prm import FakePRM

from engines.base import Continuation, Generation, Sampling
from engines.cost import CostWeights
from searchers.base import Trace, first_step
from searchers.controller import Controller, InvalidSearch, SearchRequest
from searchers.mcts import (
    MCTS,
    MCTSKnobs,
    Node,
    attach_children,
    backup,
    leaf_value,
    most_visited_end,
    remove_virtual_loss,
    select_leaves,
    step_priors,
    tree_of,
)
from tasks.countdown import parse_prompt
from verifiers.countdown import check_solution

PROBLEMS = ["5 9 12 -> 33\n", "3 7 9 13 -> 24\n", "8 3 8 10 -> 30\n", "2 5 8 5 1 -> 52\n"]


class CountingEngine(FakeEngine):
    """The fake policy, counting expand and rollout calls apart."""

    def __init__(self, slip: float = 0.2) -> None:
        super().__init__(slip=slip)
        self.expands = 0
        self.rollouts = 0

    async def expand(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        self.expands += 1
        return await super().expand(prefixes, n, sampling, request_id)

    async def rollout(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        self.rollouts += 1
        return await super().rollout(prefixes, n, sampling, request_id)


def request(engine: FakeEngine, prompt: str, budget: int, **fields: Any) -> SearchRequest:
    return SearchRequest(
        prompt_ids=tuple(engine.encode(prompt)),
        prompt_text=prompt,
        request_id=fields.pop("request_id", "mcts-test"),
        strategy="mcts",
        budget=budget,
        **fields,
    )


def controller(engine: FakeEngine, prm: FakePRM | None) -> Controller:
    return Controller(engine, prm, searchers={"mcts": MCTS()})


# --- whole searches ---------------------------------------------------------------------------------


async def test_finds_a_finished_solution_and_reports_the_tree() -> None:
    engine, prm = FakeEngine(slip=0.1), FakePRM()
    search = request(engine, PROBLEMS[1], 3000, sampling=Sampling(seed=1))
    ctx = controller(engine, prm).context(search, 3000)
    outcome = await MCTS().run(ctx, MCTSKnobs())
    assert outcome.best.finished and outcome.best in outcome.candidates
    assert all(candidate.finished for candidate in outcome.candidates)
    assert outcome.usage == ctx.budget.spent  # what the result reports is what the budget charged
    assert CostWeights().units(outcome.usage) <= 3000
    assert outcome.tree is not None and outcome.tree["visits"] > 0 and outcome.tree["children"]
    json.dumps(outcome.tree)  # JSON-able, for the API


def call_recorder(
    engine: CountingEngine, prm: FakePRM
) -> tuple[list[tuple[int, int, int]], Callable[[str, dict[str, Any]], None]]:
    """A progress callback noting (expand calls, rollout calls, PRM calls) so far after each iteration."""
    seen: list[tuple[int, int, int]] = []

    def progress(event: str, details: dict[str, Any]) -> None:
        seen.append((engine.expands, engine.rollouts, prm.calls))

    return seen, progress


@pytest.mark.parametrize("evaluation", ["prm", "rollout", "prm+rollout"])
async def test_one_engine_call_and_one_prm_call_per_iteration(evaluation: str) -> None:
    """Expansion by PRM value is one expand call; with rollouts, one rollout call whose first steps are
    the children (no separate expand)."""
    engine, prm = CountingEngine(), FakePRM()
    seen, progress = call_recorder(engine, prm)
    knobs = {"iterations": 6, "evaluation": evaluation}
    outcome = await controller(engine, prm).run(
        request(engine, PROBLEMS[3], 60_000, knobs=knobs, progress=progress)
    )
    assert outcome.stop_reason == "done" and len(seen) >= 2
    greedy = (0, 1, 1)  # the greedy solution's rollout and scoring come before the first iteration
    for before, after in zip([greedy, *seen], seen, strict=False):
        expands, rollouts, scorings = (a - b for a, b in zip(after, before, strict=True))
        assert (expands, rollouts) == ((1, 0) if evaluation == "prm" else (0, 1))  # every leaf in one call
        assert scorings <= 1
    assert engine.calls == engine.expands + engine.rollouts == seen[-1][0] + seen[-1][1]


async def test_never_spends_more_than_the_budget() -> None:
    engines = [FakeEngine(slip=0.0), FakeEngine(slip=0.3)]
    prm = FakePRM()
    rng = random.Random(7)
    reasons = set()
    for case in range(150):
        engine = rng.choice(engines)
        knobs = {
            "iterations": rng.choice([None, None, 1, 3, 10]),
            "leaves_per_iteration": rng.randint(1, 6),
            "children": rng.randint(1, 6),
            "c_puct": rng.choice([0.0, 0.5, 1.5, 4.0]),
            "virtual_loss": rng.choice([0.0, 1.0, 3.0]),
            "evaluation": rng.choice(["prm", "rollout", "prm+rollout"]),
            "use_outcome": rng.random() < 0.5,
            "final": rng.choice(["value", "visits"]),
        }
        budget = rng.randint(1, 3000)
        search = request(
            engine,
            rng.choice(PROBLEMS),
            budget,
            knobs=knobs,
            aggregation=rng.choice(["last", "min", "prod", "mean"]),
            sampling=Sampling(seed=rng.choice([None, case])),
            max_verifier_calls=rng.choice([None, None, 5, 40]),
        )
        outcome = await controller(engine, prm).run(search)
        assert CostWeights().units(outcome.usage) <= budget, (knobs, budget)
        assert outcome.stop_reason in ("done", "budget"), (knobs, budget)
        assert all(candidate.finished for candidate in outcome.candidates)
        assert outcome.tree is not None and values_are_means(outcome.tree), (knobs, budget)
        json.dumps(outcome.tree)
        reasons.add(outcome.stop_reason)
    assert reasons == {"done", "budget"}  # both ways of ending were exercised


class WidthRecorder(FakeEngine):
    """The fake policy, noting how many samples each call asked for."""

    def __init__(self) -> None:
        super().__init__(slip=0.2)
        self.widths: list[int] = []

    async def expand(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        self.widths.append(n)
        return await super().expand(prefixes, n, sampling, request_id)

    async def rollout(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        self.widths.append(n)
        return await super().rollout(prefixes, n, sampling, request_id)


async def test_the_last_iteration_spends_what_is_left_on_fewer_children() -> None:
    """A budget between two full iterations still buys children for the best leaf, not nothing."""
    narrowed = 0
    for budget in range(240, 1400, 40):  # below 234 a graded rollout and a greedy completion don't fit
        engine = WidthRecorder()
        knobs = {"children": 4, "leaves_per_iteration": 1, "evaluation": "rollout"}
        outcome = await controller(engine, FakePRM()).run(
            request(engine, PROBLEMS[3], budget, knobs=knobs, sampling=Sampling(seed=3))
        )
        assert CostWeights().units(outcome.usage) <= budget
        greedy, *search = engine.widths
        assert greedy == 1 and all(1 <= width <= 4 for width in search)
        assert search[0] == 4  # the prompt's own expansion is full
        narrowed += any(width < 4 for width in search[1:])
    assert narrowed >= 5


def values_are_means(tree: dict[str, Any]) -> bool:
    """Every reported value is a mean of values in [0, 1]: no virtual loss was left behind."""
    mean = tree["value"]
    own = tree["visits"] >= 0 and (mean is None or -1e-9 <= mean <= 1 + 1e-9)
    return own and all(values_are_means(child) for child in tree["children"])


async def test_outcome_check_finds_a_correct_solution_and_stops() -> None:
    engine, prm = FakeEngine(slip=0.1), FakePRM()
    prompt = "3 1 7 -> 11\n"
    reports: list[dict[str, Any]] = []
    knobs = {"use_outcome": True, "children": 8, "evaluation": "prm+rollout"}
    search = request(
        engine, prompt, 20_000, knobs=knobs, progress=lambda event, details: reports.append(details)
    )
    outcome = await controller(engine, prm).run(search)
    problem = parse_prompt(prompt)
    assert problem is not None
    assert check_solution(problem, outcome.text).correct
    assert outcome.stop_reason == "done" and reports[-1]["solved"]  # it stopped because it was solved
    assert [report["solved"] for report in reports[:-1]] == [False] * (len(reports) - 1)


async def test_rollouts_graded_by_the_checker_need_no_prm() -> None:
    engine = FakeEngine(slip=0.1)
    knobs = {"use_outcome": True, "evaluation": "rollout", "children": 8}
    outcome = await controller(engine, None).run(request(engine, PROBLEMS[0], 20_000, knobs=knobs))
    assert outcome.usage.scored_tokens == 0 and outcome.best.finished


async def test_cancellation_aborts_the_request() -> None:
    engine, prm = FakeEngine(slip=0.0), FakePRM()
    iterations = asyncio.Event()

    def progress(event: str, details: dict[str, Any]) -> None:
        iterations.set()

    search = request(engine, PROBLEMS[3], 60_000, request_id="cancel-me", progress=progress)
    task = asyncio.create_task(controller(engine, prm).run(search))
    await iterations.wait()
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "cancel-me" in engine.aborted and "cancel-me" in prm.aborted


@pytest.mark.parametrize(
    ("knobs", "param"),
    [
        ({"children": 0}, "search.knobs"),
        ({"leaves_per_iteration": 0}, "search.knobs"),
        ({"iterations": 0}, "search.knobs"),
        ({"c_puct": -1.0}, "search.knobs"),
        ({"evaluation": "vote"}, "search.knobs"),
        ({"final": "best"}, "search.knobs"),
        ({"rollouts": 3}, "search.knobs"),
    ],
)
def test_invalid_knobs_are_refused(knobs: dict[str, Any], param: str) -> None:
    engine = FakeEngine()
    with pytest.raises(InvalidSearch) as refused:
        controller(engine, FakePRM()).validate(request(engine, PROBLEMS[0], 100, knobs=knobs))
    assert refused.value.param == param


def test_a_prm_search_is_refused_without_a_prm() -> None:
    engine = FakeEngine()
    with pytest.raises(InvalidSearch) as refused:
        controller(engine, None).validate(request(engine, PROBLEMS[0], 100, knobs={"evaluation": "prm"}))
    assert refused.value.param == "search.strategy"
    assert not MCTS().needs_prm(MCTSKnobs(evaluation="rollout", use_outcome=True))


# --- the four phases on hand-built trees ------------------------------------------------------------


def child(parent: Node, prior: float, visits: int = 0, mean: float = 0.0, ended: bool = False) -> Node:
    node = Node(Trace(finished=ended), prior=prior, parent=parent, visits=visits, total=visits * mean)
    node.own_value = mean if visits else None
    parent.children.append(node)
    return node


def test_puct_prefers_the_prior_and_virtual_loss_sends_the_next_leaf_elsewhere() -> None:
    root = Node(Trace(), visits=3, total=1.5)
    likely, unlikely = child(root, 0.8, 1, 0.5), child(root, 0.2, 1, 0.5)
    paths = select_leaves(root, count=2, c_puct=1.5, virtual_loss=1.0)
    assert [path[-1] for path in paths] == [likely, unlikely]
    assert root.visits == 5 and likely.visits == 2 and likely.total == pytest.approx(-0.5)
    # Without virtual loss, the second pick is still a different leaf: one leaf is never picked twice.
    for path in paths:
        remove_virtual_loss(path, 1.0)
    assert (root.visits, root.total, likely.visits, likely.total) == (3, 1.5, 1, 0.5)
    again = select_leaves(root, count=4, c_puct=1.5, virtual_loss=0.0)
    assert [path[-1] for path in again] == [likely, unlikely]  # only two leaves: no duplicates


def test_value_beats_prior_once_visits_add_up() -> None:
    root = Node(Trace(), visits=40, total=20.0)
    likely, good = child(root, 0.9, 30, 0.2), child(root, 0.1, 9, 0.9)
    [path] = select_leaves(root, count=1, c_puct=1.0, virtual_loss=1.0)
    assert path == [root, good] and likely.visits == 30


def test_finished_leaves_are_revisited_without_blocking_open_ones() -> None:
    root = Node(Trace(), visits=2, total=1.8)
    finished = child(root, 0.9, 1, 0.95, ended=True)
    open_leaf = child(root, 0.1, 1, 0.1)
    paths = select_leaves(root, count=1, c_puct=1.0, virtual_loss=1.0)
    assert [path[-1] for path in paths] == [finished, open_leaf]
    for path in paths:
        backup(path, leaf_value(path[-1]), 1.0)
    assert finished.visits == 2 and finished.mean == pytest.approx(0.95)
    assert open_leaf.visits == 2 and root.visits == 4
    assert root.total == pytest.approx(1.8 + 0.95 + 0.1)
    open_leaf.trace = Trace(truncated=True)  # now every leaf has ended: only finished paths come back
    assert all(path[-1].terminal for path in select_leaves(root, 2, 1.0, 1.0))


def test_backup_adds_the_prior_weighted_value_of_the_new_children() -> None:
    root = Node(Trace())
    leaf = child(root, 1.0, 1, 0.5)
    path = [root, leaf]
    for node in path:
        node.visits += 1
        node.total -= 1.0  # the virtual loss of its selection
    child(leaf, 0.75, 1, 0.8)
    child(leaf, 0.25, 1, 0.4)
    backup(path, leaf_value(leaf), 1.0)
    assert leaf.visits == 2 and leaf.total == pytest.approx(0.5 + 0.7)
    assert root.visits == 1 and root.total == pytest.approx(0.7)
    assert most_visited_end(root) in leaf.children


def test_children_merge_identical_steps_and_priors_follow_per_token_logprobs() -> None:
    engine = FakeEngine()
    ctx = controller(engine, FakePRM()).context(request(engine, PROBLEMS[0], 100), 100)
    step = tuple(engine.encode("12+9=21 [5 21]\n")[1:])
    other = tuple(engine.encode("9-5=4 [12 4]\n")[1:])
    samples = [
        Continuation(step, "12+9=21 [5 21]\n", "step", -0.1 * len(step)),
        Continuation(other, "9-5=4 [12 4]\n", "step", -1.0 * len(other)),
        Continuation(step, "12+9=21 [5 21]\n", "step", -0.1 * len(step)),
    ]
    priors = step_priors(samples)
    assert sum(priors) == pytest.approx(1.0) and priors[0] == priors[2] > priors[1]
    leaf = Node(Trace())
    children = attach_children(ctx, leaf, samples)
    assert [c.step for c in children] == ["12+9=21 [5 21]\n", "9-5=4 [12 4]\n"]
    assert children[0].prior == pytest.approx(priors[0] + priors[2])
    assert children[0].trace.steps == (step,) and children[0].parent is leaf


def test_a_rollouts_first_step_is_the_child_with_its_own_logprob() -> None:
    engine = FakeEngine()
    step = tuple(engine.encode("12+9=21 [5 21]\n"))
    rest = tuple(engine.encode("21+5=26 [26]\n"))
    whole = Continuation(step + rest, "12+9=21 [5 21]\n21+5=26 [26]\n", "end", -3.0, (-1.0, -2.0))
    first = first_step(whole, engine.split_steps, engine.decode)
    assert first == Continuation(step, "12+9=21 [5 21]\n", "step", -1.0, (-1.0,))
    alone = Continuation(rest, "21+5=26 [26]\n", "end", -2.0, (-2.0,))
    assert first_step(alone, engine.split_steps, engine.decode) is alone  # one step: where it ended


def test_the_tree_report_keeps_visited_nodes_up_to_the_limit() -> None:
    root = Node(Trace(), visits=5, total=2.0)
    for index in range(6):
        child(root, 1 / 6, index, 0.5)
    report = tree_of(root, limit=4)
    assert [c["visits"] for c in report["children"]] == [5, 4, 3]
    assert report["children"][0]["value"] == pytest.approx(0.5)
