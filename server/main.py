"""`ponder serve`: start the engines, build the app, run it on uvicorn.

Contract: `ServerConfig` holds every setting (the CLI fills it); `create_app(config, policy, prm)` wires
an app around engines that already run (tests inject the fake or the real ones); `serve(config)` starts
the vLLM engines on `config.models` and blocks in uvicorn until stopped, finishing in-flight requests
within `graceful_s` on shutdown. With `policy_urls` / `prm_urls` set, that engine is remote instead
(vLLM servers, `engines.remote` / `verifiers.remote_prm`): Ponder is then a stateless controller, and
`config.models` only supplies the tokenizers. `/health` then asks every replica's `/health`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from engines.base import PolicyEngine
from searchers.auto import AutoTable
from searchers.controller import Controller, Limits
from searchers.registry import default_searchers
from server.admission import Admission
from server.app import build_app
from server.metrics import Metrics
from verifiers.prm import StepVerifier

log = logging.getLogger("ponder.server")


@dataclass(frozen=True)
class ServerConfig:
    models: Path
    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str = "ponder-default"
    api_key: str | None = None
    default_strategy: str = "auto"
    default_budget: int = 1024
    max_budget: int = 65_536
    max_running: int = 64
    max_queued: int = 256
    graceful_s: float = 30.0
    policy_urls: tuple[str, ...] = ()  # remote policy replicas (vLLM OpenAI servers); empty: in-process
    prm_urls: tuple[str, ...] = ()  # remote PRM replicas (vLLM pooling servers); empty: in-process
    replica_cool_off_s: float = 10.0  # how long a failed replica is skipped


def create_app(config: ServerConfig, policy: PolicyEngine, prm: StepVerifier | None) -> FastAPI:
    metrics = Metrics()
    limits = Limits(
        default_strategy=config.default_strategy,
        default_budget=config.default_budget,
        max_budget=config.max_budget,
    )
    controller = Controller(policy, prm, limits, default_searchers(AutoTable.for_models(config.models)))
    admission = Admission(config.max_running, config.max_queued, metrics)

    async def health() -> dict[str, bool]:
        engines: dict[str, PolicyEngine | StepVerifier | None] = {"policy": policy, "prm": prm}
        present = {name: engine for name, engine in engines.items() if engine is not None}
        # Remote engines probe their replicas' /health (and mark them up or down); in-process ones know.
        await asyncio.gather(*(engine.probe() for engine in present.values()))
        return {name: engine.is_healthy for name, engine in present.items()}

    return build_app(controller, admission, metrics, config.model_name, health, config.api_key)


def start_engines(config: ServerConfig) -> tuple[PolicyEngine, StepVerifier, Callable[[], None]]:
    """The policy and PRM `serve` uses (remote where URLs are given), and how to stop what was started."""
    from engines.cpu_binding import engine_cores
    from engines.remote import RemotePolicyEngine
    from engines.vllm_engine import VLLMConfig, VLLMPolicyEngine
    from verifiers.remote_prm import RemotePRM
    from verifiers.vllm_prm import VLLMPRM

    stops: list[Callable[[], None]] = []
    both_local = not config.policy_urls and not config.prm_urls
    policy_cores, prm_cores = engine_cores() if both_local else (None, None)
    policy: PolicyEngine
    prm: StepVerifier
    if config.policy_urls:
        policy = RemotePolicyEngine.connect(
            config.policy_urls, config.models / "policy", cool_off_s=config.replica_cool_off_s
        )
    else:
        local_policy = VLLMPolicyEngine.start(
            VLLMConfig(model=str(config.models / "policy"), kv_cache_gib=2, cpu_cores=policy_cores)
        )
        stops.append(local_policy.shutdown)
        policy = local_policy
    if config.prm_urls:
        prm = RemotePRM.connect(config.prm_urls, config.models / "prm", cool_off_s=config.replica_cool_off_s)
    else:
        local_prm = VLLMPRM.start(
            VLLMConfig(model=str(config.models / "prm"), kv_cache_gib=2, cpu_cores=prm_cores)
        )
        stops.append(local_prm.shutdown)
        prm = local_prm

    def stop() -> None:
        for each in stops:
            each()

    return policy, prm, stop


def serve(config: ServerConfig) -> None:
    import uvicorn

    policy, prm, stop = start_engines(config)
    try:
        app = create_app(config, policy, prm)
        log.info("serving %s on http://%s:%d", config.model_name, config.host, config.port)
        uvicorn.run(
            app,
            host=config.host,
            port=config.port,
            timeout_graceful_shutdown=int(config.graceful_s),
            log_level="info",
        )
    finally:
        stop()
