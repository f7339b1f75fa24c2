import math

import pytest

from evaluation.metrics import auroc, wilson_interval
from verifiers.aggregate import AGGREGATIONS, aggregate


def test_aggregations() -> None:
    scores = [0.9, 0.5, 0.8]
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "min") == 0.5
    assert math.isclose(aggregate(scores, "prod"), 0.36)
    assert math.isclose(aggregate(scores, "mean"), 2.2 / 3)
    assert all(aggregate([], how) == 0.0 for how in AGGREGATIONS)
    with pytest.raises(ValueError, match="valid: last, min, prod, mean"):
        aggregate(scores, "max")  # type: ignore[arg-type]


def test_auroc_matches_pairwise_definition() -> None:
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    scores = [0.3, 0.7, 0.7, 0.2, 0.9, 0.4]
    labels = [False, True, False, True, True, False]
    pairs = [
        (p, n)
        for p, y in zip(scores, labels, strict=True)
        if y
        for n, z in zip(scores, labels, strict=True)
        if not z
    ]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auroc(scores, labels) == pytest.approx(expected)
    assert auroc([0.1, 0.2], [True, True]) is None


def test_wilson_interval_contains_the_estimate() -> None:
    low, high = wilson_interval(30, 100)
    assert low < 0.3 < high
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 50)[0] == 0.0
