"""Outcome grading for any task: one entry point over the per-kind verifiers.

Contract:
- `grade(task, completion)` is True when the completion solves the task: Countdown completions are
  checked exactly by `verifiers.countdown.check_solution`, math completions by
  `verifiers.math.check_math_answer`. It never raises on any completion text; it raises `ValueError`
  only for a malformed task (unknown kind, unparseable Countdown prompt).
- `final_answer(task, completion)` is the answer the completion commits to, right or wrong, as a string
  for majority voting (Countdown: the number its last step claims is left, legal or not: checking it
  is the verifiers' job, not the vote's; math: `extract_final_answer`), or None.
"""

from __future__ import annotations

from tasks.datasets import Task, countdown_problem
from verifiers.countdown import check_solution, claimed_answer
from verifiers.math import check_math_answer, extract_final_answer


def grade(task: Task, completion: str) -> bool:
    if task.kind == "countdown":
        return check_solution(countdown_problem(task), completion).correct
    if task.kind == "math":
        return check_math_answer(task.answer, completion)
    raise ValueError(f"task {task.id}: unknown kind {task.kind!r}")


def final_answer(task: Task, completion: str) -> str | None:
    if task.kind == "countdown":
        claimed = claimed_answer(completion)
        return None if claimed is None else str(claimed)
    if task.kind == "math":
        return extract_final_answer(completion)
    raise ValueError(f"task {task.id}: unknown kind {task.kind!r}")
