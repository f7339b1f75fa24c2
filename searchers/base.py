"""What every searcher shares: the request context it runs in, the traces it grows, the result it returns.

Contract:
- A searcher is an object with a `name`, a pydantic `Knobs` model (its explicit settings; unknown ones
  are refused), `needs_prm(knobs)`, `needs_checker(knobs)` (`SearcherDefaults` says no) and
  `async run(ctx, knobs) -> SearchResult`. It reads `ctx.budget` to size its rounds, pricing them in
  compute units through `ctx.generation_units` / `ctx.scoring_units` (the budget's weights, priced as
  the adapters reserve a call: nothing cached; never a token counted as one unit by hand),
  calls only `ctx.policy` / `ctx.verifier` (the metered adapters, which charge the budget), and when
  one of them raises `SearchStopped` it returns its best answer so far with that stop reason.
- A `Trace` is a (partial) solution after the prompt, as the token ids of each step; the next prefix is
  always `prompt_ids + trace.token_ids`, never re-tokenised text.
- `score` fills traces' PRM step scores in one verifier call; `value` turns them into one number with
  the request's aggregation (`verifiers.aggregate`).
- No strategy answers below greedy: `greedy_solution` is the temperature-0 solution (drawn in one call,
  or the one the request already holds in `ctx.greedy`), and `never_below_greedy` runs a search that
  grows partial solutions with the greedy solution as its first candidate: drawn (and scored) first,
  it is the answer when the rest of the budget cannot pay for one whole path of the search, and else it
  competes with the search's answer by PRM value. Only when greedy decoding itself did not finish is one
  greedy completion held back, for the best partial solution of a search that ended without a finished one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from engines.base import Continuation, InvalidPrompt, Sampling, derived_seed
from engines.budget import Budget, Hold, SearchStopped, StopReason
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
    greedy: Trace | None = None  # the greedy solution, where the request drew it already (auto's probe)

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
        return replace(self.sampling, seed=None if seed is None else derived_seed(seed, 7919, round_index))

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

    # --- planning in compute units: the one place searchers price their calls ------------------------
    def generation_units(self, generated: float, prompt: float) -> float:
        """Units of sampling `generated` tokens after sending `prompt` prompt tokens, priced as the
        adapter reserves the call (no prompt token cached)."""
        return self.budget.weights.for_generation(generated, prompt)

    def scoring_units(self, tokens: float) -> float:
        """Units of the PRM reading `tokens` tokens, priced as the adapter reserves the call (none
        cached)."""
        return self.budget.weights.for_scoring(tokens)

    def score_units(self, traces: Sequence[Trace]) -> float:
        """Units of scoring these traces in one call (`score_cost`'s tokens, priced)."""
        return self.scoring_units(self.score_cost(traces))


def stepwise_path_cost(ctx: SearchContext) -> float:
    """Compute units one solution grown step by step takes (planned from `ctx.hints`): each step
    generated after the prefix before it, then the PRM reading the whole prefix (prompt, steps and tags)."""
    step, steps, prompt = ctx.hints.step_tokens, ctx.hints.steps, len(ctx.prompt_ids)
    return sum(
        ctx.generation_units(step, prompt + (depth - 1) * step)
        + ctx.scoring_units(prompt + depth * (step + 1))
        for depth in range(1, steps + 1)
    )


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


class PartialSearchKnobs(Knobs):
    """The knob every searcher that grows partial solutions shares (see `never_below_greedy`)."""

    include_greedy: bool = Field(True, description="the greedy solution is the first candidate")


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


def first_step(
    continuation: Continuation,
    split: Callable[[Sequence[int]], list[tuple[int, ...]]],
    decode: Callable[..., str],
) -> Continuation:
    """A sampled continuation's first step, with that step's own log-probability (the continuation
    itself when it is a single step: then the child is where it ended)."""
    steps = split(continuation.token_ids)
    if len(steps) <= 1:
        return continuation
    logprob = continuation.step_logprobs[0] if continuation.step_logprobs else continuation.logprob
    return Continuation(steps[0], decode(steps[0]), "step", logprob, (logprob,))


def value(trace: Trace, how: Aggregation) -> float:
    """One number per trace; an unscored or empty trace is worth nothing."""
    return aggregate(trace.scores, how) if trace.scored and trace.steps else 0.0


def best_by_value(traces: Sequence[Trace], how: Aggregation) -> Trace:
    """The highest-valued trace, preferring finished ones (a partial solution is not an answer)."""
    return max(traces, key=lambda t: (t.finished, value(t, how)))


def distinct(traces: Iterable[Trace]) -> list[Trace]:
    """One trace per token sequence, in first-seen order; a scored copy preferred."""
    by_tokens: dict[tuple[int, ...], Trace] = {}
    for trace in traces:
        key = tuple(trace.token_ids)
        known = by_tokens.get(key)
        if known is None or (trace.scored and not known.scored):
            by_tokens[key] = trace
    return list(by_tokens.values())


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
        score=answer_score(ctx, best),
        tree=tree,
    )


def answer_score(ctx: SearchContext, answer: Trace) -> float | None:
    """The PRM value a result reports for its answer; None when the PRM has not read all of it."""
    return value(answer, ctx.aggregation) if answer.scored and answer.steps else None


# --- never below greedy ---------------------------------------------------------------------------


