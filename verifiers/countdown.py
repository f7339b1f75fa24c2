"""Exact Countdown checkers: step validity and final outcome.

Contract: `check_step(state, line)` says whether one step line is legal from `state` and returns the
new state; `check_solution(problem, text)` grades a whole completion. Neither raises on any input:
malformed text is an illegal step or a wrong solution. `wrong_arithmetic(line)` says whether a step's
claimed result is false on its own, whatever the state. `claimed_answer(text)` is the final number a
completion claims, checked or not (what self-consistency votes on). `true_result(line)` is what a
step's operation really gives.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from tasks.countdown import STEP_DELIMITER, Problem, apply

_STEP = re.compile(r"^\s*(\d+)\s*([-+*/])\s*(\d+)\s*=\s*(\d+)\s*\[([\d\s]*)\]\s*$", re.ASCII)


@dataclass(frozen=True)
class StepCheck:
    legal: bool
    state: tuple[int, ...]  # the numbers left after the step (unchanged when illegal)
    reason: str = ""


@dataclass(frozen=True)
class Outcome:
    correct: bool
    steps: int  # how many lines were read
    legal_steps: int  # how many leading steps were legal
    final: int | None  # the last number left, when the solution reached a single number
    reason: str = ""


def check_step(state: tuple[int, ...], line: str) -> StepCheck:
    """Is `line` a legal step from `state`? The remaining list must match as a multiset."""
    match = _STEP.match(line)
    if not match:
        return StepCheck(False, state, "malformed step")
    a, op, b, claimed = int(match[1]), match[2], int(match[3]), int(match[4])
    remaining = Counter(state)
    for operand in (a, b):
        if remaining[operand] == 0:
            return StepCheck(False, state, f"{operand} is not available")
        remaining[operand] -= 1
    result = apply(op, a, b)
    if result is None:
        return StepCheck(False, state, "illegal operation")
    if result != claimed:
        return StepCheck(False, state, f"{a}{op}{b} is {result}, not {claimed}")
    remaining[result] += 1
    listed = tuple(int(tok) for tok in match[5].split())
    if Counter(listed) != +remaining:
        return StepCheck(False, state, "wrong remaining numbers")
    return StepCheck(True, listed)


def split_steps(text: str) -> list[str]:
    """The non-empty step lines of a completion."""
    return [line for line in text.split(STEP_DELIMITER) if line.strip()]


def check_solution(problem: Problem, text: str) -> Outcome:
    """Grade a completion: every step legal and the single number left equals the target."""
    state = problem.numbers
    lines = split_steps(text)
    for index, line in enumerate(lines):
        check = check_step(state, line)
        if not check.legal:
            return Outcome(False, len(lines), index, None, check.reason)
        state = check.state
        if len(state) == 1:
            extra = len(lines) - index - 1
            correct = state[0] == problem.target and extra == 0
            reason = "" if correct else ("text after the last step" if extra else "wrong final number")
            return Outcome(correct, len(lines), index + 1, state[0], reason)
    return Outcome(False, len(lines), len(lines), None, "unfinished")


def legal_prefix_state(problem: Problem, steps: list[str]) -> tuple[int, ...] | None:
    """The state after `steps`, or None if any of them is illegal."""
    state = problem.numbers
    for line in steps:
        check = check_step(state, line)
        if not check.legal:
            return None
        state = check.state
    return state


def wrong_arithmetic(line: str) -> bool:
    """Does this well-formed step line claim a result its operation does not give (or an operation
    the rules forbid)? False for a malformed line or a true one."""
    match = _STEP.match(line)
    return match is not None and apply(match[2], int(match[1]), int(match[3])) != int(match[4])


def true_result(line: str) -> int | None:
    """The result a well-formed step line's operation truly gives, whatever it claims; None for a
    malformed line or an operation the rules forbid."""
    match = _STEP.match(line)
    return None if match is None else apply(match[2], int(match[1]), int(match[3]))


def claimed_answer(text: str) -> int | None:
    """The number a completion says it ends with (its last step's single remaining number), whether or
    not its steps are legal: what the completion commits to, for voting. None if it ends elsewhere."""
    lines = split_steps(text)
    match = _STEP.match(lines[-1]) if lines else None
    if match is None:
        return None
    listed = match[5].split()
    return int(listed[0]) if len(listed) == 1 else None
