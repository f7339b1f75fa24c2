"""Prometheus metrics of one server: compute spent, searches in flight, and accuracy against compute.

Contract: `Metrics()` owns its own `CollectorRegistry` (no global state; several servers can live in
one process, as tests do) and `render()` gives the text exposition for `/metrics`. Names carry the
`ponder_` prefix and their unit. `observe_search` records one finished search (its tokens by kind, the
compute units they cost by strategy, the share of its budget it spent); `observe_grade` one
graded outcome, labelled by strategy and budget bucket (the budget rounded up to a power of two), so
`ponder_graded_total` divided by strategy and bucket is accuracy against compute.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from engines.usage import Usage

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def budget_bucket(budget: int) -> str:
    bucket = 1
    while bucket < budget:
        bucket *= 2
    return str(bucket)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ponder_requests",
            "HTTP requests by endpoint, strategy and status",
            ["endpoint", "strategy", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ponder_request_duration_seconds",
            "Search latency by strategy",
            ["strategy"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.tokens = Counter(
            "ponder_tokens", "Tokens by kind: generated, prefilled, cached, scored", ["kind"], registry=r
        )
        self.units = Counter(
            "ponder_compute_units",
            "Compute units spent (generated-token equivalents, engines.cost) by strategy",
            ["strategy"],
            registry=r,
        )
        self.utilisation = Histogram(
            "ponder_budget_utilisation_ratio",
            "Share of the budget a search spent",
            ["strategy"],
            registry=r,
            buckets=RATIO_BUCKETS,
        )
        self.stops = Counter("ponder_search_stops", "Why searches ended", ["strategy", "reason"], registry=r)
        self.in_flight = Gauge("ponder_searches_in_flight", "Searches running now", registry=r)
        self.queued = Gauge("ponder_searches_queued", "Searches waiting for a slot", registry=r)
        self.graded = Counter(
            "ponder_graded",
            "Graded outcomes (requests with a reference answer) by strategy, budget bucket and outcome",
            ["strategy", "budget_bucket", "outcome"],
            registry=r,
        )
        self.engine_up = Gauge("ponder_engine_up", "1 while the engine is healthy", ["engine"], registry=r)

    def observe_search(
        self, strategy: str, usage: Usage, units: float, budget: int, stop_reason: str, seconds: float
    ) -> None:
        self.latency.labels(strategy).observe(seconds)
        self.tokens.labels("generated").inc(usage.generated_tokens)
        self.tokens.labels("prefilled").inc(usage.prefilled_prompt_tokens)
        self.tokens.labels("cached").inc(usage.cached_prompt_tokens)
        self.tokens.labels("scored").inc(usage.scored_tokens)
        self.tokens.labels("scored_cached").inc(usage.cached_scored_tokens)  # of "scored"
        self.units.labels(strategy).inc(units)
        self.utilisation.labels(strategy).observe(units / budget)
        self.stops.labels(strategy, stop_reason).inc()

    def observe_grade(self, strategy: str, budget: int, correct: bool) -> None:
        self.graded.labels(strategy, budget_bucket(budget), "correct" if correct else "incorrect").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
