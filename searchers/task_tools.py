"""What a prompt's task family offers a search: planning hints, answer extraction, an exact checker.

Contract: `task_tools(prompt_text)` looks at a prompt (a completion prompt or the last user message)
and returns `TaskTools`. A Countdown problem gets exact hints (one step per number joined), its
claimed-answer extractor for voting and its exact checker as the environment verifier; any other
prompt gets generic hints, the math answer extractor (`\\boxed{}` / last number) and no checker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tasks.countdown import Problem, parse_prompt
from verifiers.countdown import check_solution, claimed_answer
from verifiers.math import extract_final_answer


@dataclass(frozen=True)
class TaskHints:
    """Rough sizes for planning rounds (never for accounting): steps per solution, tokens per step."""

    steps: int = 8
    step_tokens: int = 32

    @property
    def solution_tokens(self) -> int:
        return self.steps * self.step_tokens


@dataclass(frozen=True)
class TaskTools:
    kind: str
    hints: TaskHints
    answer_of: Callable[[str], str | None]
    checker: Callable[[str], bool] | None  # an environment verifier: is this completion correct?


def countdown_tools(problem: Problem) -> TaskTools:
    def answer_of(text: str) -> str | None:
        claimed = claimed_answer(text)
        return None if claimed is None else str(claimed)

    def checker(text: str) -> bool:
        return check_solution(problem, text).correct

    # a step reads "a op b = c [rest]\n": about 6 tokens plus two per remaining number
    hints = TaskHints(steps=len(problem.numbers) - 1, step_tokens=6 + 2 * len(problem.numbers))
    return TaskTools("countdown", hints, answer_of, checker)


def task_tools(prompt_text: str) -> TaskTools:
    lines = [line for line in prompt_text.strip().splitlines() if line.strip()]
    problem = parse_prompt(lines[-1]) if lines else None
    if problem is not None:
        return countdown_tools(problem)
    return TaskTools("text", TaskHints(), extract_final_answer, None)
