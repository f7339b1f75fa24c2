"""The FastAPI application: the serving objects, their routes, the request middleware, the error handlers.

Contract: `build_app(controller, admission, metrics, model_name, health, api_key)` returns an app that
holds no global state; everything it uses is injected. It builds one serving object per endpoint
(`ServingChat`, `ServingCompletion`, sharing the admission control and metrics) and the served models,
mounts their routes (`server.api_router`), answers every error in OpenAI's shape (`server.errors`) and
passes every request through `RequestContext` (request ids, the API key on `/v1`, the request
counter). A client that disconnects cancels its search.
"""

from __future__ import annotations

from fastapi import FastAPI

from searchers.controller import Controller
from server.admission import Admission
from server.api_router import Health, api_router
from server.errors import install_error_handlers
from server.metrics import Metrics
from server.middleware import RequestContext
from server.serving_chat import ServingChat
from server.serving_completion import ServingCompletion
from server.serving_models import ServingModels


def build_app(
    controller: Controller,
    admission: Admission,
    metrics: Metrics,
    model_name: str,
    health: Health,
    api_key: str | None = None,
) -> FastAPI:
    models = ServingModels(model_name, controller.searchers)
    chat = ServingChat(controller, models, admission, metrics)
    completion = ServingCompletion(controller, models, admission, metrics)
    app = FastAPI(title="Ponder", version="0.1.0", description="Inference-time search behind an OpenAI API.")
    install_error_handlers(app)
    app.add_middleware(RequestContext, metrics=metrics, api_key=api_key)
    app.include_router(api_router(chat, completion, models, health, metrics))
    return app
