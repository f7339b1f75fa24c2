"""The in-process `Solver`: searches through a `Controller` on engines started in this process.

Contract:
- `InProcessSolver(engines, style, table)` runs every search through one `Controller` on `engines` (real
  or fake), with no budget cap but the request's own, and `auto` choosing by `table` (None: auto's
  fallback). `with_auto_table` gives another solver on the same engines.
- A task's prompt ids are what the server would make of it: `policy.encode(prompt)` for a completion
  prompt, `policy.render_chat` of one user message for chat (`evaluation.solver.prompt_style`).
- `greedy` solves every task greedily at once, then scores every greedy solution that has steps in one
  PRM call: the last step's score is the task's probe value. It is 0.0 without steps, and for a solution
  the PRM cannot read (longer than its context, as a long math answer cut at the policy's context can
  be). The wall time is the greedy solutions' alone. `engine_tokens_per_s` benchmarks the raw policy engine
  (`evaluation.foundation.engine_throughput`).
- A prompt the engines refuse (too long for the context, ...) raises `SearchFailed` naming the request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from engines.base import InvalidPrompt, Sampling
from evaluation.foundation import engine_throughput
from evaluation.solver import (
    GREEDY_BUDGET,
    Attempt,
    GreedyRun,
    PromptStyle,
    SearchFailed,
    Solved,
    prompt_style,
)
from searchers.auto import AutoTable
from searchers.base import SearchResult
from searchers.controller import Controller, Limits, SearchRequest
from searchers.registry import default_searchers
from server.engines import Engines
from tasks.datasets import Task
from verifiers.prm import Candidate, scored_length


class InProcessSolver:
    def __init__(
        self, engines: Engines, style: PromptStyle | None = None, table: AutoTable | None = None
    ) -> None:
        self.engines = engines
        self.style = style
        self.controller = Controller(
            engines.policy,
            engines.prm,
            Limits(max_budget=1_000_000),
            default_searchers(table),
            engines.weights,  # as `ponder serve` on the same models would price them
        )

    def with_auto_table(self, table: AutoTable) -> InProcessSolver:
        return InProcessSolver(self.engines, self.style, table)

    async def engine_tokens_per_s(self) -> float:
        return float((await engine_throughput(self.engines.policy))["engine_generated_tokens_per_s"])

    def prompt_ids(self, task: Task) -> tuple[int, ...]:
        policy = self.engines.policy
        if prompt_style(task, self.style) == "chat":
            return tuple(policy.render_chat([{"role": "user", "content": task.prompt}]))
        return tuple(policy.encode(task.prompt))

    async def solve(self, task: Task, attempt: Attempt) -> Solved:
        request = SearchRequest(
            prompt_ids=self.prompt_ids(task),
            prompt_text=task.prompt,
            request_id=attempt.request_id,
            strategy=attempt.strategy,
            budget=attempt.budget,
            knobs=attempt.knobs,
            sampling=Sampling(temperature=attempt.temperature, seed=attempt.seed),
        )
        return self.solved_of(await self.run(request))

    async def greedy(self, tasks: Sequence[Task]) -> GreedyRun:
        started = time.perf_counter()
        found = await asyncio.gather(*(self._greedy(task) for task in tasks))
        wall = time.perf_counter() - started
        candidates = [
            Candidate(self.prompt_ids(task), result.best.steps)
            for task, result in zip(tasks, found, strict=True)
        ]
        verifier = self.controller.verifier
        assert verifier is not None

        def readable(candidate: Candidate) -> bool:
            return bool(candidate.steps) and scored_length(candidate) <= verifier.max_model_len

        scored = [c for c in candidates if readable(c)]
        rows = (await verifier.score(scored, "eval-greedy-prm")).step_scores if scored else []
        values = iter(rows)
        probe = [next(values)[-1] if readable(c) else 0.0 for c in candidates]
        return GreedyRun([self.solved_of(result) for result in found], probe, wall)

    async def _greedy(self, task: Task) -> SearchResult:
        request = SearchRequest(
            self.prompt_ids(task), task.prompt, f"eval-greedy-{task.id}", "greedy", budget=GREEDY_BUDGET
        )
        return await self.run(request)

    async def run(self, request: SearchRequest) -> SearchResult:
        try:
            return await self.controller.run(request)
        except InvalidPrompt as error:
            raise SearchFailed(f"the engines refused {request.request_id}: {error}") from error

    def solved_of(self, found: SearchResult) -> Solved:
        return Solved(
            text=found.text,
            candidate_texts=tuple(c.text for c in found.candidates),
            generated=found.usage.generated_tokens,
            prompt=found.usage.prompt_tokens,
            cached=found.usage.cached_prompt_tokens,
            scored=found.usage.scored_tokens,
            stop_reason=found.stop_reason,
            cached_scored=found.usage.cached_scored_tokens,
            units=round(self.controller.weights.units(found.usage), 3),  # as the API reports it
        )
