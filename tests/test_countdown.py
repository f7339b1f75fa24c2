"""The Countdown task: generator, solver, reference solutions, text format and move rules."""

from __future__ import annotations

import random

import pytest

from tasks.countdown import (
    NUMBER_RANGE,
    TARGET_RANGE,
    Problem,
    SolutionCounter,
    generate,
    moves,
    parse_prompt,
    reference_solution,
    solution_text,
    solve,
)
from verifiers.countdown import check_solution

TIERS = (3, 4, 5)


def solvable(problems: list[Problem]) -> bool:
    counters: dict[int, SolutionCounter] = {}
    for problem in problems:
        counter = counters.setdefault(problem.target, SolutionCounter(problem.target))
        if counter.count(problem.numbers) == 0:
            return False
    return True


@pytest.mark.parametrize("tier", TIERS)
def test_generate_is_reproducible_and_distinct(tier: int) -> None:
    first = generate(tier, 60, seed=7)
    assert first == generate(tier, 60, seed=7)
    assert first != generate(tier, 60, seed=8)
    assert len(set(first)) == len(first) == 60


@pytest.mark.parametrize("tier", TIERS)
def test_generated_problems_are_in_range_and_solvable(tier: int) -> None:
    problems = generate(tier, 60, seed=1)
    for problem in problems:
        assert problem.tier == tier
        assert all(NUMBER_RANGE[0] <= n <= NUMBER_RANGE[1] for n in problem.numbers)
        assert TARGET_RANGE[0] <= problem.target <= TARGET_RANGE[1]
    assert solvable(problems)


def test_generate_rejects_tiny_tiers() -> None:
    with pytest.raises(ValueError):
        generate(1, 5, seed=0)


@pytest.mark.parametrize("tier", TIERS)
def test_solver_solutions_all_check_correct(tier: int) -> None:
    for problem in generate(tier, 10, seed=3):
        solutions = solve(problem.numbers, problem.target, limit=25)
        assert solutions
        for steps in solutions:
            assert len(steps) == tier - 1
            assert check_solution(problem, solution_text(steps)).correct


def test_solver_finds_no_solution_for_impossible_problem() -> None:
    assert solve((1, 1), 5) == []
    assert SolutionCounter(5).count((1, 1)) == 0


def test_solution_counter_matches_solver_on_small_problems() -> None:
    for problem in generate(3, 20, seed=4):
        assert SolutionCounter(problem.target).count(problem.numbers) == len(
            solve(problem.numbers, problem.target)
        )


@pytest.mark.parametrize("tier", TIERS)
def test_reference_solution_is_correct(tier: int) -> None:
    rng = random.Random(0)
    for problem in generate(tier, 15, seed=5):
        steps = reference_solution(problem, rng)
        assert check_solution(problem, solution_text(steps)).correct


def test_reference_solution_rejects_unsolvable() -> None:
    with pytest.raises(ValueError):
        reference_solution(Problem((1, 1), 5), random.Random(0))


@pytest.mark.parametrize("tier", TIERS)
def test_prompt_round_trips(tier: int) -> None:
    for problem in generate(tier, 20, seed=6):
        assert problem.prompt().endswith("\n")
        assert parse_prompt(problem.prompt()) == problem


@pytest.mark.parametrize("text", ["", "3 7 9", "3 7 -> x", "-> 24", "5 -> 5", "a b -> 3"])
def test_parse_prompt_rejects_malformed(text: str) -> None:
    assert parse_prompt(text) is None


def test_moves_never_negative_or_inexact() -> None:
    rng = random.Random(11)
    for _ in range(300):
        state = tuple(rng.randint(0, 20) for _ in range(rng.randint(2, 5)))
        for step in moves(state):
            assert step.result >= 0
            assert step.left >= step.right
            if step.op == "/":
                assert (
                    step.right != 0 and step.left % step.right == 0 and step.left // step.right == step.result
                )
            assert sorted(step.remaining) == sorted([*_without(state, step.left, step.right), step.result])


def _without(state: tuple[int, ...], a: int, b: int) -> list[int]:
    rest = list(state)
    rest.remove(a)
    rest.remove(b)
    return rest
