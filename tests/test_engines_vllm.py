"""The real engines: the vLLM policy adapter and the vLLM pooling PRM, on the shipped default models."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from engines.base import InvalidPrompt, Sampling
from engines.cpu_binding import parse_cpu_list
from engines.vllm_engine import VLLMPolicyEngine
from ponder.defaults import DEFAULT_PRM
from tasks.countdown import generate
from verifiers.hf_prm import TransformersPRM
from verifiers.prm import Candidate
from verifiers.vllm_prm import VLLMPRM

pytestmark = pytest.mark.engine

PROMPT = "3 7 9 13 -> 24\n"


async def test_expand_stops_at_the_step_delimiter(policy_engine: VLLMPolicyEngine) -> None:
    prompt = policy_engine.encode(PROMPT)
    generation = await policy_engine.expand([prompt, prompt], 4, Sampling(seed=1, logprobs=True), "t-expand")
    assert len(generation.continuations) == 2 and all(len(row) == 4 for row in generation.continuations)
    for row in generation.continuations:
        for c in row:
            assert c.finish in ("step", "end", "length")
            if c.finish == "step":
                assert c.token_ids[-1] == policy_engine.steps.exact_id and c.text.endswith("\n")
                assert c.text.count("\n") == 1
            assert policy_engine.eos_token_id not in c.token_ids
            assert c.logprob <= 0.0
            # token ids are the source of truth: the text is their decoding
            assert policy_engine.decode(prompt + list(c.token_ids)) == PROMPT + c.text
    assert any(c.logprob < 0.0 for row in generation.continuations for c in row)
    # Log-probabilities are an extra output, never a different sample: only MCTS asks for them.
    plain = await policy_engine.expand([prompt, prompt], 4, Sampling(seed=1), "t-expand-plain")
    assert [[c.token_ids for c in row] for row in plain.continuations] == [
        [c.token_ids for c in row] for row in generation.continuations
    ]
    assert all(c.logprob == 0.0 for row in plain.continuations for c in row)


async def test_rollouts_report_each_steps_logprob(policy_engine: VLLMPolicyEngine) -> None:
    """MCTS takes a rollout's first step as a child: its step log-probabilities add up to the whole
    continuation's, one per step, and the first equals what an expand call of the same seed reports."""
    prompt = policy_engine.encode(PROMPT)
    rolled = await policy_engine.rollout([prompt], 4, Sampling(seed=5, logprobs=True), "t-roll-lp")
    stepped = await policy_engine.expand([prompt], 4, Sampling(seed=5, logprobs=True), "t-step-lp")
    for whole, step in zip(rolled.continuations[0], stepped.continuations[0], strict=True):
        n_steps = whole.text.count("\n") + (not whole.text.endswith("\n"))
        assert len(whole.step_logprobs) == n_steps
        assert sum(whole.step_logprobs) == pytest.approx(whole.logprob, abs=1e-4)
        if whole.token_ids[: len(step.token_ids)] == step.token_ids:  # same first step sampled
            assert whole.step_logprobs[0] == pytest.approx(step.logprob, abs=1e-4)
    plain = await policy_engine.rollout([prompt], 2, Sampling(seed=5), "t-roll-plain")
    assert all(c.step_logprobs == () for c in plain.continuations[0])


async def test_usage_is_exact(policy_engine: VLLMPolicyEngine) -> None:
    prompts = [policy_engine.encode(p.prompt()) for p in generate(4, 3, seed=9)]
    generation = await policy_engine.rollout(prompts, 2, Sampling(seed=2), "t-usage")
    rows = generation.continuations
    expected_generated = sum(len(c.token_ids) + (c.finish == "end") for row in rows for c in row)
    assert generation.usage.generated_tokens == expected_generated
    assert generation.usage.prompt_tokens == 2 * sum(len(p) for p in prompts)
    assert generation.usage.policy_calls == 6


async def test_prefix_cache_hits_are_reported(policy_engine: VLLMPolicyEngine) -> None:
    # 70 tokens: two full 32-token blocks can be served from the cache on the second call
    prefix = policy_engine.encode(PROMPT + "13-7=6 [3 9 6]\n9-6=3 [3 3]\n3+3=6 [6]\n" * 2)
    assert len(prefix) >= 64
    await policy_engine.expand([prefix], 1, Sampling(seed=3), "t-cache-1")
    again = await policy_engine.expand([prefix], 2, Sampling(seed=4), "t-cache-2")
    assert again.usage.cached_prompt_tokens >= 2 * 64
    assert again.usage.prefilled_prompt_tokens == again.usage.prompt_tokens - again.usage.cached_prompt_tokens


