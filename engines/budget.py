"""The per-request compute budget: one meaning of "budget" for every strategy.

Contract:
- A request's budget is a number of **tokens the models compute for it**: policy tokens generated plus
  PRM tokens scored. Prompt tokens sent to the policy are counted too, split into prefilled and cached
  (prefix-cache hits cost little); they are reported, and capped only by the optional
  `max_prefill_tokens`. Optional caps on PRM calls and a wall-clock deadline complete it.
- Only the metered adapters (`engines.metered`) charge it, with the usage the engines report. Before
  each call they reserve its worst case: a generation call gets a per-request `max_tokens` small enough
  that the worst case fits (`clamp_generation`), a scoring call is refused unless its exact token count
  fits (`reserve`). So `spent` never exceeds the limits, whatever the searcher asks for.
- When a call cannot be made at all the adapter raises `BudgetExhausted` (or `DeadlineExceeded`); a
  searcher catches `SearchStopped`, and returns its best answer so far with `stop_reason` set.
- Searchers only read it (`remaining`, `can_afford`) to size their rounds, and may set part of what is
  left aside (`hold`): held tokens are not in `remaining`, so neither the searcher's planning nor the
  adapters' clamps can spend them until the hold is released. A hold never adds to the budget: it
  takes at most what is left, and releasing it gives back only what it took.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from engines.usage import Usage

StopReason = Literal["done", "budget", "deadline"]


class SearchStopped(Exception):
    """A call the budget or the deadline does not allow; the search ends with `reason`."""

    reason: StopReason = "budget"


class BudgetExhausted(SearchStopped):
    reason: StopReason = "budget"


class DeadlineExceeded(SearchStopped):
    reason: StopReason = "deadline"


@dataclass
class Budget:
    tokens: int  # cap on generated + scored tokens
    max_prefill_tokens: int | None = None  # cap on prompt tokens prefilled (reserved as if none cached)
    max_verifier_calls: int | None = None  # cap on PRM requests (one per scored sequence)
    deadline: float | None = None  # time.monotonic() value after which no call starts
    spent: Usage = field(default_factory=Usage)
    _reserved_tokens: int = 0
    _reserved_prefill: int = 0
    _reserved_calls: int = 0
    _held_tokens: int = 0

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ValueError(f"a budget needs at least 1 token, got {self.tokens}")

    @classmethod
    def with_timeout(
        cls,
        tokens: int,
        timeout_s: float | None = None,
        max_verifier_calls: int | None = None,
        max_prefill_tokens: int | None = None,
    ) -> Budget:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return cls(tokens, max_prefill_tokens, max_verifier_calls, deadline)

    # --- what searchers read --------------------------------------------------------------------
    @property
    def used(self) -> int:
        return self.spent.generated_tokens + self.spent.scored_tokens

    @property
    def remaining(self) -> int:
        return self.tokens - self.used - self._reserved_tokens - self._held_tokens

    def can_afford(self, tokens: float) -> bool:
        return tokens <= self.remaining

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def utilisation(self) -> float:
        return self.used / self.tokens

    def hold(self, tokens: int) -> Hold:
        """Set aside up to `tokens` of what is left, until the hold is released (at the end of its `with`
        block, or earlier by `release`)."""
        return Hold(self, tokens)

    # --- what the adapters do -------------------------------------------------------------------
    def check_deadline(self) -> None:
        left = self.time_left()
        if left is not None and left <= 0:
            raise DeadlineExceeded("the request's deadline has passed")

    def clamp_generation(self, requests: int, max_tokens: int, prompt_tokens: int) -> int:
        """The per-request `max_tokens` (≤ the one asked for) whose worst case fits, reserved until
        `settle`. Raises when not even one token per request fits."""
        self.check_deadline()
        per_request = min(max_tokens, self.remaining // max(requests, 1))
        if per_request < 1:
            raise BudgetExhausted(f"{self.remaining} tokens left, {requests} requests asked for")
        self._reserve_prefill(prompt_tokens)
        self._reserved_tokens += per_request * requests
        return per_request

    def reserve(self, tokens: int, calls: int) -> None:
        """Reserve an exactly known scoring call, or refuse it whole."""
        self.check_deadline()
        if tokens > self.remaining:
            raise BudgetExhausted(f"scoring needs {tokens} tokens, {self.remaining} left")
        cap = self.max_verifier_calls
        if cap is not None and self.spent.verifier_calls + self._reserved_calls + calls > cap:
            raise BudgetExhausted(f"the cap of {self.max_verifier_calls} verifier calls is reached")
        self._reserved_tokens += tokens
        self._reserved_calls += calls

    def settle(self, reserved_tokens: int, reserved_prefill: int, reserved_calls: int, usage: Usage) -> None:
        """Release a call's reservation and charge what the engine reported instead."""
        self._reserved_tokens -= reserved_tokens
        self._reserved_prefill -= reserved_prefill
        self._reserved_calls -= reserved_calls
        self.spent = self.spent + usage

    def _reserve_prefill(self, prompt_tokens: int) -> None:
        if self.max_prefill_tokens is None:
            return
        left = self.max_prefill_tokens - self.spent.prefilled_prompt_tokens - self._reserved_prefill
        if prompt_tokens > left:
            raise BudgetExhausted(f"prefilling {prompt_tokens} prompt tokens passes the cap ({left} left)")
        self._reserved_prefill += prompt_tokens


class Hold:
    """Tokens of a budget set aside for later (e.g. a search's fallback answer), a context manager."""

    def __init__(self, budget: Budget, tokens: int) -> None:
        self.budget = budget
        self.tokens = max(0, min(tokens, budget.remaining))  # never more than is left
        budget._held_tokens += self.tokens

    def release(self) -> None:
        """Give the held tokens back to `remaining` (again: a no-op)."""
        self.budget._held_tokens -= self.tokens
        self.tokens = 0

    def __enter__(self) -> Hold:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
