"""A PRM bound to one request and its budget: the only place that charges verifier usage.

Contract: `MeteredVerifier(verifier, budget, request_id)` scores candidates like the verifier. The exact
number of tokens the PRM will read is known before the call (its `scored_length`, in its own input
format), so the call is reserved whole (every token priced as if the PRM computed it) or refused with
`BudgetExhausted`; it runs under the budget's deadline (aborted in the engine and `DeadlineExceeded`
past it) and is charged what the verifier reported (its prefix-cache hits at their own weight).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from engines.budget import Budget, DeadlineExceeded
from engines.usage import Usage
from verifiers.prm import Candidate, Scores, StepVerifier


class MeteredVerifier:
    def __init__(self, verifier: StepVerifier, budget: Budget, request_id: str) -> None:
        self.verifier = verifier
        self.budget = budget
        self.request_id = request_id

    def readable(self, candidate: Candidate) -> bool:
        """The PRM can read the candidate whole (a pooled input may fill the context)."""
        return self.verifier.scored_length(candidate) <= self.verifier.max_model_len

    def cost(self, candidates: Sequence[Candidate]) -> int:
        return sum(self.verifier.scored_length(c) for c in candidates)

    async def score(self, candidates: Sequence[Candidate]) -> Scores:
        if not candidates:
            return Scores([], Usage())
        tokens = self.cost(candidates)
        reservation = self.budget.reserve(tokens, len(candidates))
        scores = None
        try:
            async with asyncio.timeout(self.budget.time_left()):
                scores = await self.verifier.score(candidates, self.request_id)
        except TimeoutError:
            await self.verifier.abort(self.request_id)
            raise DeadlineExceeded("the request's deadline passed during PRM scoring") from None
        finally:
            usage = scores.usage if scores is not None else Usage()
            self.budget.settle(reservation, usage)
        return scores
