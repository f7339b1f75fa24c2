"""A policy engine bound to one request and its budget: the only place that charges policy usage.

Contract: `MeteredPolicy(engine, budget, request_id)` offers `expand` and `rollout` like the engine,
without the request id. Each call reserves its worst case on the budget first (every prompt token
prefilled; the per-request `max_tokens` is lowered so it fits, see `Budget.clamp_generation`), runs
under the budget's deadline, then charges what the engine reported (cached prompt tokens at their own
weight). A call the budget cannot start raises `BudgetExhausted` /
`DeadlineExceeded` before anything is submitted; a call that outlives the deadline is aborted in the
engine and raises `DeadlineExceeded`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from engines.base import Generation, PolicyEngine, Sampling
from engines.budget import Budget, DeadlineExceeded
from engines.spec import PolicySpec
from engines.usage import Usage


class MeteredPolicy:
    def __init__(self, engine: PolicyEngine, budget: Budget, request_id: str) -> None:
        self.engine = engine
        self.budget = budget
        self.request_id = request_id

    @property
    def spec(self) -> PolicySpec:
        return self.engine.spec

    def split_steps(self, token_ids: Sequence[int]) -> list[tuple[int, ...]]:
        return self.engine.split_steps(token_ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.engine.decode(token_ids)

    async def expand(self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling) -> Generation:
        return await self._call(prefixes, n, sampling, until_step=True)

    async def rollout(self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling) -> Generation:
        return await self._call(prefixes, n, sampling, until_step=False)

    async def _call(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, until_step: bool
    ) -> Generation:
        requests = len(prefixes) * n
        asked = sampling.limit(self.engine.spec, until_step)
        prompt_tokens = n * sum(len(p) for p in prefixes)
        reservation = self.budget.clamp_generation(requests, asked, prompt_tokens)
        per_request = reservation.max_tokens
        if until_step:
            clamped = replace(sampling, max_step_tokens=per_request)
        else:
            clamped = replace(sampling, max_tokens=per_request)
        call = self.engine.expand if until_step else self.engine.rollout
        generation = None
        try:
            async with asyncio.timeout(self.budget.time_left()):
                generation = await call(prefixes, n, clamped, self.request_id)
        except TimeoutError:
            await self.engine.abort(self.request_id)
            raise DeadlineExceeded("the request's deadline passed during a policy call") from None
        finally:
            # An aborted call's tokens are not reported by vLLM, so only finished calls are charged.
            usage = generation.usage if generation is not None else Usage()
            self.budget.settle(reservation, usage)
        return generation
