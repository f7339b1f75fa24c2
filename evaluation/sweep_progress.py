"""A sweep's progress log: every finished point with its per-problem results, so a sweep longer than a
session resumes where it stopped.

Contract:
- `SweepProgress.open(path, header, resume)` starts a log at `path` (None: keep nothing). Its first line
  is `header`: what makes two sweeps the same (the problems, the temperature, the labels, the models or
  server they ran on). With `resume` it reads what an earlier run of the same sweep logged there, and
  refuses (`OtherSweep`) a log whose header differs, since its points would not be comparable; without
  it, it starts the log afresh.
- `record_greedy` / `greedy` keep greedy's reference run (its results, the probe values, the 1x unit, its
  wall time) and the raw engine rate measured beside it; `record_point` / `done` keep one finished
  (label, multiple) point and its results. Each record is one JSON line, appended and flushed when it is
  made, so a run killed at any moment keeps every point it finished.
Nothing here runs an engine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.sweep_records import ProblemResult, SweepPoint


class OtherSweep(ValueError):
    """A progress log to resume from was written by a sweep of other problems or settings."""


@dataclass(frozen=True)
class GreedyReference:
    """Greedy on every problem, what the sweep's unit, auto's probe and efficiency come from."""

    results: list[ProblemResult]
    probe: dict[str, float]  # task -> the PRM's value of its greedy solution
    unit: float  # mean compute units: the 1x budget
    wall: float
    engine_tps: float | None  # the raw policy engine's rate in the same run (None: not measurable)


@dataclass
class SweepProgress:
    path: Path | None
    greedy: GreedyReference | None = None
    done: dict[tuple[str, float], tuple[SweepPoint, list[ProblemResult]]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path | None, header: dict[str, Any], resume: bool) -> SweepProgress:
        progress = cls(path)
        if path is None:
            return progress
        if resume and path.exists():
            progress.read(path, header)
            return progress
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"header": header}) + "\n")
        return progress

    def read(self, path: Path, header: dict[str, Any]) -> None:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not lines or lines[0].get("header") != header:
            raise OtherSweep(
                f"{path} was logged by another sweep (other problems, temperature or labels); "
                "delete it or run without resuming"
            )
        for line in lines[1:]:
            results = [ProblemResult(**row) for row in line["results"]]
            if "greedy" in line:
                self.greedy = GreedyReference(results=results, **line["greedy"])
            else:
                point = SweepPoint(**line["point"])
                self.done[(point.strategy, point.budget_multiple)] = (point, results)

    def record_greedy(self, logged: GreedyReference) -> None:
        self.greedy = logged
        body = {k: v for k, v in asdict(logged).items() if k != "results"}
        self._append({"greedy": body, "results": [asdict(r) for r in logged.results]})

    def record_point(self, point: SweepPoint, results: list[ProblemResult]) -> None:
        self.done[(point.strategy, point.budget_multiple)] = (point, results)
        self._append({"point": asdict(point), "results": [asdict(r) for r in results]})

    def _append(self, line: dict[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps(line) + "\n")
