"""Engine start-up, in one place: the policy engine and the PRM verifier a server (or a benchmark) uses.

Contract: `Engines.start(settings)` starts what `EngineSettings` describes: each of the policy and the PRM
in-process on vLLM (`AsyncLLM`; on the CPU backend, on separate cores), or as a client of remote vLLM
replicas where URLs are given. Both read their model's spec (`engines.spec`) with the settings'
overrides, and each in-process engine gets its own KV-cache size. `shutdown()` stops what was started
(remote replicas are not ours to stop). `ponder serve`, `ponder eval` and `ponder bench` all start their
engines here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from engines.base import PolicyEngine
from engines.cost import CostWeights
from engines.cpu_binding import engine_cores, on_cpu_backend
from engines.remote import RemotePolicyEngine
from engines.spec import SpecError
from engines.steps import StepBoundary
from engines.vllm_engine import VLLMConfig, VLLMPolicyEngine, load_tokenizer
from server.settings import EngineSettings
from verifiers.prm import StepVerifier
from verifiers.prm_format import prm_format
from verifiers.remote_prm import RemotePRM
from verifiers.vllm_prm import VLLMPRM

GPU_SHARES = {"policy": 0.55, "prm": 0.35}  # of one GPU's memory, when the two engines share it


@dataclass
class Engines:
    """The started policy engine and PRM verifier, and how to stop the in-process ones."""

    policy: PolicyEngine
    prm: StepVerifier
    stops: list[Callable[[], None]] = field(default_factory=list)
    weights: CostWeights = field(default_factory=CostWeights)  # what their tokens cost (`engines.cost`)

    @classmethod
    def start(cls, settings: EngineSettings) -> Engines:
        check_specs(settings)  # a wrong setting fails in a second, not after an engine's start-up
        both_local = not settings.policy_url and not settings.prm_url
        policy_cores, prm_cores = engine_cores() if both_local else (None, None)
        stops: list[Callable[[], None]] = []
        try:
            policy = start_policy(settings, policy_cores, stops)
            prm = start_prm(settings, prm_cores, stops)
        except BaseException:
            stop_all(stops)  # what did start
            raise
        return cls(policy, prm, stops, settings.weights())

    def shutdown(self) -> None:
        stop_all(self.stops)


def stop_all(stops: list[Callable[[], None]]) -> None:
    for stop in reversed(stops):
        stop()
    stops.clear()


def check_specs(settings: EngineSettings) -> None:
    """Both specs, read and checked against their tokenizers (SpecError names what is wrong)."""
    policy_tokenizer = load_tokenizer(settings.policy_dir)
    prm_tokenizer = load_tokenizer(settings.prm_dir)
    StepBoundary(policy_tokenizer, settings.policy_spec().step_delimiter)
    format = prm_format(settings.prm_spec(), prm_tokenizer)
    if format.reads_policy_ids and policy_tokenizer.get_vocab() != prm_tokenizer.get_vocab():
        raise SpecError(
            f"a {format.spec.format}-format PRM reads the policy's token ids, but {settings.prm_dir} has "
            f"another vocabulary than {settings.policy_dir}; name the PRM's format (--prm-format)"
        )


def start_policy(
    settings: EngineSettings, cores: str | None, stops: list[Callable[[], None]]
) -> PolicyEngine:
    spec = settings.policy_spec()
    if settings.policy_url:
        return RemotePolicyEngine.connect(
            settings.policy_url, settings.policy_dir, spec, cool_off_s=settings.replica_cool_off
        )
    policy = VLLMPolicyEngine.start(sharing_one_gpu(settings, "policy", cores), spec)
    stops.append(policy.shutdown)
    return policy


def start_prm(settings: EngineSettings, cores: str | None, stops: list[Callable[[], None]]) -> StepVerifier:
    spec = settings.prm_spec()
    if settings.prm_url:
        return RemotePRM.connect(
            settings.prm_url, settings.prm_dir, spec, cool_off_s=settings.replica_cool_off
        )
    prm = VLLMPRM.start(sharing_one_gpu(settings, "prm", cores), spec)
    stops.append(prm.shutdown)
    return prm


def sharing_one_gpu(
    settings: EngineSettings, role: Literal["policy", "prm"], cores: str | None
) -> VLLMConfig:
    """The engine's config; where both engines run in-process on GPUs, each takes its share of memory
    (vLLM's default 0.9 each would leave the second engine none)."""
    config = settings.vllm_config(role, cores)
    both_local = not settings.policy_url and not settings.prm_url
    if config.gpu_memory_utilization is None and both_local and not on_cpu_backend():
        config = replace(config, gpu_memory_utilization=GPU_SHARES[role])
    return config
