"""Fitting `auto`'s strategy table from a sweep's per-problem results.

Contract:
- A problem's difficulty is its probe value (the PRM's value of its greedy solution, what `auto` probes
  with at request time), binned by the thresholds `PROBE_BINS`.
- `fit_table` picks, per difficulty bin and budget multiple, the sweep entry that was most accurate on
  that bin's problems (fewest generated + PRM-scored tokens on ties), greedy included: a bin where no
  search beats greedy gets greedy, so an easy question gets no more compute than it needs.
- `FitInputs` is what a table is fitted from; `restricted_to` keeps some problems, which is how the
  sweep cross-fits `auto` (fitted on one half of the problems, measured on the other).
Nothing here runs an engine.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from evaluation.sweep_records import SWEEP_ENTRIES, ProblemResult
from searchers.auto import AutoTable

PROBE_BINS = [0.2, 0.5]  # difficulty bins on the greedy answer's PRM value


@dataclass(frozen=True)
class FitInputs:
    probe: dict[str, float]  # task -> the PRM's value of its greedy solution
    greedy_correct: dict[str, bool]  # task -> greedy solved it
    searched: list[ProblemResult]  # the sweep entries' results (neither greedy's nor auto's)

    @classmethod
    def from_results(cls, results: Sequence[ProblemResult], probe: dict[str, float]) -> FitInputs:
        """From a sweep's results, whatever labels they carry: greedy's and the entries' are used."""
        greedy_correct = {r.task: r.correct for r in results if r.label == "greedy"}
        searched = [r for r in results if r.label not in ("greedy", "auto")]
        return cls(probe, greedy_correct, searched)

    def restricted_to(self, tasks: Collection[str]) -> FitInputs:
        return FitInputs(
            {t: v for t, v in self.probe.items() if t in tasks},
            {t: ok for t, ok in self.greedy_correct.items() if t in tasks},
            [r for r in self.searched if r.task in tasks],
        )


def difficulty_bin(probe_value: float) -> int:
    return sum(probe_value >= b for b in PROBE_BINS)


def fit_table(inputs: FitInputs, multiples: Sequence[float]) -> AutoTable:
    """Per difficulty bin and budget: the most accurate entry (fewest tokens on ties), greedy included."""
    cells = _cells(inputs)
    choices: dict[str, dict[str, dict[str, Any]]] = {}
    for difficulty in range(len(PROBE_BINS) + 1):
        tasks = [t for t, v in inputs.probe.items() if difficulty_bin(v) == difficulty]
        greedy_accuracy = sum(inputs.greedy_correct[t] for t in tasks) / max(len(tasks), 1)
        choices[str(difficulty)] = {
            str(multiple): _best_choice(cells, difficulty, multiple, greedy_accuracy)
            for multiple in multiples
        }
    return AutoTable(list(PROBE_BINS), list(multiples), choices)


def _cells(inputs: FitInputs) -> dict[tuple[int, float, str], list[ProblemResult]]:
    """The searched results of the probed problems by (difficulty bin, multiple, label)."""
    cells: dict[tuple[int, float, str], list[ProblemResult]] = defaultdict(list)
    for r in inputs.searched:
        if r.task in inputs.probe:
            cells[(difficulty_bin(inputs.probe[r.task]), r.multiple, r.label)].append(r)
    return cells


def _best_choice(
    cells: dict[tuple[int, float, str], list[ProblemResult]],
    difficulty: int,
    multiple: float,
    greedy_accuracy: float,
) -> dict[str, Any]:
    # (accuracy, minus the cost, label): greedy costs nothing beyond the probe, so it wins accuracy ties
    best: tuple[float, float, str] = (greedy_accuracy, 0.0, "greedy")
    for entry in SWEEP_ENTRIES:
        cell = cells.get((difficulty, multiple, entry.label), [])
        if cell:
            accuracy = sum(r.correct for r in cell) / len(cell)
            cost = -statistics.mean(r.generated + r.scored for r in cell)
            best = max(best, (accuracy, cost, entry.label))
    label = best[2]
    if label == "greedy":
        return {"strategy": "greedy"}
    entry = next(e for e in SWEEP_ENTRIES if e.label == label)
    return {"strategy": entry.strategy, "knobs": entry.knobs, "label": label}