async def test_same_seed_same_samples(policy_engine: VLLMPolicyEngine) -> None:
    prompt = policy_engine.encode(PROMPT)
    first = await policy_engine.rollout([prompt], 3, Sampling(seed=11), "t-seed-1")
    second = await policy_engine.rollout([prompt], 3, Sampling(seed=11), "t-seed-2")
    assert [c.text for c in first.continuations[0]] == [c.text for c in second.continuations[0]]


async def test_greedy_with_many_samples_is_refused(policy_engine: VLLMPolicyEngine) -> None:
    with pytest.raises(ValueError, match="n=1"):
        await policy_engine.expand([policy_engine.encode(PROMPT)], 2, Sampling(temperature=0.0), "t-greedy")


async def test_abort_stops_a_search_and_frees_the_engine(policy_engine: VLLMPolicyEngine) -> None:
    prompt = policy_engine.encode(PROMPT)
    # Unbounded-looking work: many long samples; abort it shortly after it starts.
    sampling = Sampling(temperature=1.0, max_tokens=200, seed=5)
    task = asyncio.create_task(policy_engine.rollout([prompt] * 8, 16, sampling, "t-abort"))
    await asyncio.sleep(0.3)
    await policy_engine.abort("t-abort")
    generation = await asyncio.wait_for(task, timeout=30)
    finishes = {c.finish for row in generation.continuations for c in row}
    assert "abort" in finishes
    assert policy_engine.engine.output_processor.get_num_unfinished_requests() == 0


async def test_cancelling_the_caller_aborts_its_engine_requests(policy_engine: VLLMPolicyEngine) -> None:
    prompt = policy_engine.encode(PROMPT)
    task = asyncio.create_task(
        policy_engine.rollout([prompt] * 8, 16, Sampling(max_tokens=200, seed=6), "t-cancel")
    )
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)
    assert policy_engine.engine.output_processor.get_num_unfinished_requests() == 0


async def _candidates(policy_engine: VLLMPolicyEngine, count: int) -> list[Candidate]:
    problems = generate(4, count, seed=21)
    prompts = [policy_engine.encode(p.prompt()) for p in problems]
    generation = await policy_engine.rollout(prompts, 2, Sampling(seed=8), "t-prm-samples")
    return [
        Candidate(tuple(prompt), tuple(policy_engine.split_steps(c.token_ids)))
        for prompt, row in zip(prompts, generation.continuations, strict=True)
        for c in row
        if c.token_ids
    ]


async def test_prm_gives_one_score_per_step(policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM) -> None:
    candidates = await _candidates(policy_engine, 6)
    scores = await prm_engine.score(candidates, "t-prm-shape")
    assert [len(s) for s in scores.step_scores] == [len(c.steps) for c in candidates]
    assert all(0.0 <= v <= 1.0 for row in scores.step_scores for v in row)
    assert scores.usage.verifier_calls == len(candidates)
    assert scores.usage.scored_tokens == sum(
        len(c.prompt_ids) + sum(map(len, c.steps)) + len(c.steps) for c in candidates
    )


async def test_vllm_prm_agrees_with_transformers_reference(
    policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM
) -> None:
    """vLLM's 2-way softmax orientation is easy to get backwards: check P(good) against a forward pass."""
    candidates = await _candidates(policy_engine, 10)
    served = await prm_engine.score(candidates, "t-prm-agree")
    reference = await TransformersPRM(DEFAULT_PRM).score(candidates, "t-prm-ref")
    flat_served = [v for row in served.step_scores for v in row]
    flat_reference = [v for row in reference.step_scores for v in row]
    assert len(flat_served) == len(flat_reference) > 10
    assert max(abs(a - b) for a, b in zip(flat_served, flat_reference, strict=True)) < 1e-3
    assert max(flat_reference) - min(flat_reference) > 0.1, (
        "a PRM that says the same everywhere tests nothing"
    )


def _steps(policy_engine: VLLMPolicyEngine, lines: list[str]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(policy_engine.encode(line)) for line in lines)


