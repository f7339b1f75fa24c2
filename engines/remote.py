"""`PolicyEngine` on remote vLLM OpenAI-compatible servers (`POST /v1/completions`), for scaling out.

Contract: `RemotePolicyEngine.connect(urls, model)` loads the policy's tokenizer from the local model
directory (encode, decode and chat rendering stay local, as in `VLLMPolicyEngine`) and sends
generation to the replicas at `urls`, started with `engines.vllm_serve.serve_command` (same engine
settings as in-process, plus `--enable-prompt-tokens-details`). It returns what `VLLMPolicyEngine`
returns for the same call: each prefix is one completion request with token-id prompt and `n` samples
whose seed is the in-process seed of its first sample (vLLM seeds sample j with seed + j, so every
sample equals the in-process one), usage counted per sample like in-process (the prefix-cache hit from
`usage.prompt_tokens_details.cached_tokens`, which vLLM reports for one of the n samples; they are
scheduled together and see the same hit). `request_per_sample=True` sends one request per sample
instead, like `VLLMPolicyEngine`, for exact per-sample cache hits at a much higher HTTP cost. Token
ids come back with `return_token_ids`; the cumulative log-probability is the sum of the sampled
tokens' log-probabilities (`logprobs=0`), as vLLM computes it. Every call of one search goes to the
same replica (prefix affinity); a failing replica is skipped (see `engines.replicas`).
`abort(request_id)` cancels that search's HTTP calls (vLLM aborts a request whose client
disconnects); samples cut that way come back with `finish="abort"`, as in-process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engines.base import Continuation, Generation, Sampling, gather_or_cancel, validate_prefixes
from engines.remote_http import RemoteClient
from engines.spec import PolicySpec
from engines.usage import Usage
from engines.vllm_engine import PolicyText, load_tokenizer, sample_seed

log = logging.getLogger("ponder.engine")


def model_max_len(model: str | Path) -> int:
    """vLLM's default context when `--max-model-len` is not given: the config's max_position_embeddings."""
    config = json.loads((Path(model) / "config.json").read_text())
    return int(config["max_position_embeddings"])


class RemotePolicyEngine(PolicyText):
    def __init__(
        self,
        client: RemoteClient,
        tokenizer: Any,
        max_model_len: int,
        spec: PolicySpec,
        request_per_sample: bool = False,
    ) -> None:
        super().__init__(tokenizer, spec)
        self.remote = client
        self.max_model_len = max_model_len
        # False: one HTTP request per prefix with n samples (~2.4x the throughput of one per sample on
        # 2 CPU cores); True: one per sample, like VLLMPolicyEngine, for exact per-sample cache hits.
        self.request_per_sample = request_per_sample

    @classmethod
    def connect(
        cls,
        urls: Sequence[str],
        model: str | Path,
        spec: PolicySpec,
        max_model_len: int | None = None,
        cool_off_s: float = 10.0,
        request_per_sample: bool = False,
    ) -> RemotePolicyEngine:
        """`model`: the local copy of the served policy (for its tokenizer and, unless given, context)."""
        log.info("remote policy engine on %s", ", ".join(urls))
        return cls(
            RemoteClient(urls, cool_off_s),
            load_tokenizer(model),
            max_model_len if max_model_len is not None else model_max_len(model),
            spec,
            request_per_sample=request_per_sample,
        )

    @property
    def is_healthy(self) -> bool:
        return self.remote.healthy

    async def probe(self) -> dict[str, bool]:
        return await self.remote.probe()

    async def aclose(self) -> None:
        await self.remote.aclose()

    async def expand(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        return await self._generate(prefixes, n, sampling, request_id, until_step=True)

    async def rollout(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        return await self._generate(prefixes, n, sampling, request_id, until_step=False)

    async def abort(self, request_id: str) -> None:
        tasks = self.remote.cancel(request_id)
        # Wait for the cancelled calls to close their connections, so the servers see the abort now.
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _generate(
        self,
        prefixes: Sequence[Sequence[int]],
        n: int,
        sampling: Sampling,
        request_id: str,
        until_step: bool,
    ) -> Generation:
        if sampling.temperature == 0 and n > 1:
            raise ValueError("greedy decoding (temperature 0) gives one sample per prefix; ask for n=1")
        validate_prefixes(prefixes, self.max_model_len, self.vocab_size)
        # (prefix, first sample index, samples) per HTTP request. vLLM seeds sample j of an n-request
        # with seed + j, so a prefix's n samples in one request draw exactly the in-process samples.
        per_request = 1 if self.request_per_sample else n
        chunks = [
            (index, index * n + first, per_request)
            for index in range(len(prefixes))
            for first in range(0, n, per_request)
        ]
        calls = [
            self.remote.track(
                request_id,
                self._request(
                    prefixes[index],
                    self._body(prefixes[index], sampling, first, count, until_step),
                    count,
                    request_id,
                ),
            )
            for index, first, count in chunks
        ]
        replies = await gather_or_cancel(calls)
        usage = Usage()
        continuations: list[list[Continuation]] = [[] for _ in prefixes]
        for (index, _, _), (samples, reply_usage) in zip(chunks, replies, strict=True):
            continuations[index].extend(samples)
            usage += reply_usage
        return Generation(continuations, usage)

    def _body(
        self, prefix: Sequence[int], sampling: Sampling, index: int, count: int, until_step: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": list(prefix),
            "n": count,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.limit(self.spec, until_step),
            **(self.steps.stop_kwargs() if until_step else {}),
            "skip_special_tokens": True,
            "return_token_ids": True,
        }
        seed = sample_seed(sampling.seed, index)
        if seed is not None:
            body["seed"] = seed
        if sampling.logprobs:
            body["logprobs"] = 0  # the sampled token's log-probability only, as in-process
        return body

    async def _request(
        self, prefix: Sequence[int], body: dict[str, Any], count: int, request_id: str
    ) -> tuple[list[Continuation], Usage]:
        try:
            reply = await self.remote.post(request_id, "/v1/completions", body)
        except asyncio.CancelledError:
            if not self.remote.cancelled_by_group():
                raise
            # Aborted: in-process vLLM ends such samples with finish "abort"; their tokens are lost here.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            aborted = [self.continuation((), "abort", None, None)] * count
            return aborted, Usage(prompt_tokens=count * len(prefix), policy_calls=count)
        samples: list[Continuation] = []
        generated = 0
        for choice in sorted(reply["choices"], key=lambda c: c["index"]):
            token_ids = choice["token_ids"] or []
            generated += len(token_ids)
            logprob = None
            token_logprobs = None
            if choice.get("logprobs") is not None:
                # vLLM's cumulative log-probability is this same sum, in this order, in Python floats.
                token_logprobs = choice["logprobs"]["token_logprobs"]
                logprob = 0.0
                for value in token_logprobs:
                    logprob += value
            samples.append(
                self.continuation(
                    token_ids, choice["finish_reason"], choice["stop_reason"], logprob, token_logprobs
                )
            )
        details = (reply.get("usage") or {}).get("prompt_tokens_details") or {}
        # Per sample, as in-process. vLLM reports one sample's cache hit for an n-request; its samples are
        # scheduled together, so each sees the same hit (exact with request_per_sample).
        usage = Usage(
            prompt_tokens=count * len(prefix),
            cached_prompt_tokens=count * int(details.get("cached_tokens") or 0),
            generated_tokens=generated,
            policy_calls=count,
        )
        return samples, usage
