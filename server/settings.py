"""Every setting of a Ponder server, declared once: the command line and the environment derive from here.

Contract:
- `ModelSettings` says which models to serve, with the command line's overrides of their specs
  (`engines.spec`); `EngineSettings` adds how their engines run (in-process vLLM, or remote replicas)
  and what their tokens cost (`cost_weights`: the compute unit's weights, `engines.cost`).
- `ServerSettings` adds the HTTP side (address, model name, API key, admission) to those and to the
  controller's `Limits`, whose fields and defaults it inherits rather than repeats.
- Each field's description is its `--help` text; `ponder serve` derives its flags from these models
  (pydantic-settings), and each can also be set as an environment variable `PONDER_<NAME>`
  (`PONDER_API_KEY`, `PONDER_PORT`, ...). Values given on the command line win over the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engines.cost import WEIGHTS_FILE, CostWeights
from engines.spec import PRM_FORMATS, PolicySpec, PRMSpec, read_policy_spec, read_prm_spec
from engines.vllm_engine import VLLMConfig
from searchers.controller import Limits

SETTINGS_CONFIG = SettingsConfigDict(
    env_prefix="PONDER_",
    env_ignore_empty=True,  # an empty variable (compose's `${X:-}`) means "not set"
    frozen=True,
    extra="forbid",
    cli_kebab_case=True,
    cli_implicit_flags=True,
)


class ModelSettings(BaseSettings):
    """Which models, and the command line's overrides of their specs."""

    model_config = SETTINGS_CONFIG

    models: Path | None = Field(None, description="directory with the policy in policy/ and the PRM in prm/")
    policy: str | None = Field(
        None, description="the policy: a local Hugging Face directory (or a hub name vLLM may download)"
    )
    prm: str | None = Field(None, description="the PRM: a local Hugging Face directory (or a hub name)")
    prm_format: str | None = Field(
        None, description=f"how the PRM reads solutions: {', '.join(PRM_FORMATS)} (default: its spec)"
    )
    step_delimiter: str | None = Field(
        None,
        description="the text between the policy's steps, escapes allowed (\\n\\n); default: its "
        "ponder_spec.json, else a blank line",
    )
    system_prompt: str | None = Field(None, description="the system prompt put before every conversation")
    max_step_tokens: int | None = Field(None, gt=0, description="the longest step, in tokens")
    max_solution_tokens: int | None = Field(None, gt=0, description="the longest solution, in tokens")
    prm_step_tag: str | None = Field(None, description="the token the PRM gives a verdict at")
    prm_good_token: str | None = Field(None, description="the PRM's 'step is good' token")
    prm_bad_token: str | None = Field(None, description="the PRM's 'step is bad' token")
    prm_system_prompt: str | None = Field(None, description="the PRM's system prompt (qwen format)")

    @field_validator("step_delimiter", "prm_step_tag", mode="after")
    @classmethod
    def unescaped(cls, value: str | None) -> str | None:
        """A delimiter typed on a command line arrives as backslash-n; a newline is meant."""
        return None if value is None else value.replace("\\n", "\n").replace("\\t", "\t")

    @model_validator(mode="after")
    def models_named(self) -> Any:
        if (self.policy is None) != (self.prm is None):
            raise ValueError("name both models: --policy with --prm (a PRM reads its own policy's steps)")
        if self.models is None and self.policy is None:
            raise ValueError("name the models: --models DIR, or both --policy and --prm")
        return self

    @property
    def policy_dir(self) -> str:
        return self.policy or str(Path(str(self.models)) / "policy")

    @property
    def prm_dir(self) -> str:
        return self.prm or str(Path(str(self.models)) / "prm")

    @property
    def auto_table(self) -> Path | None:
        """`auto`'s table: beside the models of --models (a pair named by --policy/--prm has none)."""
        return None if self.models is None or self.policy is not None else self.models / "auto_table.json"

    def policy_spec(self) -> PolicySpec:
        return read_policy_spec(
            self.policy_dir,
            step_delimiter=self.step_delimiter,
            system_prompt=self.system_prompt,
            max_step_tokens=self.max_step_tokens,
            max_solution_tokens=self.max_solution_tokens,
        )

    def prm_spec(self) -> PRMSpec:
        return read_prm_spec(
            self.prm_dir,
            format=self.prm_format,
            step_tag=self.prm_step_tag,
            good_token=self.prm_good_token,
            bad_token=self.prm_bad_token,
            system_prompt=self.prm_system_prompt,
        )


class EngineSettings(ModelSettings):
    """How the engines run: in-process on vLLM (CPU or GPUs), or as clients of remote replicas."""

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
    dtype: str = Field("auto", description="weights' dtype in vLLM: auto (the checkpoint's), bfloat16, ...")
    max_model_len: int | None = Field(None, gt=0, description="context length (default: the model's)")
    tensor_parallel_size: int = Field(1, gt=0, description="GPUs each in-process engine is split over")
    enforce_eager: bool | None = Field(
        None, description="no CUDA graphs (default: eager on CPU, graphs on GPU)"
    )
    kv_cache_gib: float | None = Field(
        None,
        gt=0,
        description="each in-process engine's KV cache in GiB (default: 2 on CPU; on GPU "
        "vLLM sizes it from the memory utilisation)",
    )
    policy_gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="the share of GPU memory the policy engine takes (default: 0.55 "
        "when both engines share a GPU)",
    )
    prm_gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="the share of GPU memory the PRM engine takes (default: 0.35 "
        "when both engines share a GPU)",
    )
    cost_weights: Path | None = Field(
        None,
        description="the compute unit's weights, as `ponder bench --calibrate` writes them (default: "
        f"MODELS/{WEIGHTS_FILE} where one was measured, else the uncalibrated defaults)",
    )

    @property
    def cost_weights_file(self) -> Path | None:
        """Where the weights are read from: `cost_weights`, else beside the models of --models (a pair
        named by --policy/--prm has none unless named)."""
        if self.cost_weights is not None:
            return self.cost_weights
        return None if self.models is None or self.policy is not None else self.models / WEIGHTS_FILE

    def weights(self) -> CostWeights:
        """The compute unit's weights: measured (a file named by `cost_weights` must exist), or the
        defaults."""
        if self.cost_weights is not None:
            return CostWeights.load(self.cost_weights)
        return CostWeights.if_measured(self.cost_weights_file)

    def vllm_config(self, role: Literal["policy", "prm"], cores: str | None) -> VLLMConfig:
        """The in-process engine of `role` as these settings describe it."""
        return VLLMConfig(
            model=self.policy_dir if role == "policy" else self.prm_dir,
            kv_cache_gib=self.kv_cache_gib,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            tensor_parallel_size=self.tensor_parallel_size,
            enforce_eager=self.enforce_eager,
            gpu_memory_utilization=(
                self.policy_gpu_memory_utilization if role == "policy" else self.prm_gpu_memory_utilization
            ),
            cpu_cores=cores,
        )


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
