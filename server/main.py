"""`ponder serve`: start the engines, build the app, run it on uvicorn.

Contract: `ServerConfig` holds every setting (the CLI fills it); `create_app(config, policy, prm)` wires
an app around engines that already run (tests inject the fake or the real ones); `serve(config)` starts
the vLLM engines on `config.models` and blocks in uvicorn until stopped, finishing in-flight requests
within `graceful_s` on shutdown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from engines.base import PolicyEngine
from searchers.auto import AutoTable
from searchers.controller import Controller, Limits
from searchers.registry import default_searchers
from server.admission import Admission
from server.app import build_app
from server.metrics import Metrics
from server.serving import SearchService
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


def create_app(config: ServerConfig, policy: PolicyEngine, prm: StepVerifier | None) -> FastAPI:
    metrics = Metrics()
    limits = Limits(
        default_strategy=config.default_strategy,
        default_budget=config.default_budget,
        max_budget=config.max_budget,
    )
    controller = Controller(policy, prm, limits, default_searchers(AutoTable.for_models(config.models)))
    service = SearchService(
        controller, metrics, Admission(config.max_running, config.max_queued, metrics), config.model_name
    )

    def health() -> dict[str, bool]:
        engines: dict[str, Any] = {"policy": policy, "prm": prm}
        return {
            name: bool(getattr(engine, "is_healthy", True))
            for name, engine in engines.items()
            if engine is not None
        }

    return build_app(service, health, config.api_key)


def serve(config: ServerConfig) -> None:
    import uvicorn

    from ponder.pair import Pair

    pair = Pair.start(config.models)
    try:
        app = create_app(config, pair.policy, pair.prm)
        log.info("serving %s on http://%s:%d", config.model_name, config.host, config.port)
        uvicorn.run(
            app,
            host=config.host,
            port=config.port,
            timeout_graceful_shutdown=int(config.graceful_s),
            log_level="info",
        )
    finally:
        pair.shutdown()
