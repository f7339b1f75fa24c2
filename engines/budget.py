"""The per-request compute budget: one meaning of "budget" for every strategy.

Contract:
- A request's budget is a number of **compute units**: generated-token equivalents (`engines.cost`).
  Every kind of token the models compute for it is charged at its weight relative to one generated
  token: generated, prompt tokens prefilled, prompt tokens served from the prefix cache, PRM tokens
  computed and PRM tokens served from its cache. `used` and `remaining` are in units; the raw counts
  stay in `spent` (a `Usage`). Optional caps on prefilled prompt tokens (`max_prefill_tokens`), on PRM
  calls and a wall-clock deadline complete it.
- Only the metered adapters (`engines.metered`, `verifiers.metered`) charge it, with the usage the
  engines report. Before each call they reserve its worst case, priced as if no prompt or PRM token were
  cached: a generation call gets a per-request `max_tokens` small enough that the worst case fits
  (`clamp_generation`), a scoring call is refused unless its exact token count fits (`reserve`). Then
  `settle` releases the reservation and charges the real split (cached or not) the engine reported. So
  `used` never exceeds the budget, whatever the searcher asks for and whatever the weights.
- When a call cannot be made at all the adapter raises `BudgetExhausted` (or `DeadlineExceeded`); a
  searcher catches `SearchStopped`, and returns its best answer so far with `stop_reason` set.
- Searchers only read it (`remaining`, `can_afford`, `weights`) to size their rounds, and may set part of
  what is left aside (`hold`): held units are not in `remaining`, so neither the searcher's planning nor
  the adapters' clamps can spend them until the hold is released. A hold never adds to the budget: it
  takes at most what is left, and releasing it gives back only what it took.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

from engines.cost import CostWeights
from engines.usage import Usage

StopReason = Literal["done", "budget", "deadline"]


class SearchStopped(Exception):
    """A call the budget or the deadline does not allow; the search ends with `reason`."""

    reason: StopReason = "budget"


class BudgetExhausted(SearchStopped):
    reason: StopReason = "budget"


class DeadlineExceeded(SearchStopped):
    reason: StopReason = "deadline"


@dataclass(frozen=True)
class Reservation:
    """What a call may spend at most, held on the budget until the call is settled. Raw token counts, so
    that holding and releasing are exact (units are priced from them)."""

    generated: int = 0  # tokens a generation call may sample (its per-request max_tokens x requests)
    prompt: int = 0  # prompt tokens it sends, reserved as if none were cached
    scored: int = 0  # tokens a scoring call makes the PRM read, as if none were cached
    calls: int = 0  # PRM requests
    max_tokens: int = 0  # a generation call's per-request max_tokens

    def __add__(self, other: Reservation) -> Reservation:
        return Reservation(
            self.generated + other.generated,
            self.prompt + other.prompt,
            self.scored + other.scored,
            self.calls + other.calls,
        )

    def __sub__(self, other: Reservation) -> Reservation:
        return Reservation(
            self.generated - other.generated,
            self.prompt - other.prompt,
            self.scored - other.scored,
            self.calls - other.calls,
        )

    def units(self, weights: CostWeights) -> float:
        return weights.for_generation(self.generated, self.prompt) + weights.for_scoring(self.scored)


@dataclass
class Budget:
    limit: float  # compute units
    max_prefill_tokens: int | None = None  # cap on prompt tokens prefilled (reserved as if none cached)
    max_verifier_calls: int | None = None  # cap on PRM requests (one per scored sequence)
    deadline: float | None = None  # time.monotonic() value after which no call starts
    weights: CostWeights = field(default_factory=CostWeights)
    spent: Usage = field(default_factory=Usage)
    _held: Reservation = field(default_factory=Reservation)
    _set_aside: float = 0.0  # units under a searcher's `hold`

    def __post_init__(self) -> None:
        if not self.limit >= 1:
            raise ValueError(f"a budget needs at least 1 compute unit, got {self.limit}")

    @classmethod
    def with_timeout(
        cls,
        limit: float,
        timeout_s: float | None = None,
        max_verifier_calls: int | None = None,
        max_prefill_tokens: int | None = None,
        weights: CostWeights | None = None,
    ) -> Budget:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return cls(limit, max_prefill_tokens, max_verifier_calls, deadline, weights or CostWeights())

    # --- what searchers read --------------------------------------------------------------------
    @property
    def used(self) -> float:
        """Units charged so far."""
        return self.weights.units(self.spent)

    @property
    def remaining(self) -> float:
        """Units neither charged, nor held by a call in flight, nor set aside by a searcher's `hold`."""
        return self.limit - self.used - self._held.units(self.weights) - self._set_aside

    def can_afford(self, units: float) -> bool:
        return units <= self.remaining

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def utilisation(self) -> float:
        return self.used / self.limit

    def hold(self, units: float) -> Hold:
        """Set aside up to `units` of what is left, until the hold is released (at the end of its `with`
        block, or earlier by `release`)."""
        return Hold(self, units)

    # --- what the adapters do -------------------------------------------------------------------
    def check_deadline(self) -> None:
        left = self.time_left()
        if left is not None and left <= 0:
            raise DeadlineExceeded("the request's deadline has passed")

    def clamp_generation(self, requests: int, max_tokens: int, prompt_tokens: int) -> Reservation:
        """Hold the worst case of a generation call: every prompt token prefilled, and as many tokens per
        request as fit (≤ `max_tokens`, the one asked for: the reservation's `max_tokens`). Raises when not
        even one token per request fits."""
        self.check_deadline()
        count = max(requests, 1)
        left = self.remaining - self.weights.for_generation(0, prompt_tokens)
        per_request = min(max_tokens, max(math.floor(left / count), 0))
        while per_request >= 1 and not self._fits(Reservation(per_request * count, prompt_tokens)):
            per_request -= 1  # a float rounding at the edge: never hold more than is left
        if per_request < 1:
            raise BudgetExhausted(
                f"{self.remaining:.1f} units left: not one token each for {requests} requests after "
                f"their {prompt_tokens} prompt tokens"
            )
        self._check_prefill(prompt_tokens)
        reservation = Reservation(per_request * requests, prompt_tokens, max_tokens=per_request)
        self._held = self._held + reservation
        return reservation

    def reserve(self, tokens: int, calls: int) -> Reservation:
        """Hold an exactly known scoring call (every token read as if none were cached), or refuse it."""
        self.check_deadline()
        reservation = Reservation(scored=tokens, calls=calls)
        if not self._fits(reservation):
            needed = self.weights.for_scoring(tokens)
            raise BudgetExhausted(f"scoring needs {needed:.1f} units, {self.remaining:.1f} left")
        cap = self.max_verifier_calls
        if cap is not None and self.spent.verifier_calls + self._held.calls + calls > cap:
            raise BudgetExhausted(f"the cap of {self.max_verifier_calls} verifier calls is reached")
        self._held = self._held + reservation
        return reservation

    def settle(self, reservation: Reservation, usage: Usage) -> None:
        """Release a call's reservation and charge what the engine reported instead."""
        self._held = self._held - reservation
        self.spent = self.spent + usage

    def _fits(self, reservation: Reservation) -> bool:
        return self.used + (self._held + reservation).units(self.weights) + self._set_aside <= self.limit

    def _check_prefill(self, prompt_tokens: int) -> None:
        if self.max_prefill_tokens is None:
            return
        left = self.max_prefill_tokens - self.spent.prefilled_prompt_tokens - self._held.prompt
        if prompt_tokens > left:
            raise BudgetExhausted(f"prefilling {prompt_tokens} prompt tokens passes the cap ({left} left)")


class Hold:
    """Units of a budget set aside for later (e.g. a search's fallback answer), a context manager."""

    def __init__(self, budget: Budget, units: float) -> None:
        self.budget = budget
        self.units = max(0.0, min(units, budget.remaining))  # never more than is left
        budget._set_aside += self.units

    def release(self) -> None:
        """Give the held units back to `remaining` (again: a no-op)."""
        self.budget._set_aside -= self.units
        self.units = 0.0

    def __enter__(self) -> Hold:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
