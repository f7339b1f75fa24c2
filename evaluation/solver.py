"""What the search sweep asks of whatever runs its searches: the `Solver` protocol and its records.

Contract:
- A `Solver` runs one search of one task (`solve(task, attempt) -> Solved`), greedy on a batch of tasks
  with the PRM's value of each greedy solution (`greedy`, auto's probe), and says the raw engine's
  generated tokens/s where it can measure it (`engine_tokens_per_s`, else None). `with_auto_table(table)`
  is a solver whose `auto` chooses by `table`, or None where auto's table is not the caller's to set (a
  running server has its own).
- Two implement it: `evaluation.solver_local.InProcessSolver` (a `Controller` on engines in this
  process) and `evaluation.solver_http.HttpSolver` (a running Ponder server through its OpenAI API). The
  sweep, auto's fitting and the reports see only this protocol and these records.
- `Solved` is what a search returned, ungraded: the answer, every candidate's text (for the oracle) and
  the tokens by kind as the engines counted them. Grading is the sweep's (`verifiers.outcome.grade`).
- A search the solver cannot run (an engine refuses the prompt, a server answers an error) raises
  `SearchFailed`, whose message names the request and says what went wrong.
- A task is sent as a completion prompt or as one user message of a chat (`prompt_style`): chat for math
  tasks, a completion prompt for Countdown (the shipped sets' prompts are completion prompts), unless the
  caller chose. Both paths render a style as the server does, so they search the same prompt ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from searchers.auto import AutoTable
from tasks.datasets import Task

PromptStyle = Literal["completion", "chat"]
PROMPT_STYLES: tuple[PromptStyle, ...] = ("completion", "chat")
GREEDY_BUDGET = 10_000  # greedy's reference solution is never cut by the budget


def prompt_style(task: Task, chosen: PromptStyle | None) -> PromptStyle:
    """`chosen`, else chat for math tasks and a completion prompt for Countdown."""
    if chosen is not None:
        return chosen
    return "chat" if task.kind == "math" else "completion"


@dataclass(frozen=True)
class Attempt:
    """One search of one task: what a solver runs."""

    request_id: str
    strategy: str
    knobs: dict[str, Any]
    budget: int  # tokens: generated + PRM-scored
    temperature: float
    seed: int


@dataclass(frozen=True)
class Solved:
    """What one search returned, before grading."""

    text: str  # the answer
    candidate_texts: tuple[str, ...]  # every candidate it considered (the oracle: was any correct?)
    generated: int
    prompt: int
    cached: int
    scored: int
    stop_reason: str
    cached_scored: int = 0  # of `scored`, the PRM's prefix-cache hits
    units: float = 0.0  # compute units the search spent (`engines.cost`), at the solver's weights


@dataclass(frozen=True)
class GreedyRun:
    """Greedy on every task of a batch, in order."""

    solved: list[Solved]
    probe: list[float]  # the PRM's value of each greedy solution (0.0 where it has no steps)
    wall: float  # seconds the greedy solutions took


class SearchFailed(RuntimeError):
    """A search that could not run; the message names the request and the reason."""


class Solver(Protocol):
    async def engine_tokens_per_s(self) -> float | None: ...

    async def greedy(self, tasks: Sequence[Task]) -> GreedyRun: ...

    async def solve(self, task: Task, attempt: Attempt) -> Solved: ...

    def with_auto_table(self, table: AutoTable) -> Solver | None: ...
