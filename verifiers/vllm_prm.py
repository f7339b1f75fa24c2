"""The PRM served by vLLM's pooling runner with STEP pooling (`AsyncLLM.encode`).

Contract: `VLLMPRM.score` sends every candidate as one pooling request (all at once, so they batch) and
returns P(good) at each step tag. vLLM's `from_2_way_softmax` returns 1 - P(first token), so the
verdict tokens are passed as [bad, good]; tests check this against the transformers reference.
Prefix caching stays off for the PRM: STEP pooling needs the hidden state of every step tag, and
cached prefix tokens have none.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from engines.base import gather_or_cancel, validate_prefixes
from engines.cpu_binding import cpu_binding
from engines.inflight import InflightRequests
from engines.usage import Usage
from engines.vllm_engine import VLLMConfig, shutdown_engine
from engines.vllm_serve import prm_pooling
from verifiers.prm import Candidate, Scores, prm_input_ids

log = logging.getLogger("ponder.prm")


class VLLMPRM:
    def __init__(self, engine: Any, step_tag_id: int) -> None:
        self.engine = engine
        self.step_tag_id = step_tag_id
        self.max_model_len: int = engine.model_config.max_model_len
        self.vocab_size: int = engine.model_config.get_vocab_size()
        self.inflight = InflightRequests("prm")

    @classmethod
    def start(cls, config: VLLMConfig) -> VLLMPRM:
        from vllm.config import PoolerConfig
        from vllm.v1.engine.async_llm import AsyncLLM

        pooling = prm_pooling(config.model)
        args = config.engine_args(
            runner="pooling",
            convert="classify",
            hf_overrides=pooling.hf_overrides,
            pooler_config=PoolerConfig(**pooling.pooler_config),
        )
        args.enable_prefix_caching = False
        log.info("starting vLLM PRM engine on %s (cores %s)", config.model, config.cpu_cores or "auto")
        with cpu_binding(config.cpu_cores):
            engine = AsyncLLM.from_engine_args(args)
        return cls(engine, pooling.step_tag_id)

    def shutdown(self) -> None:
        shutdown_engine(self.engine)

    @property
    def is_healthy(self) -> bool:
        return not self.engine.errored

    async def score(self, candidates: Sequence[Candidate], request_id: str) -> Scores:
        inputs = [prm_input_ids(c.prompt_ids, c.steps, self.step_tag_id) for c in candidates]
        # A pooled prompt may fill the whole context: nothing is generated after it.
        validate_prefixes(inputs, self.max_model_len + 1, self.vocab_size)
        outputs = await gather_or_cancel([self._request(ids, request_id) for ids in inputs])
        scores = [[float(v) for v in output.outputs.data.flatten().tolist()] for output in outputs]
        usage = Usage(scored_tokens=sum(len(ids) for ids in inputs), verifier_calls=len(inputs))
        return Scores(scores, usage)

    async def abort(self, request_id: str) -> None:
        ids = self.inflight.take(request_id)
        if ids:
            await self.engine.abort(ids)

    async def _request(self, ids: list[int], group: str) -> Any:
        from vllm import PoolingParams, TokensPrompt

        params = PoolingParams(task="token_classify", step_tag_id=self.step_tag_id)
        final = None
        with self.inflight.track(group) as request_id:
            async for output in self.engine.encode(TokensPrompt(prompt_token_ids=ids), params, request_id):
                final = output
        assert final is not None, "vLLM returned no pooling output"
        return final
