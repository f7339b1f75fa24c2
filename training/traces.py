"""Solver traces for behaviour cloning: (prompt, reference solution) pairs over several tiers.

Contract: `build_traces` is deterministic in its seed and draws its problems (`sft_problems`) from the
train split alone (`tasks.split`), so the eval and dev problems stay held out by meaning.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tqdm import tqdm

from tasks.countdown import Distinct, Problem, SolutionCounter, generate, reference_solution, solution_text


@dataclass(frozen=True)
class Trace:
    prompt: str
    solution: str
    tier: int


def sft_problems(
    problems_per_tier: dict[int, int], seed: int, distinct: Distinct = "order"
) -> dict[int, list[Problem]]:
    """The problems behaviour cloning solves, by tier: train split only. `distinct="meaning"` spends the
    same number of problems on more canonical keys (no reordered repeats)."""
    return {
        tier: generate(tier, count, seed=seed + 1000, split="train", distinct=distinct)
        for tier, count in sorted(problems_per_tier.items())
    }


def build_traces(
    problems_per_tier: dict[int, int], solutions_per_problem: int, seed: int, distinct: Distinct = "order"
) -> list[Trace]:
    rng = random.Random(seed)
    traces: list[Trace] = []
    for tier, problems in sft_problems(problems_per_tier, seed, distinct).items():
        for problem in tqdm(problems, desc=f"solver traces, {tier} numbers", unit="problem"):
            counter = SolutionCounter(problem.target)
            for _ in range(solutions_per_problem):
                text = solution_text(reference_solution(problem, rng, counter))
                traces.append(Trace(problem.prompt(), text, tier))
    rng.shuffle(traces)
    return traces
