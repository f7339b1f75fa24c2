"""Shared fixtures: the real vLLM engines on the shipped default models, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engines.cpu_binding import engine_cores
from engines.spec import read_policy_spec, read_prm_spec
from engines.vllm_engine import VLLMConfig, VLLMPolicyEngine
from ponder.defaults import DEFAULT_POLICY, DEFAULT_PRM
from verifiers.vllm_prm import VLLMPRM


@pytest.fixture(scope="session")
def engine_cores_split() -> tuple[str | None, str | None]:
    """The policy's and the PRM's CPU cores, split as `ponder serve` splits them."""
    return engine_cores()


@pytest.fixture(scope="session")
def policy_engine(engine_cores_split: tuple[str | None, str | None]) -> Iterator[VLLMPolicyEngine]:
    config = VLLMConfig(model=str(DEFAULT_POLICY), kv_cache_gib=1, cpu_cores=engine_cores_split[0])
    engine = VLLMPolicyEngine.start(config, read_policy_spec(DEFAULT_POLICY))
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def prm_engine(engine_cores_split: tuple[str | None, str | None]) -> Iterator[VLLMPRM]:
    config = VLLMConfig(model=str(DEFAULT_PRM), kv_cache_gib=1, cpu_cores=engine_cores_split[1])
    engine = VLLMPRM.start(config, read_prm_spec(DEFAULT_PRM))
    yield engine
    engine.shutdown()
