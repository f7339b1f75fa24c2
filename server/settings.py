"""Every setting of a Ponder server, declared once: the command line and the environment derive from here.

Contract:
- `ModelSettings` says which models to serve, with the command line's overrides of their specs
  (`engines.spec`); `EngineSettings` adds how their engines run (in-process vLLM, or remote replicas).
- `ServerSettings` adds the HTTP side (address, model name, API key, admission) to those and to the
  controller's `Limits`, whose fields and defaults it inherits rather than repeats.
- Each field's description is its `--help` text; `ponder serve` derives its flags from these models
  (pydantic-settings), and each can also be set as an environment variable `PONDER_<NAME>`
  (`PONDER_API_KEY`, `PONDER_PORT`, ...). Values given on the command line win over the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engines.spec import PolicySpec, PRMSpec, read_policy_spec, read_prm_spec
from searchers.controller import Limits

SETTINGS_CONFIG = SettingsConfigDict(
    env_prefix="PONDER_",
    frozen=True,
    extra="forbid",
    cli_kebab_case=True,
    cli_implicit_flags=True,
)


class ModelSettings(BaseSettings):
    """Which models, and the command line's overrides of their specs."""

    model_config = SETTINGS_CONFIG

    models: Path = Field(description="directory with the policy in policy/ and the PRM in prm/")
    step_delimiter: str | None = Field(
        None, description="override the policy's step delimiter (default: its ponder_spec.json)"
    )
    max_step_tokens: int | None = Field(None, gt=0, description="override the longest step, in tokens")
    max_solution_tokens: int | None = Field(
        None, gt=0, description="override the longest solution, in tokens"
    )
    prm_step_tag: str | None = Field(None, description="override the token the PRM gives a verdict at")
    prm_good_token: str | None = Field(None, description="override the PRM's 'step is good' token")
    prm_bad_token: str | None = Field(None, description="override the PRM's 'step is bad' token")

    @property
    def policy_dir(self) -> Path:
        return self.models / "policy"

    @property
    def prm_dir(self) -> Path:
        return self.models / "prm"

    def policy_spec(self) -> PolicySpec:
        return read_policy_spec(
            self.policy_dir,
            step_delimiter=self.step_delimiter,
            max_step_tokens=self.max_step_tokens,
            max_solution_tokens=self.max_solution_tokens,
        )

    def prm_spec(self) -> PRMSpec:
        return read_prm_spec(
            self.prm_dir,
            step_tag=self.prm_step_tag,
            good_token=self.prm_good_token,
            bad_token=self.prm_bad_token,
        )


class EngineSettings(ModelSettings):
    """Where the engines run: in-process, or remote replicas."""

    policy_url: list[str] = Field(
        default_factory=list,
        description="a remote policy replica (a vLLM server, e.g. from `ponder engine policy`); repeat "
        "for more. Without it the policy runs in-process",
    )
    prm_url: list[str] = Field(
        default_factory=list,
        description="a remote PRM replica (a vLLM pooling server, `ponder engine prm`); repeat for more",
    )
    replica_cool_off: float = Field(10.0, gt=0, description="seconds a failed replica is skipped")
    kv_cache_gib: float = Field(2.0, gt=0, description="the KV cache of each in-process engine, in GiB")


class ServerSettings(Limits, EngineSettings):
    model_config = SETTINGS_CONFIG

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, lt=65_536, description="port to listen on")
    model_name: str = Field("ponder-default", description="the model id clients ask for")
    api_key: str | None = Field(None, description="require 'Authorization: Bearer KEY' on /v1")
    max_running: int = Field(64, gt=0, description="searches run at once")
    max_queued: int = Field(256, ge=0, description="searches waiting for a slot before 429s")
    graceful_s: float = Field(30.0, ge=0, description="seconds in-flight requests get on shutdown")

    @model_validator(mode="after")
    def default_budget_allowed(self) -> Any:
        if self.default_budget > self.max_budget:
            raise ValueError(f"default budget {self.default_budget} exceeds max budget {self.max_budget}")
        return self
