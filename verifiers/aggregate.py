"""Turning a solution's per-step PRM scores into one number: the only place that does it.

Contract: `aggregate(scores, how)` with `how` in AGGREGATIONS; an empty score list aggregates to 0.0.
`last` suits a value-function PRM (the last step's chance that the solution still succeeds), `min` and
`prod` punish any weak step, `mean` is the lenient average.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Aggregation = Literal["last", "min", "prod", "mean"]
AGGREGATIONS: tuple[Aggregation, ...] = ("last", "min", "prod", "mean")


def aggregate(scores: Sequence[float], how: Aggregation = "last") -> float:
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    if how == "mean":
        return float(sum(scores) / len(scores))
    raise ValueError(f"unknown aggregation {how!r}; valid: {', '.join(AGGREGATIONS)}")
