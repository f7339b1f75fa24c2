"""Countdown: combine numbers two at a time with + - * / until one number remains, equal to the target.

Contract:
- `generate(tier, n, seed, split)` returns `n` always-solvable problems with `tier` starting numbers, the
  same for the same seed, distinct by meaning (canonical key), all from `split` when one is given
  (`tasks.split`: eval, dev or train, by the key's hash).
- `solve(numbers, target)` enumerates every solution; `reference_solution` picks one uniformly.
- Text format, one step per line (the unit of search and of PRM scoring):

      prompt:  "3 7 9 13 -> 24\n"
      step:    "13-7=6 [3 9 6]\n"     larger operand first, then the remaining numbers after the step
      last:    "...=24 [24]\n"        the solution ends when one number is left

Rules: exact integer division only, and no negative intermediate results (zero is allowed).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from tasks.split import Split, split_of_key

Distinct = Literal["order", "meaning"]
MAX_DRAWS_PER_PROBLEM = 200  # far more than any split needs; past it the problems asked do not exist

OPS = ("+", "-", "*", "/")
NUMBER_RANGE = (1, 13)
TARGET_RANGE = (1, 100)
STEP_DELIMITER = "\n"
PROMPT_ARROW = " -> "


@dataclass(frozen=True)
class Step:
    """One move: `left op right = result`, leaving `remaining` (result included)."""

    left: int
    op: str
    right: int
    result: int
    remaining: tuple[int, ...]

    def text(self) -> str:
        rest = " ".join(str(n) for n in self.remaining)
        return f"{self.left}{self.op}{self.right}={self.result} [{rest}]{STEP_DELIMITER}"


@dataclass(frozen=True)
class Problem:
    numbers: tuple[int, ...]
    target: int

    @property
    def tier(self) -> int:
        return len(self.numbers)

    @property
    def key(self) -> str:
        """The canonical key: the numbers sorted, then the target. The same numbers in another order
        are the same problem (`tasks.split` partitions problems by this key)."""
        return " ".join(str(n) for n in sorted(self.numbers)) + f" -> {self.target}"

    def prompt(self) -> str:
        return " ".join(str(n) for n in self.numbers) + PROMPT_ARROW + str(self.target) + STEP_DELIMITER


def apply(op: str, a: int, b: int) -> int | None:
    """The result of `a op b` under Countdown's rules, or None when the move is illegal."""
    if op == "+":
        return a + b
    if op == "*":
        return a * b
    if op == "-":
        return a - b if a >= b else None
    if op == "/":
        return a // b if b != 0 and a % b == 0 else None
    return None


def moves(state: tuple[int, ...]) -> Iterator[Step]:
    """Every legal step from `state`, larger operand first, unused numbers keep their order."""
    for i in range(len(state)):
        for j in range(len(state)):
            if i == j:
                continue
            a, b = state[i], state[j]
            # Each unordered pair once: the larger (or, on ties, the earlier) operand goes left.
            if a < b or (a == b and i > j):
                continue
            rest = tuple(n for k, n in enumerate(state) if k not in (i, j))
            for op in OPS:
                result = apply(op, a, b)
                if result is not None:
                    yield Step(a, op, b, result, (*rest, result))


def solve(numbers: tuple[int, ...], target: int, limit: int = 10_000) -> list[list[Step]]:
    """All solutions (up to `limit`) as lists of steps, found by exhaustive depth-first search."""
    solutions: list[list[Step]] = []

    def search(state: tuple[int, ...], path: list[Step]) -> None:
        if len(solutions) >= limit:
            return
        if len(state) == 1:
            if state[0] == target:
                solutions.append(list(path))
            return
        for step in moves(state):
            path.append(step)
            search(step.remaining, path)
            path.pop()

    search(tuple(numbers), [])
    return solutions


class SolutionCounter:
    """How many solutions each state has, memoised on the multiset of numbers (fast even for 5 numbers)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._memo: dict[tuple[int, ...], int] = {}

    def count(self, state: tuple[int, ...]) -> int:
        key = tuple(sorted(state))
        if key not in self._memo:
            if len(key) == 1:
                self._memo[key] = int(key[0] == self.target)
            else:
                self._memo[key] = sum(self.count(step.remaining) for step in moves(key))
        return self._memo[key]


def reference_solution(
    problem: Problem, rng: random.Random, counter: SolutionCounter | None = None
) -> list[Step]:
    """One solution drawn uniformly among all of them: each step is drawn in proportion to the number
    of solutions it leads to, so the traces teach which moves keep the most ways to win open.
    Pass the same `counter` to draw several solutions of one problem cheaply."""
    counter = counter or SolutionCounter(problem.target)
    if counter.count(problem.numbers) == 0:
        raise ValueError(f"unsolvable problem: {problem}")
    state, steps = problem.numbers, []
    while len(state) > 1:
        options = [(step, counter.count(step.remaining)) for step in moves(state)]
        step = rng.choices([s for s, _ in options], weights=[c for _, c in options])[0]
        steps.append(step)
        state = step.remaining
    return steps


def solution_text(steps: list[Step]) -> str:
    return "".join(step.text() for step in steps)


def random_problem(tier: int, rng: random.Random) -> Problem:
    """Random play: draw numbers, apply random legal moves until one is left; keep it if it is a valid
    target."""
    low, high = NUMBER_RANGE
    while True:
        numbers = tuple(rng.randint(low, high) for _ in range(tier))
        state = numbers
        while len(state) > 1:
            state = rng.choice(list(moves(state))).remaining
        if TARGET_RANGE[0] <= state[0] <= TARGET_RANGE[1]:
            return Problem(numbers, state[0])


def generate(
    tier: int, n: int, seed: int, split: Split | None = None, distinct: Distinct = "order"
) -> list[Problem]:
    """`n` solvable problems with `tier` numbers, from `split` if given; the seed fixes the list. Random
    play draws them as always, and a split keeps the ones its buckets hold, so each split is distributed
    like the others. `distinct`: "order" (training's, as always: the same numbers in another order are
    another prompt) or "meaning" (an eval or dev set: one problem per canonical key)."""
    if tier < 2:
        raise ValueError("a Countdown problem needs at least 2 numbers")
    rng = random.Random(f"countdown-{tier}-{seed}")
    seen: set[object] = set()
    problems: list[Problem] = []
    for _ in range(MAX_DRAWS_PER_PROBLEM * n):
        problem = random_problem(tier, rng)
        identity = problem.key if distinct == "meaning" else problem
        if identity not in seen and (split is None or split_of_key(problem.key) == split):
            seen.add(identity)
            problems.append(problem)
            if len(problems) == n:
                return problems
    raise ValueError(
        f"only {len(problems)} distinct {tier}-number problems found for {n} asked ({split or 'any'})"
    )


def parse_prompt(text: str) -> Problem | None:
    """The problem stated by a prompt in the format above, or None."""
    head, sep, tail = text.strip().partition(PROMPT_ARROW.strip())
    if not sep:
        return None
    try:
        numbers = tuple(int(tok) for tok in head.split())
        target = int(tail.strip())
    except ValueError:
        return None
    return Problem(numbers, target) if len(numbers) >= 2 else None
