"""The PRM served by vLLM's pooling runner (`AsyncLLM.encode`), reusing cached prefixes.

Contract: `VLLMPRM.score` sends every candidate as one pooling request (all at once, so they batch) and
returns P(good) at each step tag. vLLM's `from_2_way_softmax` returns 1 - P(first token), so the
verdict tokens are passed as [bad, good]; tests check this against the transformers reference.

Prefix reuse: vLLM turns prefix caching off for STEP pooling, so the engine runs ALL pooling with
prefix caching on and reads the cache (`skip_reading_prefix_cache=False`; token pooling skips it by
default). vLLM then returns one P(good) per token it computed, the tail after the cached blocks, and
this adapter picks the step tags out of it. A tag inside a cached block has no output: its score is
the candidate's `known` one (a search extending a scored trace); where none is known (another
sequence cached the same prefix), the candidate is scored again without reading the cache, and a
candidate with no known scores does not read it at all. Scores are the same either way; usage counts
every token read, with the cached ones split out (as vLLM computed them: the tokens it returned a
value for), and `served` sums it over every call the engine finished.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from engines.base import gather_or_cancel, validate_prefixes
from engines.cpu_binding import cpu_binding
from engines.inflight import InflightRequests
from engines.spec import PRMSpec
from engines.usage import Usage
from engines.vllm_engine import VLLMConfig, load_tokenizer, shutdown_engine
from engines.vllm_serve import prm_pooling
from verifiers.prm import Candidate, Scores
from verifiers.prm_format import PRMFormat, prm_format, tag_positions

log = logging.getLogger("ponder.prm")


class VLLMPRM:
    def __init__(self, engine: Any, format: PRMFormat) -> None:
        self.engine = engine
        self.format = format
        self.max_model_len: int = engine.model_config.max_model_len
        self.vocab_size: int = engine.model_config.get_vocab_size()
        self.inflight = InflightRequests("prm")
        self.served = Usage()  # every finished call's tokens, as vLLM computed them

    @classmethod
    def start(cls, config: VLLMConfig, spec: PRMSpec) -> VLLMPRM:
        from vllm.config import PoolerConfig
        from vllm.v1.engine.async_llm import AsyncLLM

        tokenizer = load_tokenizer(config.model)
        pooling = prm_pooling(tokenizer, spec)
        every_token = {"task": "token_classify", "tok_pooling_type": "ALL"}  # step tags picked here
        args = config.engine_args(
            runner="pooling",
            **({} if pooling.convert is None else {"convert": pooling.convert}),
            **({} if pooling.hf_overrides is None else {"hf_overrides": pooling.hf_overrides}),
            pooler_config=PoolerConfig(**every_token),
        )
        args.enable_prefix_caching = True
        log.info("starting vLLM PRM engine on %s (cores %s)", config.model, config.cpu_cores or "auto")
        with cpu_binding(config.cpu_cores):
            engine = AsyncLLM.from_engine_args(args)
        return cls(engine, prm_format(spec, tokenizer))

    def scored_length(self, candidate: Candidate) -> int:
        return len(self.format.render(candidate))

    def shutdown(self) -> None:
        shutdown_engine(self.engine)

    @property
    def is_healthy(self) -> bool:
        return not self.engine.errored

    async def probe(self) -> dict[str, bool]:
        return {}  # in-process: `is_healthy` is always current, there is no replica to ask

    async def score(self, candidates: Sequence[Candidate], request_id: str) -> Scores:
        inputs = [self.format.render(c) for c in candidates]
        # A pooled prompt may fill the whole context: nothing is generated after it.
        validate_prefixes(inputs, self.max_model_len + 1, self.vocab_size)
        rows = await gather_or_cancel(
            [self._scored(ids, c, request_id) for ids, c in zip(inputs, candidates, strict=True)]
        )
        usage = Usage(
            scored_tokens=sum(len(ids) for ids in inputs),
            cached_scored_tokens=sum(cached for _, cached in rows),
            verifier_calls=len(inputs),
        )
        self.served += usage
        return Scores([scores for scores, _ in rows], usage)

    async def _scored(self, ids: list[int], candidate: Candidate, group: str) -> tuple[list[float], int]:
        """The step scores of one input and how many of its tokens came from the prefix cache. Only a
        candidate extending scored steps reads the cache: a fresh one (a Best-of-N sample) that hit
        a duplicate's blocks would have to be scored twice."""
        tags = tag_positions(self.format, ids, len(candidate.steps))
        computed = await self._computed(ids, group, read_cache=len(candidate.known) > 0)
        scores = self.tag_scores(tags, len(ids), computed, candidate.known)
        if scores is None:  # a tag in a block another sequence cached, with no score to reuse
            computed = await self._computed(ids, group, read_cache=False)
            scores = self.tag_scores(tags, len(ids), computed, ())
        assert scores is not None
        return scores, len(ids) - len(computed)

    async def _computed(self, ids: list[int], group: str, read_cache: bool) -> list[float]:
        """P(good) at every token vLLM computed: the tail of `ids` after its cached blocks."""
        output = await self._request(ids, group, read_cache)
        rows = output.outputs.data.reshape(len(output.outputs.data), -1)  # [tokens, values per token]
        return [float(v) for v in rows[:, self.format.good_column].tolist()]

    @staticmethod
    def tag_scores(
        tags: Sequence[int], length: int, computed: Sequence[float], known: Sequence[float]
    ) -> list[float] | None:
        """P(good) at each step tag (`tags`: positions in an input of `length` tokens): from the computed
        tail (the last len(computed) tokens), or the known score for a tag in the cached head; None when
        a cached tag has no known score."""
        head = length - len(computed)
        scores: list[float] = []
        for position in tags:
            if position >= head:
                scores.append(float(computed[position - head]))
            elif len(scores) < len(known):
                scores.append(float(known[len(scores)]))
            else:
                return None
        return scores

    async def abort(self, request_id: str) -> None:
        ids = self.inflight.take(request_id)
        if ids:
            await self.engine.abort(ids)

    async def _request(self, ids: list[int], group: str, read_cache: bool) -> Any:
        from vllm import PoolingParams, TokensPrompt

        params = PoolingParams(task="token_classify", skip_reading_prefix_cache=not read_cache)
        final = None
        with self.inflight.track(group) as request_id:
            async for output in self.engine.encode(TokensPrompt(prompt_token_ids=ids), params, request_id):
                final = output
        assert final is not None, "vLLM returned no pooling output"
        return final