async def test_prm_reuses_a_scored_prefix_and_gives_the_same_scores(
    policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM
) -> None:
    """A step-level search re-sends each prefix: the PRM reads it from its cache, and the scores of the
    cached steps come from the trace (`known`) or, where it has none, from scoring again uncached."""
    prompt = tuple(policy_engine.encode("5 6 8 11 -> 19\n"))  # a prompt no other test sends
    lines = ["11-8=3 [5 6 3]\n", "6-5=1 [3 1]\n", "3*1=3 [3]\n", "3+1=4 [4]\n", "4*5=20 [20]\n"]
    head = Candidate(prompt, _steps(policy_engine, lines[:3]))
    first = await prm_engine.score([head], "t-reuse-1")
    assert first.usage.cached_scored_tokens == 0
    extended = Candidate(prompt, _steps(policy_engine, lines), known=tuple(first.step_scores[0]))
    reused = await prm_engine.score([extended], "t-reuse-2")
    assert reused.usage.cached_scored_tokens >= 32  # one full KV block at least
    assert reused.usage.scored_tokens == len(prompt) + sum(map(len, extended.steps)) + len(lines)
    # cached blocks hold steps 2 and 3 as well, whose scores this one does not know: scored uncached
    partial = Candidate(prompt, extended.steps, known=tuple(first.step_scores[0][:1]))
    again = await prm_engine.score([partial], "t-reuse-3")
    assert again.usage.cached_scored_tokens == 0
    fresh = await prm_engine.score([Candidate(prompt, extended.steps)], "t-reuse-4")
    assert fresh.usage.cached_scored_tokens == 0  # nothing known: the cache is not read
    reference = await TransformersPRM(DEFAULT_PRM).score([partial], "t-reuse-ref")
    for row in (reused.step_scores[0], again.step_scores[0], fresh.step_scores[0]):
        assert len(row) == len(lines)
        assert max(abs(a - b) for a, b in zip(row, reference.step_scores[0], strict=True)) < 1e-3
    # a tag inside the cached blocks takes its known score; one past them (how far the cache reaches
    # depends on block boundaries and on what else was cached) is computed again, equal up to float rounding
    assert reused.step_scores[0][:3] == pytest.approx(first.step_scores[0], abs=1e-5)


def test_engines_report_healthy(policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM) -> None:
    assert policy_engine.is_healthy and prm_engine.is_healthy


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ([], "empty"),
        ([1] + [5] * 400, "context"),
        ([1, 10**6], "vocabulary"),
        ([1, -3], "vocabulary"),
    ],
)
async def test_bad_prefixes_are_refused_before_anything_runs(
    policy_engine: VLLMPolicyEngine, prefix: list[int], message: str
) -> None:
    good = policy_engine.encode(PROMPT)
    with pytest.raises(InvalidPrompt, match=message):
        await policy_engine.expand([good, prefix], 2, Sampling(seed=0), "t-bad")
    assert policy_engine.engine.output_processor.get_num_unfinished_requests() == 0
    assert policy_engine.is_healthy
    again = await policy_engine.expand([good], 1, Sampling(seed=0), "t-after-bad")
    assert again.continuations[0][0].token_ids


async def test_prm_refuses_a_candidate_longer_than_its_context(prm_engine: VLLMPRM) -> None:
    candidate = Candidate((1,), tuple((7,) * 10 for _ in range(40)))
    with pytest.raises(InvalidPrompt, match="context"):
        await prm_engine.score([candidate], "t-prm-long")
    assert prm_engine.is_healthy


def test_chat_rendering_gives_the_training_prompt_ids(policy_engine: VLLMPolicyEngine) -> None:
    messages = [{"role": "user", "content": "3 7 9 13 -> 24"}]
    assert policy_engine.render_chat(messages) == policy_engine.encode(PROMPT)


def engine_affinities() -> list[tuple[set[int] | None, set[int] | None]]:
    """(EngineCore's CPUs, its worker's CPUs) for every vLLM engine descended from this test process,
    read from /proc (Cpus_allowed_list)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    allowed: dict[int, set[int] | None] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        names[pid] = stat.split("(", 1)[1].rsplit(")", 1)[0]
        line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list"))
        allowed[pid] = parse_cpu_list(line.split()[-1])

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    def is_engine_worker(pid: int, name: str) -> bool:
        return name.startswith("VLLM::Worker") and names.get(parents[pid], "").startswith("VLLM::EngineCor")

    return [
        (allowed[parents[pid]], allowed[pid])
        for pid, name in names.items()
        if is_engine_worker(pid, name) and descends(pid)
    ]


def test_the_policy_and_the_prm_compute_on_separate_cores(
    policy_engine: VLLMPolicyEngine, prm_engine: VLLMPRM, engine_cores_split: tuple[str | None, str | None]
) -> None:
    if engine_cores_split == (None, None):
        pytest.skip("vLLM's own binding here (a GPU, one core, or VLLM_CPU_OMP_THREADS_BIND set)")
    policy_cores, prm_cores = engine_cores_split
    assert policy_cores and prm_cores and not set(policy_cores.split(",")) & set(prm_cores.split(","))
    engines = engine_affinities()
    workers = [worker for _, worker in engines]
    assert parse_cpu_list(policy_cores) in workers and parse_cpu_list(prm_cores) in workers, engines
    # each engine's scheduler process shares its workers' cores instead of preempting the other's
    assert all(core == worker for core, worker in engines), engines
