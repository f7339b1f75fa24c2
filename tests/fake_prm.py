"""A small deterministic PRM for unit tests of search logic (no model, no vLLM).

Contract: implements `StepVerifier` for Countdown prompts with the embedded models' tokenizer. A step's
score is high (0.7-0.95) while the prefix is legal and the target still reachable, low (0.05-0.3) otherwise,
with deterministic noise keyed on the prefix, so search has a useful but imperfect signal. Usage counts the
exact tokens a real PRM would read, summed over every call in `served`; with `prefix_cache` it reports
the vLLM PRM's cache hits too. Unparseable prompts score 0.5 everywhere.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence

from engines.usage import Usage
from tasks.countdown import SolutionCounter, parse_prompt
from training.tokenizer import build_tokenizer
from verifiers.countdown import check_step
from verifiers.prm import Candidate, Scores, prm_input_ids, scored_length

BLOCK = 32  # tokens per cached block, as the vLLM PRM's
STEP_TAG = -1  # the tag closing each step in the cached sequences (no real token needed here)


class FakePRM:
    def __init__(self, seed: int = 0, prefix_cache: bool = False) -> None:
        self.tokenizer = build_tokenizer()
        self.prefix_cache = prefix_cache
        self.cached_blocks: set[tuple[int, ...]] = set()
        self.max_model_len = 512
        self.seed = seed
        self.calls = 0
        self.served = Usage()  # every token read, counted here (the metered layer never sees it)
        self.aborted: set[str] = set()
        self.is_healthy = True  # tests set it False to play a dead PRM

    async def probe(self) -> dict[str, bool]:
        return {}  # in-process: nothing to ask

    async def score(self, candidates: Sequence[Candidate], request_id: str) -> Scores:
        self.calls += 1
        await asyncio.sleep(0)
        rows = [self._score(c) for c in candidates]
        usage = Usage(
            scored_tokens=sum(scored_length(c) for c in candidates),
            cached_scored_tokens=sum(self._cache(c) for c in candidates),
            verifier_calls=len(candidates),
        )
        self.served += usage
        return Scores(rows, usage)

    def scored_length(self, candidate: Candidate) -> int:
        return scored_length(candidate)

    async def abort(self, request_id: str) -> None:
        self.aborted.add(request_id)

    def _cache(self, candidate: Candidate) -> int:
        """With `prefix_cache`, the tokens served from 32-token cached blocks, read (as the vLLM PRM
        reads them) only for a candidate extending scored steps; every input's blocks are cached."""
        if not self.prefix_cache:
            return 0
        ids = prm_input_ids(candidate.prompt_ids, candidate.steps, STEP_TAG)
        hit = 0
        for end in range(BLOCK, len(ids) + 1, BLOCK):
            block = tuple(ids[:end])
            if candidate.known and block in self.cached_blocks:
                hit = end
            self.cached_blocks.add(block)
        return hit

    def _score(self, candidate: Candidate) -> list[float]:
        decode = self.tokenizer.decode
        problem = parse_prompt(decode(list(candidate.prompt_ids), skip_special_tokens=True).strip())
        if problem is None:
            return [0.5 for _ in candidate.steps]
        counter = SolutionCounter(problem.target)
        state: tuple[int, ...] | None = problem.numbers
        scores = []
        for k, step in enumerate(candidate.steps):
            if state is not None:
                check = check_step(state, decode(list(step), skip_special_tokens=True))
                state = check.state if check.legal and counter.count(check.state) > 0 else None
            noise = zlib.crc32(repr((self.seed, candidate.prompt_ids, candidate.steps[: k + 1])).encode())
            jitter = (noise % 1000) / 1000
            scores.append(0.7 + 0.25 * jitter if state is not None else 0.05 + 0.25 * jitter)
        return scores
