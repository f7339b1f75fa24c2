"""`ponder serve`: start the engines, build the app, run it on uvicorn.

Contract: `ServerSettings` (`server.settings`) holds every setting; `create_app(settings, policy, prm)`
wires an app around engines that already run (tests inject the fake or the real ones), with `auto`'s
table and the compute unit's weights read from beside the models (or the settings' files); `serve(settings)`
starts the engines (`server.engines`) and blocks in uvicorn until stopped, finishing in-flight requests
within `graceful_s` on shutdown. With `policy_url` / `prm_url` set, that engine is remote instead (vLLM
servers, `engines.remote` / `verifiers.remote_prm`): Ponder is then a stateless controller, and
`settings.models` only supplies the tokenizers and specs. `/health` then asks every replica's `/health`.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

from engines.base import PolicyEngine
from searchers.auto import AutoTable
from searchers.controller import Controller, Limits
from searchers.registry import default_searchers
from server.admission import Admission
from server.app import build_app
from server.metrics import Metrics
from server.settings import ServerSettings
from verifiers.prm import StepVerifier

log = logging.getLogger("ponder.server")


def create_app(settings: ServerSettings, policy: PolicyEngine, prm: StepVerifier | None) -> FastAPI:
    metrics = Metrics()
    searchers = default_searchers(AutoTable.if_measured(settings.auto_table))
    controller = Controller(policy, prm, Limits.of(settings), searchers, settings.weights())
    admission = Admission(settings.max_running, settings.max_queued, metrics)

    async def health() -> dict[str, bool]:
        engines: dict[str, PolicyEngine | StepVerifier | None] = {"policy": policy, "prm": prm}
        present = {name: engine for name, engine in engines.items() if engine is not None}
        # Remote engines probe their replicas' /health (and mark them up or down); in-process ones know.
        await asyncio.gather(*(engine.probe() for engine in present.values()))
        return {name: engine.is_healthy for name, engine in present.items()}

    return build_app(controller, admission, metrics, settings.model_name, health, settings.api_key)


def serve(settings: ServerSettings) -> None:
    import uvicorn

    from server.engines import Engines

    engines = Engines.start(settings)
    try:
        app = create_app(settings, engines.policy, engines.prm)
        log.info("serving %s on http://%s:%d", settings.model_name, settings.host, settings.port)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            timeout_graceful_shutdown=int(settings.graceful_s),
            log_level="info",
        )
    finally:
        engines.shutdown()
