"""Solver traces for behaviour cloning: (prompt, reference solution) pairs over several tiers.

Contract: `build_traces` is deterministic in its seed and never yields a problem from the `exclude`
set (the shipped held-out evaluation sets), so evaluation stays held out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tqdm import tqdm

from tasks.countdown import Problem, SolutionCounter, generate, reference_solution, solution_text


@dataclass(frozen=True)
class Trace:
    prompt: str
    solution: str
    tier: int


def build_traces(
    problems_per_tier: dict[int, int],
    solutions_per_problem: int,
    seed: int,
    exclude: set[Problem] | None = None,
) -> list[Trace]:
    rng = random.Random(seed)
    traces: list[Trace] = []
    for tier, count in sorted(problems_per_tier.items()):
        problems = [p for p in generate(tier, count, seed=seed + 1000) if p not in (exclude or set())]
        for problem in tqdm(problems, desc=f"solver traces, {tier} numbers", unit="problem"):
            counter = SolutionCounter(problem.target)
            for _ in range(solutions_per_problem):
                text = solution_text(reference_solution(problem, rng, counter))
                traces.append(Trace(problem.prompt(), text, tier))
    rng.shuffle(traces)
    return traces
