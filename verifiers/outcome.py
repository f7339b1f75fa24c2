"""Outcome grading for any task: one entry point over the per-kind verifiers.

Contract:
- `grade(task, completion)` is True when the completion solves the task: Countdown completions are
  checked exactly by `verifiers.countdown.check_solution`, math completions by
  `verifiers.math.check_math_answer`. It never raises on any completion text; it raises `ValueError`
  only for a malformed task (unknown kind, unparseable Countdown prompt).
- `final_answer(task, completion)` is the answer the completion commits to, right or wrong, as a string
  for majority voting (Countdown: the last number left; math: `extract_final_answer`), or None.
"""

from __future__ import annotations

from tasks.datasets import Task, countdown_problem
from verifiers.countdown import check_solution
from verifiers.math import check_math_answer, extract_final_answer


def grade(task: Task, completion: str) -> bool:
    if task.kind == "countdown":
        return check_solution(countdown_problem(task), completion).correct
    if task.kind == "math":
        return check_math_answer(task.answer, completion)
    raise ValueError(f"task {task.id}: unknown kind {task.kind!r}")


def final_answer(task: Task, completion: str) -> str | None:
    if task.kind == "countdown":
        final = check_solution(countdown_problem(task), completion).final
        return None if final is None else str(final)
    if task.kind == "math":
        return extract_final_answer(completion)
    raise ValueError(f"task {task.id}: unknown kind {task.kind!r}")
