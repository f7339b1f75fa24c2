"""The test-time compute controller: one search request in, one `SearchResult` out.

Contract:
- `Controller(policy, verifier, limits, searchers, weights)` gets the engines and the cost weights of
  the compute unit injected (no global state; `engines.cost`: the served models' measured weights, or
  the defaults) and serves any number of concurrent requests; each `run` creates the request's `Budget`
  in those units, binds the engines to it (`MeteredPolicy`, `MeteredVerifier`), validates the strategy
  and knobs, and runs the searcher.
- `validate` raises `InvalidSearch` (a `ValueError`, with the offending `param`) for an unknown
  strategy (listing the valid ones), an unknown or ill-typed knob (listing the strategy's knobs), a
  budget outside the server's limits, or a PRM strategy on a server without a PRM.
- However the search ends (done, budget, deadline, error, cancellation by a departed client), every
  engine request it started is aborted before `run` returns or re-raises: the engines are left idle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.base import PolicyEngine, Sampling
from engines.budget import Budget
from engines.cost import CostWeights
from engines.metered import MeteredPolicy
from searchers.base import SearchContext, Searcher, SearchResult
from searchers.task_tools import task_tools
from verifiers.aggregate import AGGREGATIONS, Aggregation
from verifiers.metered import MeteredVerifier
from verifiers.prm import StepVerifier

log = logging.getLogger("ponder.search")


class InvalidSearch(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class Limits(BaseModel):
    """What a server allows a request and assumes where it says nothing. Declared once: the server's
    settings (and so its command line) inherit these fields and defaults."""

    model_config = ConfigDict(frozen=True)

    default_strategy: str = Field("auto", description="the strategy of a request that names none")
    default_budget: int = Field(
        1024, gt=0, description="the budget (compute units) of a request that names none"
    )
    max_budget: int = Field(
        65_536, gt=0, description="the largest budget (compute units) a request may ask for"
    )
    max_timeout_s: float = Field(600.0, gt=0, description="the longest a search may run, in seconds")
    max_verifier_calls: int | None = Field(
        None, gt=0, description="PRM-scored candidates a search may ask for (default: no cap)"
    )

    @classmethod
    def of(cls, settings: BaseModel) -> Limits:
        """The limits among a larger settings model's fields."""
        return cls(**settings.model_dump(include=set(cls.model_fields)))


@dataclass
class SearchRequest:
    prompt_ids: tuple[int, ...]
    prompt_text: str  # what task-family detection reads (the prompt, or the last user message)
    request_id: str
    strategy: str | None = None
    budget: int | None = None  # compute units (engines.cost); None: the server's default
    knobs: dict[str, Any] = field(default_factory=dict)
    aggregation: Aggregation = "last"
    sampling: Sampling = field(default_factory=Sampling)
    timeout_s: float | None = None
    max_verifier_calls: int | None = None
    max_prefill_tokens: int | None = None
    progress: Callable[[str, dict[str, Any]], None] | None = None


class Controller:
    def __init__(
        self,
        policy: PolicyEngine,
        verifier: StepVerifier | None,
        limits: Limits | None = None,
        searchers: dict[str, Searcher] | None = None,
        weights: CostWeights | None = None,
    ) -> None:
        from searchers.registry import default_searchers

        self.policy = policy
        self.verifier = verifier
        self.limits = limits or Limits()
        self.searchers = searchers if searchers is not None else default_searchers()
        self.weights = weights or CostWeights()

    def validate(self, request: SearchRequest) -> tuple[Searcher, BaseModel, int]:
        name = request.strategy or self.limits.default_strategy
        searcher = self.searchers.get(name)
        if searcher is None:
            valid = ", ".join(sorted(self.searchers))
            raise InvalidSearch(f"unknown strategy {name!r}; valid strategies: {valid}", "search.strategy")
        try:
            knobs = searcher.Knobs(**request.knobs)
        except ValidationError as error:
            valid = ", ".join(searcher.Knobs.model_fields)
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise InvalidSearch(
                f"invalid knobs for {name}: {problems}. Valid knobs: {valid}", "search.knobs"
            ) from None
        budget = self.limits.default_budget if request.budget is None else request.budget
        if not 1 <= budget <= self.limits.max_budget:
            raise InvalidSearch(
                f"budget must be between 1 and {self.limits.max_budget} compute units, got {budget}",
                "search.budget",
            )
        if request.aggregation not in AGGREGATIONS:
            raise InvalidSearch(
                f"unknown aggregation {request.aggregation!r}; valid: {', '.join(AGGREGATIONS)}",
                "search.aggregation",
            )
        if request.timeout_s is not None and not 0 < request.timeout_s <= self.limits.max_timeout_s:
            raise InvalidSearch(
                f"timeout must be in (0, {self.limits.max_timeout_s}] seconds", "search.timeout_s"
            )
        if self.verifier is None and searcher.needs_prm(knobs):
            raise InvalidSearch(f"strategy {name} needs a PRM and this server has none", "search.strategy")
        if searcher.needs_checker(knobs) and task_tools(request.prompt_text).checker is None:
            raise InvalidSearch(
                f"these {name} knobs grade answers with an exact checker, which only tasks such as "
                "Countdown have; use the PRM instead",
                "search.knobs",
            )
        return searcher, knobs, budget

    def context(self, request: SearchRequest, budget_units: int) -> SearchContext:
        timeout = request.timeout_s if request.timeout_s is not None else self.limits.max_timeout_s
        caps = request.max_verifier_calls or self.limits.max_verifier_calls
        budget = Budget.with_timeout(
            budget_units,
            timeout,
            max_verifier_calls=caps,
            max_prefill_tokens=request.max_prefill_tokens,
            weights=self.weights,
        )
        tools = task_tools(request.prompt_text)
        return SearchContext(
            prompt_ids=tuple(request.prompt_ids),
            policy=MeteredPolicy(self.policy, budget, request.request_id),
            verifier=None
            if self.verifier is None
            else MeteredVerifier(self.verifier, budget, request.request_id),
            budget=budget,
            question=request.prompt_text,
            sampling=request.sampling,
            aggregation=request.aggregation,
            answer_of=tools.answer_of,
            checker=tools.checker,
            hints=tools.hints,
            progress=request.progress,
        )

    async def run(self, request: SearchRequest) -> SearchResult:
        searcher, knobs, budget_units = self.validate(request)
        ctx = self.context(request, budget_units)
        try:
            result = await searcher.run(ctx, knobs)
        finally:
            await self.abort(request.request_id)
        log.info(
            "request %s: %s stopped (%s) after %.1f/%d compute units",
            request.request_id,
            searcher.name,
            result.stop_reason,
            ctx.budget.used,
            budget_units,
        )
        return result

    async def abort(self, request_id: str) -> None:
        await self.policy.abort(request_id)
        if self.verifier is not None:
            await self.verifier.abort(request_id)
