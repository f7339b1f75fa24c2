"""Monte-Carlo step labels of Countdown solutions: what each step prefix is worth, by rolling it out.

Contract: `label_problems(engine, problems, samples, rollouts, sampling, request_id)` samples `samples`
solutions per problem and labels every step prefix with the share of `rollouts` rollouts from it that the
exact checker grades correct (Math-Shepherd's soft label). Rollouts are spent only where the value is
unknown: the last step of a complete solution is labelled by the checker itself, and a step the step
checker rejects, or after which the exact solver finds no solution, is labelled 0. With `rollouts=0`
those unknown labels are None. PRM training (`training.prm_data`) and the held-out PRM metrics
(`evaluation`) both label this way.

`label_tasks` does the same for any graded task (a math JSONL's, by math-verify): no solver, so every
step but the last is rolled out; the last is graded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engines.base import PolicyEngine, Sampling
from tasks.countdown import Problem, SolutionCounter
from tasks.datasets import Task
from verifiers.countdown import check_solution, legal_prefix_state
from verifiers.outcome import grade


@dataclass(frozen=True)
class LabelledSolution:
    problem: Problem
    steps: list[str]
    soft_labels: list[float | None]
    correct: bool

    @property
    def prompt(self) -> str:
        return self.problem.prompt()

    def record(self) -> dict[str, Any]:
        return stepwise_record(self.prompt, self.steps, self.soft_labels, self.correct, self.problem.tier)


@dataclass(frozen=True)
class LabelledTask:
    """`LabelledSolution` of any graded task."""

    task: Task
    steps: list[str]
    soft_labels: list[float | None]
    correct: bool

    @property
    def prompt(self) -> str:
        return self.task.prompt

    def record(self) -> dict[str, Any]:
        fields = stepwise_record(self.prompt, self.steps, self.soft_labels, self.correct, self.task.tier)
        return {**fields, "id": self.task.id}


def stepwise_record(
    prompt: str, steps: list[str], soft_labels: list[float | None], correct: bool, tier: int | None
) -> dict[str, Any]:
    """TRL's stepwise format (`prompt`, `completions`, `labels`) plus the soft labels."""
    return {
        "prompt": prompt,
        "completions": steps,
        "labels": [None if s is None else s > 0 for s in soft_labels],
        "soft_labels": soft_labels,
        "correct": correct,
        "tier": tier,
    }


Labelled = LabelledSolution | LabelledTask


async def label_problems(
    engine: PolicyEngine,
    problems: Sequence[Problem],
    samples: int,
    rollouts: int,
    sampling: Sampling,
    request_id: str,
) -> list[LabelledSolution]:
    """Sample `samples` solutions per problem, then label every step prefix with `rollouts` rollouts
    (or leave it None when `rollouts` is 0) unless its value is known exactly."""
    prompts = [engine.encode(p.prompt()) for p in problems]
    counters = {p: SolutionCounter(p.target) for p in problems}
    drawn = await engine.rollout(prompts, samples, sampling, f"{request_id}-sample")
    pending: list[tuple[LabelledSolution, int]] = []  # (solution, step index) still needing rollouts
    prefixes: list[list[int]] = []
    solutions: list[LabelledSolution] = []
    for problem, prompt, row in zip(problems, prompts, drawn.continuations, strict=True):
        for sample in row:
            steps = engine.split_steps(sample.token_ids)
            texts = [engine.decode(s) for s in steps]
            correct = check_solution(problem, "".join(texts)).correct
            solution = LabelledSolution(problem, texts, [0.0] * len(steps), correct)
            solutions.append(solution)
            for k in range(len(steps)):
                state = legal_prefix_state(problem, texts[: k + 1])
                if state is None:
                    break  # this step and all after it are labelled 0
                if k == len(steps) - 1:
                    solution.soft_labels[k] = float(correct)
                elif counters[problem].count(state) == 0:
                    continue  # a dead end: no continuation can succeed, the label stays 0
                elif rollouts == 0:
                    solution.soft_labels[k] = None
                else:
                    pending.append((solution, k))
                    prefixes.append(prompt + [t for s in steps[: k + 1] for t in s])
    if prefixes:
        done = await engine.rollout(prefixes, rollouts, sampling, f"{request_id}-rollout")
        for (solution, k), prefix_rollouts in zip(pending, done.continuations, strict=True):
            head = "".join(solution.steps[: k + 1])
            wins = sum(check_solution(solution.problem, head + c.text).correct for c in prefix_rollouts)
            solution.soft_labels[k] = wins / rollouts
    return solutions


async def label_tasks(
    engine: PolicyEngine,
    tasks: Sequence[Task],
    samples: int,
    rollouts: int,
    sampling: Sampling,
    request_id: str,
) -> list[LabelledTask]:
    """`label_problems` for any graded task: the last step by the grader, every other by `rollouts`
    rollouts graded the same way (None when `rollouts` is 0)."""
    prompts = [engine.encode(t.prompt) for t in tasks]
    drawn = await engine.rollout(prompts, samples, sampling, f"{request_id}-sample")
    pending: list[tuple[LabelledTask, int]] = []
    prefixes: list[list[int]] = []
    solutions: list[LabelledTask] = []
    for task, prompt, row in zip(tasks, prompts, drawn.continuations, strict=True):
        for sample in row:
            steps = engine.split_steps(sample.token_ids)
            texts = [engine.decode(s) for s in steps]
            correct = grade(task, "".join(texts))
            labels: list[float | None] = [None] * len(steps)
            if steps:
                labels[-1] = float(correct)
            solution = LabelledTask(task, texts, labels, correct)
            solutions.append(solution)
            for k in range(len(steps) - 1 if rollouts else 0):
                pending.append((solution, k))
                prefixes.append(prompt + [t for s in steps[: k + 1] for t in s])
    if prefixes:
        done = await engine.rollout(prefixes, rollouts, sampling, f"{request_id}-rollout")
        for (solution, k), prefix_rollouts in zip(pending, done.continuations, strict=True):
            head = "".join(solution.steps[: k + 1])
            wins = sum(grade(solution.task, head + c.text) for c in prefix_rollouts)
            solution.soft_labels[k] = wins / rollouts
    return solutions
