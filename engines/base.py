"""The policy engine protocol and the values it returns.

Contract: `expand` samples `n` continuations of each prefix, each ending at the step delimiter (`finish`
"step"), at the end of the solution ("end"), or at the token limit ("length"); `rollout` is the same
without stopping at the delimiter. Continuations carry their token ids (so the next prefix is
`prefix + token_ids`, without re-tokenising), their text and their cumulative log-probability.
`encode` gives a prompt's ids (with the tokenizer's BOS, where it has one), `encode_continuation` the ids
of text that continues a prefix.
Both return the usage of the call. `abort(request_id)` cancels every in-flight call made under that id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from engines.spec import PolicySpec
from engines.usage import Usage

Finish = Literal["step", "end", "length", "abort"]
T = TypeVar("T")


class InvalidPrompt(ValueError):
    """A prefix the engine cannot take (empty, too long for the model, unknown token ids)."""


class EngineUnavailable(RuntimeError):
    """No replica of a remote engine could serve the call (all unreachable or failing)."""


def validate_prefixes(prefixes: Sequence[Sequence[int]], max_len: int, vocab_size: int) -> None:
    """Refuse a whole call before anything is submitted, so no request of it is left running."""
    for index, prefix in enumerate(prefixes):
        if not prefix:
            raise InvalidPrompt(f"prefix {index} is empty")
        if len(prefix) >= max_len:
            raise InvalidPrompt(f"prefix {index} has {len(prefix)} tokens; the model's context is {max_len}")
        if min(prefix) < 0 or max(prefix) >= vocab_size:
            raise InvalidPrompt(
                f"prefix {index} holds token ids outside the vocabulary (0..{vocab_size - 1})"
            )


async def gather_or_cancel(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Like asyncio.gather, but when one call fails the others are cancelled (their engine requests
    aborted) instead of running on unobserved."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


SEED_SPACE = 2**63  # vLLM's requests carry a seed as a 64-bit integer; Python's ints are unbounded


def derived_seed(seed: int, multiplier: int, index: int) -> int:
    """A seed for part `index` of something seeded with `seed` (a round, a pass, a sample), in
    [0, 2**63): a request's seed, multiplied at each level that derives one, must still fit the
    engine's 64 bits (a client's seed of 2**62 would otherwise make vLLM refuse the request)."""
    return (seed * multiplier + index) % SEED_SPACE


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    # None: the policy's spec (`PolicySpec.max_step_tokens`, `max_solution_tokens`); a request may ask for
    # less. A step or rollout longer than its limit is cut ("length").
    max_step_tokens: int | None = None
    max_tokens: int | None = None
    seed: int | None = None
    # Cumulative log-probabilities, for MCTS's priors only: off by default because they cost the engine a
    # log-softmax per token and the output processor a Python object per token.
    logprobs: bool = False

    def limit(self, spec: PolicySpec, until_step: bool) -> int:
        """The token limit of one step (`until_step`) or one whole rollout, the spec's unless set."""
        if until_step:
            return self.max_step_tokens or spec.max_step_tokens
        return self.max_tokens or spec.max_solution_tokens


@dataclass(frozen=True)
class Continuation:
    token_ids: tuple[int, ...]  # excludes the end-of-sequence token, includes the step delimiter
    text: str
    finish: Finish
    logprob: float
    # With `Sampling.logprobs`: the log-probability of each step in `token_ids` (cut after every step
    # delimiter), so a searcher can take a rollout's first step as a child with its own prior.
    step_logprobs: tuple[float, ...] = ()


@dataclass(frozen=True)
class Generation:
    continuations: list[list[Continuation]]  # [prefix][sample]
    usage: Usage


class PolicyEngine(Protocol):
    """What searchers need from a policy model."""

    spec: PolicySpec  # what the model's checkpoint says about its steps, limits and prompts
    eos_token_id: int
    max_model_len: int  # the context: a prefix and its continuation fit in it

    def encode(self, text: str) -> list[int]: ...

    def encode_continuation(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def split_steps(self, token_ids: Sequence[int]) -> list[tuple[int, ...]]:
        """A completion's token ids cut after each step delimiter (`engines.steps`)."""

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]: ...

    async def expand(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation: ...

    async def rollout(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation: ...

    async def abort(self, request_id: str) -> None: ...

    @property
    def is_healthy(self) -> bool:
        """False once the engine cannot serve: an in-process engine died, or no remote replica answers."""

    async def probe(self) -> dict[str, bool]:
        """Check health now: a remote engine asks each replica (url -> up) and updates `is_healthy`;
        an in-process engine knows its health without asking and returns {}."""
