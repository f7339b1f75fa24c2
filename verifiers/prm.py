"""The process reward model protocol: candidates in, one score per step out.

Contract: a PRM reads a candidate (the prompt and the steps so far, as the policy's token ids and as
text) in its own input format (`verifiers.prm_format`) and returns one score in [0, 1] per step: the
probability that the solution is still right after that step. `scored_length(candidate)` is exactly
how many tokens it reads for it, so a budget can be charged before the call. `prm_input_ids` builds our
own format's sequence (the prompt's ids, each step's ids closed by the step tag), shared by training,
the adapters and the transformers reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from engines.usage import Usage


@dataclass(frozen=True)
class Candidate:
    """A (possibly partial) solution to score: prompt token ids and the token ids of each step.

    `known` holds the scores of its leading steps where an earlier call gave them (a step-level search
    extending a scored trace). A PRM may reuse them instead of recomputing those steps; it must return
    the same numbers either way."""

    prompt_ids: tuple[int, ...]
    steps: tuple[tuple[int, ...], ...]
    known: tuple[float, ...] = ()
    question: str = ""  # the problem as text (the prompt, or the last user message)
    step_texts: tuple[str, ...] = ()  # each step as the policy wrote it (a PRM of another format reads these)


@dataclass(frozen=True)
class Scores:
    step_scores: list[list[float]]  # [candidate][step]
    usage: Usage


def prm_input_ids(prompt_ids: Sequence[int], steps: Sequence[Sequence[int]], step_tag_id: int) -> list[int]:
    ids = list(prompt_ids)
    for step in steps:
        ids.extend(step)
        ids.append(step_tag_id)
    return ids


def scored_length(candidate: Candidate) -> int:
    """How many tokens a PRM of our own format reads for `candidate`: its prompt, its steps and a tag
    after each."""
    return len(candidate.prompt_ids) + sum(len(step) + 1 for step in candidate.steps)


class StepVerifier(Protocol):
    """What searchers need from a PRM."""

    max_model_len: int  # the longest input it reads (`scored_length`)

    def scored_length(self, candidate: Candidate) -> int:
        """The tokens this PRM reads for `candidate`, in its own format."""

    async def score(self, candidates: Sequence[Candidate], request_id: str) -> Scores: ...

    async def abort(self, request_id: str) -> None: ...

    @property
    def is_healthy(self) -> bool:
        """False once the PRM cannot serve: an in-process engine died, or no remote replica answers."""

    async def probe(self) -> dict[str, bool]:
        """Check health now: a remote PRM asks each replica (url -> up) and updates `is_healthy`;
        an in-process one knows its health without asking and returns {}."""
