"""The policy and PRM engines of one model directory, started and stopped together.

Contract: `Pair.start(models)` starts the vLLM policy engine on MODELS/policy and the vLLM PRM on
MODELS/prm (in-process `AsyncLLM`s, on separate cores on the CPU backend); `shutdown()` stops both.
Used by `ponder eval` and `ponder bench` (`ponder serve` starts its engines in
`server.main.start_engines`, remote ones included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engines.cpu_binding import engine_cores
from engines.vllm_engine import VLLMConfig, VLLMPolicyEngine
from verifiers.vllm_prm import VLLMPRM


@dataclass
class Pair:
    policy: VLLMPolicyEngine
    prm: VLLMPRM

    @classmethod
    def start(cls, models: Path, kv_cache_gib: float = 2.0) -> Pair:
        policy_cores, prm_cores = engine_cores()
        policy = VLLMPolicyEngine.start(
            VLLMConfig(model=str(models / "policy"), kv_cache_gib=kv_cache_gib, cpu_cores=policy_cores)
        )
        prm = VLLMPRM.start(
            VLLMConfig(model=str(models / "prm"), kv_cache_gib=kv_cache_gib, cpu_cores=prm_cores)
        )
        return cls(policy, prm)

    def shutdown(self) -> None:
        self.policy.shutdown()
        self.prm.shutdown()
