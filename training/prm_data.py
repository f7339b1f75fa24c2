"""Math-Shepherd step labels: Monte-Carlo rollouts with the policy on vLLM.

Contract: for sampled policy solutions of generated problems (never evaluation problems), each step
prefix gets K rollouts to the end; soft label = share of rollouts the exact checker grades correct,
hard label = any was. Rollouts are spent only where the value is unknown: the complete solution's last
step is labelled by the checker itself, and a step the step checker rejects, or after which the exact
solver finds no solution, is labelled 0 without rollouts (every rollout through it is wrong anyway).
Written in TRL's stepwise format (`prompt`, `completions`, `labels`) plus `soft_labels`.

With `rollouts=0` only those exactly known labels are given, and the other steps' labels are None (no
loss): cheap on-distribution data, many times more solutions for the same compute, that teaches the PRM
the policy's own mistakes (the recipe's `exact_problems_per_tier`, written to `prm_data_exact.jsonl`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from engines.base import PolicyEngine, Sampling
from engines.vllm_engine import VLLMConfig, VLLMPolicyEngine
from tasks.countdown import Problem, SolutionCounter, generate
from tasks.sets import eval_problems
from verifiers.countdown import check_solution, legal_prefix_state
from verifiers.prm import split_steps_ids

BATCH_PROBLEMS = 32


@dataclass(frozen=True)
class LabelledSolution:
    problem: Problem
    steps: list[str]
    soft_labels: list[float | None]
    correct: bool

    def record(self) -> dict[str, Any]:
        return {
            "prompt": self.problem.prompt(),
            "completions": self.steps,
            "labels": [None if s is None else s > 0 for s in self.soft_labels],
            "soft_labels": self.soft_labels,
            "correct": self.correct,
            "tier": self.problem.tier,
        }


async def label_problems(
    engine: PolicyEngine,
    problems: Sequence[Problem],
    samples: int,
    rollouts: int,
    sampling: Sampling,
    request_id: str,
) -> list[LabelledSolution]:
    """Sample `samples` solutions per problem, then label every step prefix with `rollouts` rollouts
    (or leave it None when `rollouts` is 0) unless its value is known exactly."""
    prompts = [engine.encode(p.prompt()) for p in problems]
    counters = {p: SolutionCounter(p.target) for p in problems}
    drawn = await engine.rollout(prompts, samples, sampling, f"{request_id}-sample")
    pending: list[tuple[LabelledSolution, int]] = []  # (solution, step index) still needing rollouts
    prefixes: list[list[int]] = []
    solutions: list[LabelledSolution] = []
    for problem, prompt, row in zip(problems, prompts, drawn.continuations, strict=True):
        for sample in row:
            steps = split_steps_ids(sample.token_ids, engine.step_token_id)
            texts = [engine.decode(s) for s in steps]
            correct = check_solution(problem, "".join(texts)).correct
            solution = LabelledSolution(problem, texts, [0.0] * len(steps), correct)
            solutions.append(solution)
            for k in range(len(steps)):
                state = legal_prefix_state(problem, texts[: k + 1])
                if state is None:
                    break  # this step and all after it are labelled 0
                if k == len(steps) - 1:
                    solution.soft_labels[k] = float(correct)
                elif counters[problem].count(state) == 0:
                    continue  # a dead end: no continuation can succeed, the label stays 0
                elif rollouts == 0:
                    solution.soft_labels[k] = None
                else:
                    pending.append((solution, k))
                    prefixes.append(prompt + [t for s in steps[: k + 1] for t in s])
    if prefixes:
        done = await engine.rollout(prefixes, rollouts, sampling, f"{request_id}-rollout")
        for (solution, k), prefix_rollouts in zip(pending, done.continuations, strict=True):
            head = "".join(solution.steps[: k + 1])
            wins = sum(check_solution(solution.problem, head + c.text).correct for c in prefix_rollouts)
            solution.soft_labels[k] = wins / rollouts
    return solutions


async def _label_all(
    engine: PolicyEngine,
    problems: list[Problem],
    samples: int,
    rollouts: int,
    sampling: Sampling,
    desc: str,
) -> list[LabelledSolution]:
    labelled: list[LabelledSolution] = []
    # Without rollouts a batch is a single engine call, so batches can be larger.
    size = BATCH_PROBLEMS if rollouts else 4 * BATCH_PROBLEMS
    batches = range(0, len(problems), size)
    for n, start in enumerate(tqdm(batches, desc=desc, unit="batch")):
        chunk = problems[start : start + size]
        seeded = Sampling(temperature=sampling.temperature, seed=(sampling.seed or 0) + n, logprobs=False)
        labelled += await label_problems(engine, chunk, samples, rollouts, seeded, f"{desc}-{n}")
    return labelled


def training_problems(per_tier: dict[str, int], seed: int) -> list[Problem]:
    held_out = eval_problems()
    return [
        p
        for tier, count in sorted(per_tier.items())
        for p in generate(int(tier), int(count), seed)
        if p not in held_out
    ]


def label_steps(recipe: dict[str, Any], policy_dir: Path, out_dir: Path) -> None:
    """Write `prm_data.jsonl` (Monte-Carlo labels) and, when the recipe asks for it,
    `prm_data_exact.jsonl` (exact labels only)."""
    table = recipe["prm_data"]
    seed = int(recipe["seed"]) + 2000
    sampling = Sampling(temperature=float(table["temperature"]), seed=seed, logprobs=False)
    engine = VLLMPolicyEngine.start(VLLMConfig(model=str(policy_dir), kv_cache_gib=2))

    async def label() -> None:  # one event loop for the engine's whole life
        labelled = await _label_all(
            engine,
            training_problems(table["problems_per_tier"], seed),
            int(table["samples_per_problem"]),
            int(table["rollouts"]),
            sampling,
            "prm labels",
        )
        write_records(labelled, out_dir / "prm_data.jsonl")
        if table.get("exact_problems_per_tier"):
            exact = await _label_all(
                engine,
                training_problems(table["exact_problems_per_tier"], seed + 1),
                int(table["exact_samples_per_problem"]),
                0,
                replace(sampling, seed=seed + 1_000),
                "exact labels",
            )
            write_records(exact, out_dir / "prm_data_exact.jsonl")

    try:
        asyncio.run(label())
    finally:
        engine.shutdown()


def write_records(labelled: Sequence[LabelledSolution], path: Path) -> None:
    with path.open("w") as handle:
        for item in labelled:
            handle.write(json.dumps(item.record()) + "\n")