def greedy_cost(ctx: SearchContext) -> float:
    """Compute units planned for one greedy completion: the hinted solution after the prompt, with the
    margin (a completion of a partial solution sends a longer prefix but generates less)."""
    return ctx.generation_units(ctx.hints.solution_tokens, len(ctx.prompt_ids)) * COST_MARGIN


async def greedy_completion(ctx: SearchContext, trace: Trace) -> Trace:
    """`trace` rolled out to its end at temperature 0, in one engine call (from the empty trace: greedy
    decoding). Raises `SearchStopped` when the budget or the deadline does not allow the call."""
    sampling = replace(ctx.sampling, temperature=0.0)
    generation = await ctx.policy.rollout([ctx.prefix(trace)], 1, sampling)
    return ctx.grow(trace, generation.continuations[0][0])


async def greedy_solution(ctx: SearchContext) -> Trace:
    """The greedy solution: the one the request holds already, else drawn in one call."""
    return ctx.greedy if ctx.greedy is not None else await greedy_completion(ctx, Trace())


def best_partial(traces: Sequence[Trace], how: Aggregation) -> Trace:
    """The unfinished trace worth most by the PRM scores it has (a last step the budget left unscored
    does not zero the steps before it), the longer one on ties; the empty trace when there is none."""
    partials = [t for t in traces if not t.finished]
    return max(partials, key=lambda t: (aggregate(t.scores, how), len(t.steps)), default=Trace())


async def never_below_greedy(
    ctx: SearchContext,
    strategy: str,
    knobs: PartialSearchKnobs,
    path_cost: float,
    judged: bool,
    search: Callable[[Hold], Awaitable[SearchResult]],
    verified: Callable[[Trace], bool] = lambda trace: False,
) -> SearchResult:
    """Run `search` (a strategy that grows partial solutions) with the greedy solution as its first
    candidate, so that it never answers below greedy.

    - The greedy solution comes first (the request's `ctx.greedy`, else one temperature-0 call), scored by
      the PRM when the search reads it (`judged`) and the budget affords it. With `include_greedy` off
      (and none in hand) it is drawn only where the budget cannot pay for a path, and one greedy
      completion is held back instead, as below.
    - `path_cost`: the compute units one whole path of the search is planned to take (margin included).
      When what is left cannot pay for that, the greedy solution is the answer (stop reason "budget").
    - Otherwise `search` runs on the rest; it gets a `Hold`, which it may release once it has a finished
      solution. The answer is the better of the search's answer and the greedy solution (`with_greedy`:
      finished first, then one the search's outcome check `verified`, then by PRM value when judged; ties
      keep the search's), and the greedy solution joins the candidates.
    - Only when there is no finished greedy solution (a token limit cut it) is one greedy completion held
      back, and a search that ended (done, budget, depth) with no finished solution rolls its best partial
      solution out at temperature 0 in one call: that is the answer, and a candidate. A deadline stop
      returns at once.
    """
    if judged:
        ctx.require_verifier()  # refuse before anything is spent
    greedy: Trace | None = None
    try:
        if knobs.include_greedy or ctx.greedy is not None:
            greedy = await judge_answer(ctx, await greedy_solution(ctx), judged)
        reserve = 0 if greedy is not None and greedy.finished else greedy_cost(ctx)
        if not ctx.budget.can_afford(path_cost + reserve):
            greedy = greedy or await judge_answer(ctx, await greedy_solution(ctx), judged)
            return result(ctx, strategy, greedy, [greedy], "budget", knobs)
    except SearchStopped as stopped:
        return result(ctx, strategy, Trace(), [], stopped.reason, knobs)
    with ctx.budget.hold(reserve) as hold:
        searched = await search(hold)
    found = searched if greedy is None else with_greedy(ctx, searched, greedy, judged, verified)
    if found.best.finished or found.stop_reason == "deadline":
        return found
    partial = best_partial([searched.best, *searched.candidates], ctx.aggregation)
    try:
        answer = await judge_answer(ctx, await greedy_completion(ctx, partial), judged)
    except (SearchStopped, InvalidPrompt):  # refused, or the partial solution fills the policy's context
        return found
    return replace(
        found,
        best=answer,
        candidates=[*found.candidates, answer],
        usage=ctx.budget.spent,
        score=answer_score(ctx, answer),
    )


def with_greedy(
    ctx: SearchContext,
    found: SearchResult,
    greedy: Trace,
    judged: bool,
    verified: Callable[[Trace], bool],
) -> SearchResult:
    """The search's result with the greedy solution among its candidates (`distinct`: last, where the
    search did not find the same tokens), and as its answer where it is worth more: a finished solution
    before an unfinished one, then one the outcome check verified, then (judged) the higher PRM value;
    ties keep the search's answer."""
    candidates = distinct([*found.candidates, greedy])

    def worth(trace: Trace) -> tuple[bool, bool, float]:
        return (
            trace.finished,
            trace.finished and verified(trace),
            value(trace, ctx.aggregation) if judged else 0.0,
        )

    best = max([found.best, greedy], key=worth)
    return replace(
        found, best=best, candidates=candidates, usage=ctx.budget.spent, score=answer_score(ctx, best)
    )


async def judge_answer(ctx: SearchContext, answer: Trace, judged: bool) -> Trace:
    """A fallback answer, scored by the PRM when the search reads it and the budget affords it."""
    if judged:
        with contextlib.suppress(SearchStopped):
            return (await score(ctx, [answer]))[0]
    return answer
