"""From a finished search to what the client reads: the answer's text, finish reason, report and usage.

Contract: `shape_answer` cuts the search's text at the first stop sequence (which OpenAI leaves out),
finishes it with "stop" (a stop sequence, or the policy ended the solution) or "length", grades it
against `search.reference` when one is given, and reports what the search did (its budget, the compute
units it spent and the weights that priced them; candidates and MCTS's tree only when asked for).
`usage` sums a request's searches: `completion_tokens` counts every token the policy generated (all
candidates), `reasoning_tokens` those not returned, `prompt_tokens_details.cached_tokens` the
prefix-cache hits, `scored_tokens` the PRM's (`cached_scored_tokens` its cache hits), and
`compute_units` what they all cost at the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engines.cost import CostWeights
from engines.usage import Usage
from searchers.base import SearchResult
from searchers.task_tools import task_tools
from server.protocol import (
    CompletionTokensDetails,
    FinishReason,
    PromptTokensDetails,
    SamplingFields,
    SearchOptions,
    SearchReport,
    UsageInfo,
)
from tasks.datasets import Task
from verifiers.outcome import grade


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: FinishReason
    result: SearchResult
    report: SearchReport


def shape_answer(
    body: SamplingFields, prompt_text: str, result: SearchResult, budget: int, weights: CostWeights
) -> Answer:
    options = body.search or SearchOptions()
    text, stopped = cut_at_stop(result.text, body.stop)
    report = SearchReport(
        strategy=result.strategy,
        stop_reason=result.stop_reason,
        budget=budget,
        compute_units=units_of(weights, result.usage),
        cost_weights=weights.as_dict(),
        candidates=len(result.candidates),
        score=result.score,
        knobs=result.knobs,
        correct=None if options.reference is None else grade_answer(prompt_text, text, options.reference),
        candidate_texts=[
            {"text": c.text, "scores": list(c.scores), "finished": c.finished} for c in result.candidates
        ]
        if options.return_candidates
        else None,
        tree=result.tree if options.return_tree else None,
    )
    return Answer(text, "stop" if stopped or result.best.finished else "length", result, report)


def cut_at_stop(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
    """The text up to the first stop sequence, and whether there was one."""
    stops = [stop] if isinstance(stop, str) else (stop or [])
    cuts = [text.find(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def grade_answer(prompt_text: str, completion: str, reference: str) -> bool:
    """Whether `completion` reaches `reference`, graded as the task the prompt is (Countdown or math)."""
    kind = task_tools(prompt_text).kind
    family = "countdown" if kind == "countdown" else "math"
    try:
        return grade(Task("request", prompt_text.strip() + "\n", reference, None, family), completion)
    except ValueError:
        return False


def units_of(weights: CostWeights, usage: Usage) -> float:
    """What `usage` cost in compute units, as the API reports it (rounded: the counts behind it are
    exact, their weights are not)."""
    return round(weights.units(usage), 3)


def usage(answers: Sequence[Answer], weights: CostWeights) -> UsageInfo:
    total = sum((a.result.usage for a in answers), Usage())
    returned = sum(len(a.result.best.token_ids) + a.result.best.finished for a in answers)
    return UsageInfo(
        prompt_tokens=total.prompt_tokens,
        completion_tokens=total.generated_tokens,
        total_tokens=total.prompt_tokens + total.generated_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=total.cached_prompt_tokens),
        completion_tokens_details=CompletionTokensDetails(
            reasoning_tokens=max(total.generated_tokens - returned, 0)
        ),
        scored_tokens=total.scored_tokens,
        cached_scored_tokens=total.cached_scored_tokens,
        compute_units=units_of(weights, total),
    )


def reports(answers: Sequence[Answer]) -> SearchReport | list[SearchReport]:
    """A response's `search`: one report, or one per choice."""
    return answers[0].report if len(answers) == 1 else [a.report for a in answers]
