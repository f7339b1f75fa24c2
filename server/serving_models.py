"""The models this server answers to: one name, and that name with a strategy suffix.

Contract: `ServingModels(model_name, strategies)` resolves a request's `model` to a
strategy: the suffix after the name (`ponder-default:beam`, `qwen2.5-math:1.5b:beam`; a name may hold
':' itself) where there is one, else the request's `search.strategy`,
else none asked for (the server's default then runs). Another base name is a 404 naming what is
served. `model_list()` is `GET /v1/models`: the name, then the name with each strategy.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.errors import ApiError
from server.protocol import ModelCard, ModelList, SearchOptions


class ServingModels:
    def __init__(self, model_name: str, strategies: Iterable[str]) -> None:
        self.model_name = model_name
        self.strategies = sorted(strategies)

    def requested_strategy(self, model: str, options: SearchOptions) -> str | None:
        """The strategy the request asks for, if any (404 for a model this server does not serve)."""
        if model == self.model_name:  # a name may hold ':' itself (qwen2.5-math:1.5b)
            return options.strategy
        base, _, suffix = model.rpartition(":")
        if base != self.model_name or not suffix:
            raise ApiError(
                404,
                f"model {model!r} does not exist; this server serves {self.model_name!r} "
                f"(optionally {self.model_name}:<strategy>)",
                param="model",
                code="model_not_found",
            )
        return suffix

    def model_list(self) -> ModelList:
        names = [self.model_name, *(f"{self.model_name}:{s}" for s in self.strategies)]
        return ModelList(data=[ModelCard(id=name) for name in names])
