"""The exact Countdown checkers: legal and illegal steps, whole solutions, malformed and random input."""

from __future__ import annotations

import random

import pytest

from tasks.countdown import Problem
from verifiers.countdown import check_solution, check_step, legal_prefix_state, split_steps

STATE = (3, 7, 9, 13)
PROBLEM = Problem(STATE, 24)
SOLUTION = "13-7=6 [3 9 6]\n9-3=6 [6 6]\n6*6=36 [36]\n"  # legal, but ends on 36
CORRECT = "13-9=4 [3 7 4]\n7-3=4 [4 4]\n4*4=16 [16]\n"


def test_known_solution() -> None:
    problem = Problem(STATE, 16)
    outcome = check_solution(problem, CORRECT)
    assert outcome.correct
    assert (outcome.steps, outcome.legal_steps, outcome.final, outcome.reason) == (3, 3, 16, "")


@pytest.mark.parametrize(
    ("line", "remaining"),
    [
        ("13-7=6 [3 9 6]", (3, 9, 6)),
        ("13-7=6 [6 9 3]", (6, 9, 3)),  # remaining list in another order
        ("3+7=10 [9 13 10]\n", (9, 13, 10)),
        ("9/3=3 [7 13 3]", (7, 13, 3)),
        ("13*7=91 [3 9 91]", (3, 9, 91)),
        ("  9 / 3 = 3 [ 7 13 3 ] ", (7, 13, 3)),  # spacing is tolerated
    ],
)
def test_legal_steps(line: str, remaining: tuple[int, ...]) -> None:
    check = check_step(STATE, line)
    assert check.legal, check.reason
    assert check.state == remaining


@pytest.mark.parametrize(
    ("state", "line", "reason"),
    [
        (STATE, "13-5=8 [3 7 9 8]", "5 is not available"),
        (STATE, "3+3=6 [7 9 13 6]", "3 is not available"),  # only one 3
        (STATE, "13-7=5 [3 9 5]", "13-7 is 6, not 5"),
        (STATE, "7+3=11 [9 13 11]", "7+3 is 10, not 11"),
        (STATE, "7-13=0 [3 9 0]", "illegal operation"),  # negative subtraction
        (STATE, "13/3=4 [7 9 4]", "illegal operation"),  # inexact division
        ((0, 5, 7), "5/0=0 [7 0]", "illegal operation"),  # division by zero
        (STATE, "13-7=6 [3 9]", "wrong remaining numbers"),
        (STATE, "13-7=6 [3 9 6 6]", "wrong remaining numbers"),
        (STATE, "13-7=6 [3 7 9 6]", "wrong remaining numbers"),
        (STATE, "13-7=6 3 9 6", "malformed step"),  # missing brackets
        (STATE, "13 - 7 = 6", "malformed step"),
        (STATE, "13x7=91 [3 9 91]", "malformed step"),
    ],
)
def test_illegal_steps(state: tuple[int, ...], line: str, reason: str) -> None:
    check = check_step(state, line)
    assert not check.legal
    assert check.state == state
    assert check.reason == reason


def test_zero_results_are_allowed() -> None:
    assert check_step((5, 5, 2), "5-5=0 [2 0]").legal
    assert check_step((0, 4), "4*0=0 [0]").legal


def test_wrong_final_number() -> None:
    outcome = check_solution(PROBLEM, SOLUTION)
    assert not outcome.correct
    assert outcome.final == 36
    assert outcome.legal_steps == 3
    assert outcome.reason == "wrong final number"


def test_unfinished() -> None:
    outcome = check_solution(Problem(STATE, 16), "13-9=4 [3 7 4]\n7-3=4 [4 4]\n")
    assert not outcome.correct
    assert outcome.final is None
    assert outcome.reason == "unfinished"


def test_text_after_last_step() -> None:
    outcome = check_solution(Problem(STATE, 16), CORRECT + "The answer is 16.\n")
    assert not outcome.correct
    assert outcome.final == 16
    assert outcome.reason == "text after the last step"


def test_illegal_step_midway() -> None:
    outcome = check_solution(Problem(STATE, 16), "13-9=4 [3 7 4]\n7-3=5 [4 5]\n4*4=16 [16]\n")
    assert not outcome.correct
    assert outcome.legal_steps == 1
    assert outcome.final is None


def test_split_steps_and_prefix_state() -> None:
    assert split_steps("a\n\n  \nb\n") == ["a", "b"]
    assert legal_prefix_state(PROBLEM, split_steps(SOLUTION)[:2]) == (6, 6)
    assert legal_prefix_state(PROBLEM, ["13-7=5 [3 9 5]"]) is None


MALFORMED = [
    "",
    " ",
    "\n\n\t  \n",
    "None",
    "null",
    "[]",
    "[None]",
    "13-9=4 [3 7 4",  # missing closing bracket
    "13-9=4 3 7 4]",  # missing opening bracket
    "13-9=4 [3 7 4]]",
    "∑∫√ 十三减九等于四 [３ ７ ４]",  # random unicode, full-width digits
    "١٣-٩=٤ [٣ ٧ ٤]",  # Arabic-Indic digits: \d matches them, int() parses them
    "🙂" * 500,
    "1" * 100_000,
    "13-9=4 [" + "1 " * 50_000 + "]",
    "\x00\x01\x02\xff\ufffd\x7f",
    bytes(range(256)).decode("latin-1"),
    "-13-9=-22 [3 7 -22]",
    "13--9=22 [3 7 22]",
    "9999999999999999999999*9999999999999999999999=1 [1]",
]


@pytest.mark.parametrize("text", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_solutions_are_not_correct(text: str) -> None:
    outcome = check_solution(Problem(STATE, 16), text)
    assert not outcome.correct
    assert outcome.steps == len(split_steps(text))


def test_crlf_line_ends_are_tolerated() -> None:
    assert check_solution(Problem(STATE, 16), CORRECT.replace("\n", "\r\n")).correct


def test_random_strings_never_raise() -> None:
    rng = random.Random(20261123)
    alphabet = "0123456789+-*/=[] \n\t" + "x.,;()\\" + "\u00e9\u4e00\u0663\U0001f600\x00"
    fragments = ["13-9=4 [3 7 4]\n", "7-3=4 [4 4]\n", "4*4=16 [16]\n", "=", "[", "]", "\n"]
    problem = Problem(STATE, 16)
    for _ in range(2000):
        if rng.random() < 0.5:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        else:
            text = "".join(rng.choice(fragments) for _ in range(rng.randint(0, 6)))
        outcome = check_solution(problem, text)
        assert outcome.legal_steps <= outcome.steps
        if outcome.correct:
            assert outcome.final == 16
        for line in split_steps(text):
            check_step(STATE, line)
