"""Where the PRM fails: its final-solution AUROC split by how the policy's wrong solutions go wrong.

Contract: `failure_kind(problem, text)` names the first thing wrong with a completion ("correct",
"fake last step": the last step claims a number its arithmetic does not give, "illegal last step",
"illegal earlier step", "wrong final number", "unfinished"). `breakdown(kinds, scores)` gives, per kind,
the count, the PRM's mean last-step score and its AUROC against the correct solutions.
`prm_failure_results` samples `samples` solutions per held-out problem at temperature 1.0 on the real
engines, scores them with the PRM and writes the breakdown (`ponder eval prm-failures`).
Why: one AUROC hides which mistakes the PRM misses; on the default models it is almost all one kind.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engines.base import Sampling
from server.engines import Engines
from server.settings import EngineSettings
from tasks.countdown import Problem
from tasks.datasets import countdown_problem
from tasks.sets import load_dev_set, load_eval_set
from verifiers.countdown import check_solution, split_steps, wrong_arithmetic
from verifiers.prm import Candidate

from .foundation import final_scores_of_candidates, readable
from .metrics import auroc

KINDS = (
    "correct",
    "fake last step",
    "illegal last step",
    "illegal earlier step",
    "wrong final number",
    "unfinished",
)


def failure_kind(problem: Problem, text: str) -> str:
    outcome = check_solution(problem, text)
    if outcome.correct:
        return "correct"
    if outcome.legal_steps < outcome.steps:  # an illegal (or malformed) step at index legal_steps
        if outcome.legal_steps < outcome.steps - 1:
            return "illegal earlier step"
        return "fake last step" if wrong_arithmetic(split_steps(text)[-1]) else "illegal last step"
    return "wrong final number" if outcome.final is not None else "unfinished"


def breakdown(kinds: Sequence[str], scores: Sequence[float]) -> dict[str, dict[str, Any]]:
    correct = [s for k, s in zip(kinds, scores, strict=True) if k == "correct"]
    table: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        mine = [s for k, s in zip(kinds, scores, strict=True) if k == kind]
        if not mine:
            continue
        row: dict[str, Any] = {"count": len(mine), "mean_score": round(sum(mine) / len(mine), 4)}
        if kind != "correct":
            row["auroc_against_correct"] = auroc(correct + mine, [True] * len(correct) + [False] * len(mine))
        table[kind] = row
    return table


async def _sample_and_score(
    engines: Engines, problems: Sequence[Problem], samples: int, seed: int
) -> tuple[list[str], list[float], int]:
    """The kind and last-step score of each sampled solution the PRM can read, and how many it cannot."""
    prompts = [engines.policy.encode(p.prompt()) for p in problems]
    sampling = Sampling(temperature=1.0, seed=seed, logprobs=False)
    drawn = await engines.policy.rollout(prompts, samples, sampling, "prm-failures")
    kinds: list[str] = []
    candidates: list[Candidate] = []
    for problem, prompt, row in zip(problems, prompts, drawn.continuations, strict=True):
        for sample in row:
            kinds.append(failure_kind(problem, sample.text))
            steps = tuple(engines.policy.split_steps(sample.token_ids))
            candidates.append(Candidate(tuple(prompt), steps))
    scores, read = readable(await final_scores_of_candidates(engines, candidates), kinds)
    return read, scores, len(kinds) - len(read)


def prm_failure_results(
    models: Path, out: Path, tier: int, problems: int, samples: int, split: str = "dev"
) -> dict[str, Any]:
    """On the dev split by default: where the PRM fails is what its next change is chosen by."""
    load = load_dev_set if split == "dev" else load_eval_set
    chosen = [countdown_problem(t) for t in load(tier, limit=problems)]
    engines = Engines.start(EngineSettings(models=models))
    try:
        started = time.time()
        kinds, scores, too_long = asyncio.run(_sample_and_score(engines, chosen, samples, seed=11))
    finally:
        engines.shutdown()
    report = {
        "tier": tier,
        "split": split,
        "problems": len(chosen),
        "solutions": len(kinds),
        "skipped_too_long": too_long,
        "prm_auroc_final": auroc(scores, [k == "correct" for k in kinds]),
        "kinds": breakdown(kinds, scores),
        "models": str(models),
        "eval_seconds": round(time.time() - started, 1),
        "command": f"ponder eval prm-failures --models {models} --tier {tier} --problems {problems} "
        f"--samples {samples} --split {split}",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report
