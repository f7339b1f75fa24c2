"""A small deterministic policy engine for unit tests of search and labelling logic (no model, no vLLM).

Contract: implements `PolicyEngine` with the embedded models' tokenizer and spec (step delimiter "\n"). On a
Countdown prompt it plays random legal moves, making an arithmetic slip with probability `slip`; the same
prefix, sample index and seed always give the same step. Token limits cut continuations (finish "length") as
vLLM does, EOS included. Usage is counted like the real adapter's, with a 32-token block prefix cache,
and summed over every call in `served`.
A prefix cut inside a step is continued to the end of a legal step that begins so. Unparseable prompts,
and prefixes holding an illegal step, end immediately with an empty continuation.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Sequence

from engines.base import Continuation, Finish, Generation, Sampling
from engines.spec import PolicySpec
from engines.steps import split_steps_ids
from engines.usage import Usage
from tasks.countdown import Step, moves, parse_prompt
from training.tokenizer import build_tokenizer
from verifiers.countdown import check_step, split_steps

BLOCK = 32
# the embedded policy's spec, as its training writes it
COUNTDOWN_SPEC = PolicySpec(step_delimiter="\n", max_step_tokens=48, max_solution_tokens=256)


class FakeEngine:
    def __init__(self, slip: float = 0.2, seed: int = 0) -> None:
        self.tokenizer = build_tokenizer()
        self.spec = COUNTDOWN_SPEC
        self.eos_token_id: int = self.tokenizer.eos_token_id
        self.bos_token_id: int = self.tokenizer.bos_token_id
        self.step_token_id: int = self.tokenizer.convert_tokens_to_ids(self.spec.step_delimiter)
        self.max_model_len = 512
        self.slip = slip
        self.seed = seed
        self.cached_blocks: set[tuple[int, ...]] = set()
        self.aborted: set[str] = set()
        self.calls = 0
        # every token this engine was asked for, counted here as it works: the metered layer never sees
        # it, so a test can check the budget against it (a search that bypassed the adapters shows up)
        self.served = Usage()
        self.is_healthy = True  # tests set it False to play a dead engine

    async def probe(self) -> dict[str, bool]:
        return {}  # in-process: nothing to ask

    def encode(self, text: str) -> list[int]:
        return [self.bos_token_id, *self.tokenizer.encode(text, add_special_tokens=False)]

    def encode_continuation(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def split_steps(self, token_ids: Sequence[int]) -> list[tuple[int, ...]]:
        return split_steps_ids(token_ids, self.step_token_id)

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def expand(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        return await self._generate(prefixes, n, sampling, request_id, until_step=True)

    async def rollout(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        return await self._generate(prefixes, n, sampling, request_id, until_step=False)

    async def abort(self, request_id: str) -> None:
        self.aborted.add(request_id)

    async def _generate(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str, until_step: bool
    ) -> Generation:
        self.calls += 1
        await asyncio.sleep(0)  # a real engine yields to the event loop; so does this one
        usage = Usage()
        rows = []
        for index, prefix in enumerate(prefixes):
            row = []
            for j in range(n):
                text, finish = self._continue(list(prefix), (sampling.seed, index * n + j), until_step)
                ids = tuple(self.tokenizer.encode(text, add_special_tokens=False))
                limit = sampling.limit(self.spec, until_step)
                if len(ids) + (finish == "end") > limit:  # like vLLM: max_tokens counts the EOS too
                    ids, finish = ids[:limit], "length"
                    text = self.decode(ids)
                steps = self.split_steps(ids) if sampling.logprobs else []
                row.append(
                    Continuation(ids, text, finish, -0.1 * len(ids), tuple(-0.1 * len(s) for s in steps))
                )
                usage += Usage(
                    prompt_tokens=len(prefix),
                    cached_prompt_tokens=self._cache(prefix),
                    generated_tokens=len(ids) + (finish == "end"),
                    policy_calls=1,
                )
            rows.append(row)
        self.served += usage
        return Generation(rows, usage)

    def _cache(self, prefix: Sequence[int]) -> int:
        hit = 0
        for end in range(BLOCK, len(prefix) + 1, BLOCK):
            block = tuple(prefix[:end])
            if block in self.cached_blocks:
                hit = end
            self.cached_blocks.add(block)
        return hit

    def _continue(
        self, prefix: list[int], key: tuple[int | None, int], until_step: bool
    ) -> tuple[str, Finish]:
        text = self.decode(prefix)
        head, _, body = text.partition("\n")
        problem = parse_prompt(head)
        if problem is None:
            return "", "end"
        state = problem.numbers
        whole, _, cut = body.rpartition("\n")  # a prefix cut inside a step ends in part of a line
        for line in split_steps(whole):
            check = check_step(state, line)
            if not check.legal:
                return "", "end"
            state = check.state
        out = ""
        if cut:  # finish the step it began, as a policy does, if a legal one begins so
            step = next((s for s in moves(state) if s.text().startswith(cut)), None)
            if step is None:
                return "", "end"
            out, state = step.text()[len(cut) :], step.remaining
            if until_step:
                return out, ("step" if len(state) > 1 else "end")
        while len(state) > 1:
            rng = random.Random(zlib.crc32(repr((self.seed, key, text + out)).encode()))
            step = self._move(state, rng)
            out += step.text()
            state = step.remaining
            if until_step:
                return out, ("step" if len(state) > 1 else "end")
        return out, "end"

    def _move(self, state: tuple[int, ...], rng: random.Random) -> Step:
        step = rng.choice(list(moves(state)))
        if rng.random() < self.slip:  # an arithmetic slip: the claimed result is off by one
            wrong = step.result + 1
            return Step(step.left, step.op, step.right, wrong, (*step.remaining[:-1], wrong))
        return step
