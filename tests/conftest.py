"""Shared fixtures: the real vLLM engines on the shipped default models, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engines.vllm_engine import VLLMConfig, VLLMPolicyEngine
from ponder.defaults import DEFAULT_POLICY, DEFAULT_PRM
from verifiers.vllm_prm import VLLMPRM


@pytest.fixture(scope="session")
def policy_engine() -> Iterator[VLLMPolicyEngine]:
    engine = VLLMPolicyEngine.start(VLLMConfig(model=str(DEFAULT_POLICY), kv_cache_gib=1))
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def prm_engine() -> Iterator[VLLMPRM]:
    engine = VLLMPRM.start(VLLMConfig(model=str(DEFAULT_PRM), kv_cache_gib=1))
    yield engine
    engine.shutdown()
