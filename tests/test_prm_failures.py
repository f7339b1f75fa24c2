"""The PRM failure breakdown (evaluation/prm_failures.py): how wrong solutions are sorted, and the table."""

from __future__ import annotations

import pytest

from evaluation.prm_failures import breakdown, failure_kind
from tasks.countdown import Problem
from verifiers.countdown import wrong_arithmetic

PROBLEM = Problem((8, 7, 1), 15)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("8*1=8 [7 8]\n8+7=15 [15]\n", "correct"),
        ("7-1=6 [8 6]\n8+6=15 [15]\n", "fake last step"),  # 8+6 is 14: the target claimed anyway
        ("8+1=9 [7 9]\n9+7=15 [15]\n", "fake last step"),
        ("8*1=8 [7 8]\n8+8=16 [16]\n", "illegal last step"),  # true arithmetic, but only one 8 is left
        ("8+1=10 [7 10]\n10+7=17 [17]\n", "illegal earlier step"),
        ("8+1=9 [7 9]\n9+7=16 [16]\n", "wrong final number"),
        ("8+1=9 [7 9]\n", "unfinished"),
        ("what\n", "illegal last step"),  # malformed: illegal, and no arithmetic to call fake
        ("", "unfinished"),
    ],
)
def test_each_solution_is_sorted_by_the_first_thing_wrong(text: str, kind: str) -> None:
    assert failure_kind(PROBLEM, text) == kind


def test_wrong_arithmetic_reads_the_line_alone() -> None:
    assert wrong_arithmetic("8+6=15 [15]")
    assert wrong_arithmetic("7/2=3 [3]")  # not an exact division
    assert not wrong_arithmetic("8+7=15 [15]")
    assert not wrong_arithmetic("8+7=15 [99 1]")  # the bookkeeping is check_step's business
    assert not wrong_arithmetic("garbage")


def test_breakdown_scores_each_kind_against_the_correct_solutions() -> None:
    kinds = ["correct", "correct", "fake last step", "fake last step", "illegal earlier step"]
    scores = [0.9, 0.5, 0.6, 0.1, 0.0]
    table = breakdown(kinds, scores)
    assert list(table) == ["correct", "fake last step", "illegal earlier step"]
    assert table["correct"] == {"count": 2, "mean_score": 0.7}
    assert table["fake last step"]["auroc_against_correct"] == pytest.approx(0.75)  # 3 of 4 pairs
    assert table["illegal earlier step"]["auroc_against_correct"] == 1.0


async def test_a_solution_too_long_for_the_prm_is_left_out_not_fatal() -> None:
    from fake_engine import FakeEngine
    from fake_prm import FakePRM

    from evaluation.foundation import final_scores_of_candidates, readable
    from server.engines import Engines
    from verifiers.prm import Candidate, scored_length

    prm = FakePRM()
    prm.max_model_len = 12
    short = Candidate((1, 2, 3), ((4, 5), (6, 7)))  # 3 + 2 steps of 2 + 2 tags = 9 tokens
    long = Candidate((1, 2, 3), ((4, 5, 6, 7, 8), (9, 10, 11)))  # 13 tokens
    assert (scored_length(short), scored_length(long)) == (9, 13)
    scores = await final_scores_of_candidates(Engines(FakeEngine(), prm), [short, long, short])
    assert scores[0] is not None and scores[1] is None and scores[2] == scores[0]
    assert readable(scores, ["a", "b", "c"]) == ([scores[0], scores[0]], ["a", "c"])
