"""What every searcher shares: the request context it runs in, the traces it grows, the result it returns.

Contract:
- A searcher is an object with a `name`, a pydantic `Knobs` model (its explicit settings; unknown ones
  are refused), `needs_prm(knobs)`, `needs_checker(knobs)` (`SearcherDefaults` says no) and
  `async run(ctx, knobs) -> SearchResult`. It reads `ctx.budget` to size its rounds,
  calls only `ctx.policy` / `ctx.verifier` (the metered adapters, which charge the budget), and when
  one of them raises `SearchStopped` it returns its best answer so far with that stop reason.
- A `Trace` is a (partial) solution after the prompt, as the token ids of each step; the next prefix is
  always `prompt_ids + trace.token_ids`, never re-tokenised text.
- `score` fills traces' PRM step scores in one verifier call; `value` turns them into one number with
  the request's aggregation (`verifiers.aggregate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from engines.base import Continuation, Sampling
from engines.budget import Budget, StopReason
from engines.metered import MeteredPolicy
from engines.usage import Usage
from searchers.task_tools import TaskHints
from verifiers.aggregate import Aggregation, aggregate
from verifiers.metered import MeteredVerifier
from verifiers.prm import Candidate

COST_MARGIN = 1.1  # searchers plan rounds for slightly longer samples and steps than seen or hinted,
# so that the last round the budget affords is not cut short


@dataclass(frozen=True)
class Trace:
    steps: tuple[tuple[int, ...], ...] = ()
    texts: tuple[str, ...] = ()
    finished: bool = False  # the policy ended the solution
    truncated: bool = False  # a token limit cut it
    logprob: float = 0.0
    scores: tuple[float, ...] = ()  # PRM step scores, once scored

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def token_ids(self) -> list[int]:
        return [t for step in self.steps for t in step]

    @property
    def ended(self) -> bool:
        """Nothing more will be generated for it: finished, or cut by a token limit."""
        return self.finished or self.truncated

    @property
    def scored(self) -> bool:
        return len(self.scores) == len(self.steps)

    def extend(
        self,
        continuation: Continuation,
        split: Callable[[Sequence[int]], list[tuple[int, ...]]],
        decode: Callable[..., str],
    ) -> Trace:
        """This trace followed by a continuation (one step from `expand`, several from `rollout`)."""
        new = split(continuation.token_ids)
        return Trace(
            steps=self.steps + tuple(new),
            texts=self.texts + tuple(decode(s) for s in new),
            finished=continuation.finish == "end",
            truncated=continuation.finish in ("length", "abort"),
            logprob=self.logprob + continuation.logprob,
            scores=self.scores,
        )


@dataclass
class SearchContext:
    prompt_ids: tuple[int, ...]
    policy: MeteredPolicy
    verifier: MeteredVerifier | None
    budget: Budget
    question: str = ""  # the prompt as text, or the last user message (what a PRM of its own format reads)
    sampling: Sampling = field(default_factory=Sampling)
    aggregation: Aggregation = "last"
    answer_of: Callable[[str], str | None] = lambda text: None  # the answer a completion commits to
    checker: Callable[[str], bool] | None = None  # an environment verifier, where the task has one
    hints: TaskHints = field(default_factory=TaskHints)
    progress: Callable[[str, dict[str, Any]], None] | None = None  # (event, details), for streaming

    def grow(self, trace: Trace, continuation: Continuation) -> Trace:
        return trace.extend(continuation, self.policy.split_steps, self.policy.decode)

    def prefix(self, trace: Trace) -> list[int]:
        return [*self.prompt_ids, *trace.token_ids]

    def report(self, event: str, **details: Any) -> None:
        if self.progress is not None:
            self.progress(event, details)

    def seeded(self, round_index: int) -> Sampling:
        """The request's sampling with a seed per round, so rounds draw different samples reproducibly."""
        seed = self.sampling.seed
        return replace(self.sampling, seed=None if seed is None else seed * 7919 + round_index)

    def require_verifier(self) -> MeteredVerifier:
        if self.verifier is None:
            raise ValueError("this strategy needs a PRM, and the server has none")
        return self.verifier

    def candidate(self, trace: Trace) -> Candidate:
        """The trace as the PRM reads it: ids and texts, with the step scores already known."""
        return Candidate(self.prompt_ids, trace.steps, trace.scores, self.question, trace.texts)

    def score_cost(self, traces: Sequence[Trace]) -> int:
        """The tokens the PRM reads to score these traces (exact, in the PRM's own format); without a PRM,
        for planning only, what a PRM of our own format would read."""
        if self.verifier is None:
            return sum(len(self.prompt_ids) + len(t.token_ids) + len(t.steps) for t in traces)
        return self.verifier.cost([self.candidate(t) for t in traces])


@dataclass
class SearchResult:
    strategy: str
    best: Trace
    candidates: list[Trace]
    usage: Usage
    stop_reason: StopReason
    knobs: dict[str, Any]
    score: float | None = None
    tree: dict[str, Any] | None = None  # MCTS's tree, when asked for

    @property
    def text(self) -> str:
        return self.best.text


class Knobs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Searcher(Protocol):
    @property
    def name(self) -> str: ...

    Knobs: ClassVar[type[Any]]  # a pydantic model of the strategy's explicit settings

    def needs_prm(self, knobs: Any) -> bool: ...

    def needs_checker(self, knobs: Any) -> bool:
        """Whether these knobs grade answers with the task's exact checker (only some tasks have one);
        `SearcherDefaults` says no."""

    async def run(self, ctx: SearchContext, knobs: Any) -> SearchResult: ...


class SearcherDefaults:
    """The `Searcher` protocol's defaults, for a searcher to inherit where it has nothing to say."""

    def needs_checker(self, knobs: Any) -> bool:
        return False


async def score(ctx: SearchContext, traces: Sequence[Trace]) -> list[Trace]:
    """The traces with PRM step scores (one verifier call for all that lack them). A trace too long for
    the PRM's context cannot be verified: it scores 0 at every step, so any solution the PRM can read is
    preferred to it, and the search goes on instead of failing."""
    verifier = ctx.require_verifier()
    todo = [i for i, t in enumerate(traces) if not t.scored and t.steps]
    out = list(traces)
    readable = [i for i in todo if verifier.readable(ctx.candidate(traces[i]))]
    for i in set(todo) - set(readable):
        out[i] = replace(out[i], scores=(0.0,) * len(traces[i].steps))
    if readable:
        scores = await verifier.score([ctx.candidate(traces[i]) for i in readable])
        for i, row in zip(readable, scores.step_scores, strict=True):
            out[i] = replace(out[i], scores=tuple(row))
    return out


def value(trace: Trace, how: Aggregation) -> float:
    """One number per trace; an unscored or empty trace is worth nothing."""
    return aggregate(trace.scores, how) if trace.scored and trace.steps else 0.0


def best_by_value(traces: Sequence[Trace], how: Aggregation) -> Trace:
    """The highest-valued trace, preferring finished ones (a partial solution is not an answer)."""
    return max(traces, key=lambda t: (t.finished, value(t, how)))


def result(
    ctx: SearchContext,
    strategy: str,
    best: Trace,
    candidates: Sequence[Trace],
    stop_reason: StopReason,
    knobs: BaseModel,
    tree: dict[str, Any] | None = None,
) -> SearchResult:
    return SearchResult(
        strategy=strategy,
        best=best,
        candidates=list(candidates),
        usage=ctx.budget.spent,
        stop_reason=stop_reason,
        knobs=knobs.model_dump(),
        score=value(best, ctx.aggregation) if best.scored and best.steps else None,
        tree=tree,
    )
