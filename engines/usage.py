"""Token usage, counted from what the engines report (never estimated).

Contract: `Usage` is an immutable sum of token counts; adding two gives the total. Prompt tokens are split
into those the engine prefilled and those it served from its prefix cache; the PRM's read tokens are
split the same way (a cached token still counts as read, in `scored_tokens`). These are raw counts;
what they cost in compute units is `engines.cost.CostWeights.units`, which prices a cache hit at its
own (small) weight.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0  # prompt tokens sent, per sample (n samples of one prefix count n times)
    cached_prompt_tokens: int = 0  # of which served from the prefix cache
    generated_tokens: int = 0  # tokens the policy sampled
    scored_tokens: int = 0  # tokens the PRM read
    cached_scored_tokens: int = 0  # of which it served from its prefix cache (no compute)
    policy_calls: int = 0  # engine requests (one per prefix per call)
    verifier_calls: int = 0  # PRM requests (one per scored sequence)

    @property
    def prefilled_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cached_prompt_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, int]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["prefilled_prompt_tokens"] = self.prefilled_prompt_tokens
        return data
