"""Math-Shepherd step labels for PRM training: Monte-Carlo rollouts with the policy on vLLM.

Contract (the labelling itself is `verifiers.montecarlo`, shared with the evaluations): for sampled policy
solutions of generated problems (never evaluation problems), each step
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
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from engines.base import PolicyEngine, Sampling
from engines.spec import read_policy_spec
from engines.vllm_engine import VLLMConfig, VLLMPolicyEngine
from tasks.countdown import Problem, generate
from verifiers.montecarlo import LabelledSolution, label_problems

BATCH_PROBLEMS = 32


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
    """The problems whose policy solutions get labelled: train split only."""
    return [
        p for tier, count in sorted(per_tier.items()) for p in generate(int(tier), int(count), seed, "train")
    ]


def labelled_problems(recipe: dict[str, Any]) -> dict[str, list[Problem]]:
    """Every problem list `label_steps` draws, by what it labels (as `label_steps` seeds them)."""
    table = recipe["prm_data"]
    seed = int(recipe["seed"]) + 2000
    lists = {"prm_data_mc": training_problems(table["problems_per_tier"], seed)}
    if table.get("exact_problems_per_tier"):
        lists["prm_data_exact"] = training_problems(table["exact_problems_per_tier"], seed + 1)
    return lists


def label_steps(recipe: dict[str, Any], policy_dir: Path, out_dir: Path) -> None:
    """Write `prm_data.jsonl` (Monte-Carlo labels) and, when the recipe asks for it,
    `prm_data_exact.jsonl` (exact labels only)."""
    table = recipe["prm_data"]
    seed = int(recipe["seed"]) + 2000
    sampling = Sampling(temperature=float(table["temperature"]), seed=seed, logprobs=False)
    engine = VLLMPolicyEngine.start(
        VLLMConfig(model=str(policy_dir), kv_cache_gib=2), read_policy_spec(policy_dir)
    )

    problems = labelled_problems(recipe)

    async def label() -> None:  # one event loop for the engine's whole life
        labelled = await _label_all(
            engine,
            problems["prm_data_mc"],
            int(table["samples_per_problem"]),
            int(table["rollouts"]),
            sampling,
            "prm labels",
        )
        write_records(labelled, out_dir / "prm_data.jsonl")
        if "prm_data_exact" in problems:
            exact = await _label_all(
                engine,
                problems["prm_data_exact"],
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
