"""`auto`: compute-optimal strategy selection per request, from a table the evaluation measured.

Contract:
- The probe: one greedy solution, scored by the PRM. Its value (the PRM's belief that it is right)
  is the question's difficulty estimate, and the greedy solution stays a candidate.
- The table (`AutoTable`, JSON, written by `ponder eval search` next to the models it was measured on)
  maps (difficulty bin, budget as a multiple of the greedy solution's cost) to the strategy and knobs
  that were most accurate there on held-out problems, "greedy" included: an easy question gets no
  more compute than it needs.
- The chosen strategy runs on what is left of the same budget, with the probe as the request's greedy
  solution (`ctx.greedy`): Best-of-N takes it as its greedy candidate instead of drawing it again, and
  a search that grows partial solutions holds nothing back for a greedy fallback (it has one). The
  answer is the better by PRM value of its answer and the probe (finished answers first).
- Too small a budget for the probe, or no table: greedy / Best-of-N with PRM, the safe defaults.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from engines.budget import SearchStopped
from searchers.base import (
    Knobs,
    SearchContext,
    Searcher,
    SearcherDefaults,
    SearchResult,
    Trace,
    best_by_value,
    result,
    score,
    value,
)

FALLBACK = ("best_of_n", {"select": "prm"})


@dataclass(frozen=True)
class AutoTable:
    bins: list[float]  # ascending difficulty thresholds on the probe's PRM value
    budgets: list[float]  # ascending budget multiples the table was measured at
    choices: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # bin -> budget -> choice

    def choose(self, probe_value: float, multiple: float) -> tuple[str, dict[str, Any]]:
        """The measured best (strategy, knobs) for this difficulty bin at the largest measured budget
        not above `multiple`."""
        difficulty = str(bisect.bisect_right(self.bins, probe_value))
        row = self.choices.get(difficulty, {})
        affordable = [b for b in self.budgets if b <= multiple]
        if not affordable or str(affordable[-1]) not in row:
            return FALLBACK
        choice = row[str(affordable[-1])]
        return str(choice["strategy"]), dict(choice.get("knobs", {}))

    @classmethod
    def if_measured(cls, path: Path | None) -> AutoTable | None:
        """The table at `path` (`MODELS/auto_table.json`), if one was measured there."""
        return cls.load(path) if path is not None and path.exists() else None

    @classmethod
    def load(cls, path: Path) -> AutoTable:
        return cls.of(json.loads(path.read_text()))

    @classmethod
    def of(cls, data: dict[str, Any]) -> AutoTable:
        """The table in a table file's parsed JSON (its other keys say what it was fitted on)."""
        return cls(list(data["bins"]), list(data["budgets"]), dict(data["choices"]))

    def dump(self, path: Path, **extra: Any) -> None:
        body = {"bins": self.bins, "budgets": self.budgets, "choices": self.choices, **extra}
        path.write_text(json.dumps(body, indent=2) + "\n")


class AutoKnobs(Knobs):
    accept: float = Field(
        0.95, ge=0.0, le=1.0, description="return the greedy answer if the PRM trusts it this much"
    )


class Auto(SearcherDefaults):
    name: ClassVar[str] = "auto"
    Knobs: ClassVar[type[AutoKnobs]] = AutoKnobs

    def __init__(self, searchers: dict[str, Searcher], table: AutoTable | None) -> None:
        self.searchers = searchers
        self.table = table

    def needs_prm(self, knobs: AutoKnobs) -> bool:
        return True

    async def run(self, ctx: SearchContext, knobs: AutoKnobs) -> SearchResult:
        greedy = self.searchers["greedy"]
        tokens, prompt = ctx.hints.solution_tokens, len(ctx.prompt_ids)
        probe_cost = ctx.generation_units(tokens, prompt) + ctx.scoring_units(
            prompt + tokens + ctx.hints.steps
        )
        if not ctx.budget.can_afford(probe_cost):
            return await greedy.run(ctx, greedy.Knobs())
        first = await greedy.run(ctx, greedy.Knobs())
        if first.stop_reason != "done" or not first.best.finished:
            return replace(first, strategy=self.name, knobs=knobs.model_dump())
        try:
            probe = (await score(ctx, [first.best]))[0]
        except SearchStopped as stopped:
            return result(ctx, self.name, first.best, [first.best], stopped.reason, knobs)
        probe_value = value(probe, ctx.aggregation)
        if probe_value >= knobs.accept:
            return result(ctx, self.name, probe, [probe], "done", knobs)
        # the table's budgets are multiples of greedy's cost in compute units (`ponder eval search`)
        multiple = ctx.budget.limit / max(ctx.budget.weights.units(first.usage), 1.0)
        strategy, chosen_knobs = self.table.choose(probe_value, multiple) if self.table else FALLBACK
        ctx.report("auto", probe_value=round(probe_value, 3), strategy=strategy, knobs=chosen_knobs)
        if strategy == "greedy":
            return result(ctx, self.name, probe, [probe], "done", knobs)
        searcher = self.searchers[strategy]
        inner = await searcher.run(replace(ctx, greedy=probe), searcher.Knobs(**chosen_knobs))
        return self.combine(ctx, probe, inner, knobs, {"strategy": strategy, "knobs": chosen_knobs})

    def combine(
        self, ctx: SearchContext, probe: Trace, inner: SearchResult, knobs: AutoKnobs, chosen: dict[str, Any]
    ) -> SearchResult:
        candidates = [probe, *(c for c in inner.candidates if c is not probe)]  # Best-of-N took it too
        # The scored probe competes with the chosen strategy's answer: a strategy the budget cut short
        # (unfinished, or too poor to score its answer) must not replace a finished, trusted probe.
        best = best_by_value([probe, inner.best], ctx.aggregation)
        out = result(ctx, self.name, best, candidates, inner.stop_reason, knobs, inner.tree)
        out.knobs["chosen"] = chosen
        return out
