"""The search sweep's records: what it runs, what it keeps per problem, and each point's summary.

Contract:
- A `SweepEntry` is one line of the plot: a label, the strategy it runs and that strategy's knobs.
  `SWEEP_ENTRIES` are the ones `ponder eval search` sweeps (`ponder.cli.STRATEGY_LABELS` repeats their
  labels so that `--help` need not import this).
- A `ProblemResult` is one problem solved by one entry (or greedy, or auto) at one budget multiple:
  graded correctness, the oracle (some candidate was correct), tokens by kind, the compute units they
  cost, stop reason, candidates. Its fields, in order, are the columns of `search-problems.jsonl`
  (`cached_scored` and `units` default to 0 for files written before the compute unit).
- A `SweepPoint` summarises one (entry, multiple) over the problems (`summarize`): the problems' tier
  and split, the budget in compute units (`budget_units`: the multiple of greedy's mean cost), accuracy
  with its 95% Wilson interval, mean compute units and mean tokens per question by kind, wall time,
  generated tokens per second and that rate over the raw engine's (`engine_efficiency`), plus the
  oracle for reference. Its fields, in order, are the keys of a point in `search.json`; `point_of_row`
  reads a point written before the compute unit (its budget then counted tokens, and it has no units).
Nothing here runs an engine.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evaluation.metrics import wilson_interval


@dataclass(frozen=True)
class SweepEntry:
    label: str  # the line in the plot
    strategy: str
    knobs: dict[str, Any]


SWEEP_ENTRIES = [
    SweepEntry("majority_vote", "best_of_n", {"select": "vote"}),
    SweepEntry("adaptive_vote", "best_of_n", {"select": "vote", "adaptive": True}),
    SweepEntry("best_of_n_prm", "best_of_n", {"select": "prm"}),
    SweepEntry("weighted_vote", "best_of_n", {"select": "weighted_vote"}),
    SweepEntry("beam", "beam", {}),
    SweepEntry("dvts", "dvts", {}),
    SweepEntry("mcts", "mcts", {}),
    SweepEntry("particle_filter", "particle_filter", {}),
    SweepEntry("revision", "revision", {}),
]


@dataclass(frozen=True)
class ProblemResult:
    task: str
    label: str  # the entry's, or "greedy" / "auto"
    multiple: float  # the budget, in greedy's mean generated tokens
    correct: bool
    oracle: bool  # some candidate was correct
    generated: int
    prompt: int
    cached: int
    scored: int
    stop_reason: str
    candidates: int
    cached_scored: int = 0  # of `scored`, PRM prefix-cache hits
    units: float = 0.0  # compute units spent


@dataclass(frozen=True)
class SweepPoint:
    strategy: str  # the entry's label ("greedy" and "auto" included)
    tier: int | None  # the Countdown tier (None: a task file)
    split: str | None  # "eval" or "dev" (a task file's: as labelled)
    budget_multiple: float
    budget: int  # compute units each request got
    n_problems: int
    accuracy: float
    ci_low: float
    ci_high: float
    oracle_accuracy: float
    mean_units: float  # compute units spent per question
    mean_generated_tokens: float
    mean_prefilled_tokens: float
    mean_cached_tokens: float
    mean_scored_tokens: float
    mean_cached_scored_tokens: float
    mean_total_tokens: float
    mean_candidates: float
    stop_reasons: dict[str, int]  # sorted by reason
    wall_s: float
    tokens_per_s: float  # generated tokens through the searcher
    engine_efficiency: float | None  # tokens_per_s over the raw engine's rate; None without that rate


def budget_units(multiple: float, unit: float) -> int:
    """A request's budget in compute units at `multiple` x the 1x unit (greedy's mean cost in units),
    rounded up: rounded down, 1x could not pay for greedy's last token (its end-of-sequence), and every
    strategy's 1x answer would be cut one token short."""
    return max(1, math.ceil(multiple * unit - 1e-9))


@dataclass(frozen=True)
class Labels:
    """What every point of one sweep says about its problems."""

    tier: int | None = None
    split: str | None = None

    @classmethod
    def of(cls, meta: dict[str, Any]) -> Labels:
        """The tier and split a sweep's meta names (None where it names none)."""
        tier = meta.get("tier")
        return cls(tier=None if tier is None else int(tier), split=meta.get("split"))


def summarize(
    results: Sequence[ProblemResult], wall: float, engine_tps: float, unit: float, labels: Labels
) -> SweepPoint:
    """The point of one (label, multiple): `results` all share both, and took `wall` seconds together."""
    n = len(results)
    wins = sum(r.correct for r in results)
    low, high = wilson_interval(wins, n)
    generated = sum(r.generated for r in results)
    prefilled = sum(r.prompt - r.cached for r in results)
    scored = sum(r.scored for r in results)
    tps = generated / wall if wall > 0 else 0.0
    return SweepPoint(
        strategy=results[0].label,
        tier=labels.tier,
        split=labels.split,
        budget_multiple=results[0].multiple,
        budget=budget_units(results[0].multiple, unit),
        n_problems=n,
        accuracy=round(wins / n, 4),
        ci_low=round(low, 4),
        ci_high=round(high, 4),
        oracle_accuracy=round(sum(r.oracle for r in results) / n, 4),
        mean_units=round(sum(r.units for r in results) / n, 1),
        mean_generated_tokens=round(generated / n, 1),
        mean_prefilled_tokens=round(prefilled / n, 1),
        mean_cached_tokens=round(sum(r.cached for r in results) / n, 1),
        mean_scored_tokens=round(scored / n, 1),
        mean_cached_scored_tokens=round(sum(r.cached_scored for r in results) / n, 1),
        mean_total_tokens=round((generated + prefilled + scored) / n, 1),
        mean_candidates=round(sum(r.candidates for r in results) / n, 2),
        stop_reasons=dict(sorted(Counter(r.stop_reason for r in results).items())),
        wall_s=round(wall, 1),
        tokens_per_s=round(tps, 1),
        engine_efficiency=round(tps / engine_tps, 3) if engine_tps else None,
    )


def point_of_row(row: dict[str, Any], labels: Labels) -> SweepPoint:
    """A point as `search.json` holds it; one written before the compute unit gets its token budget as
    `budget`, no units (0.0) and the sweep's labels."""
    old = dict(row)
    if "budget_tokens" in old:
        old["budget"] = old.pop("budget_tokens")
    defaults = {
        "tier": labels.tier,
        "split": labels.split,
        "mean_units": 0.0,
        "mean_cached_scored_tokens": 0.0,
    }
    return SweepPoint(**{**defaults, **old})
