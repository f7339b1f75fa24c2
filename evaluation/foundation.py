"""Held-out quality of a policy/PRM pair and the policy engine's raw throughput, on the real vLLM engines.

Contract: `evaluate_pair` runs, per tier of a split's set (eval by default; dev for tuning), greedy
decoding, `samples` sampled solutions at temperature 1.0 (mean accuracy and oracle pass@k by the exact
checker), Best-of-k by the PRM among those samples (the highest final score), the PRM's AUROC at
separating correct from incorrect final solutions (last-step score) pooled over all problems and as the
mean per-problem AUROC (ranking one problem's samples, what selection needs; problems with both kinds),
and its AUROC at predicting Math-Shepherd step labels (hard label: any of K rollouts from that step
succeeds) on fresh rollouts. `evaluate_tier` takes any graded tasks (a math file's too).
`engine_throughput` is the "physical limit" benchmark: generated tokens per second for 16 prompts x
n=16 samples.
`prm_throughput` is the PRM's: scored tokens per second reading those 256 solutions in one call.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from tqdm import tqdm

from engines.base import PolicyEngine, Sampling
from server.engines import Engines
from server.settings import EngineSettings
from tasks.datasets import Task, countdown_problem
from tasks.sets import load_dev_set, load_eval_set
from verifiers.aggregate import aggregate
from verifiers.montecarlo import Labelled, label_problems, label_tasks
from verifiers.outcome import grade
from verifiers.prm import Candidate

from .metrics import auroc, wilson_interval

T = TypeVar("T")
CHUNK = 50  # problems per engine call: a progress bar that moves, and bounded in-flight requests


async def _solutions(
    engines: Engines, tasks: Sequence[Task], n: int, sampling: Sampling, tag: str
) -> list[list[tuple[tuple[int, ...], bool]]]:
    """For each task, n (token ids, correct) pairs."""
    rows: list[list[tuple[tuple[int, ...], bool]]] = []
    for start in tqdm(range(0, len(tasks), CHUNK), desc=tag, unit="chunk", leave=False):
        chunk = tasks[start : start + CHUNK]
        prompts = [engines.policy.encode(t.prompt) for t in chunk]
        generation = await engines.policy.rollout(prompts, n, sampling, f"{tag}-{start}")
        for task, row in zip(chunk, generation.continuations, strict=True):
            rows.append([(c.token_ids, grade(task, c.text)) for c in row])
    return rows


async def _final_scores_of_samples(
    engines: Engines, tasks: Sequence[Task], rows: list[list[tuple[tuple[int, ...], bool]]]
) -> list[list[float | None]]:
    """`final_scores_of_candidates` of sampled solutions given as (token ids, correct) rows per task,
    returned in the same rows: each becomes a candidate of its task's prompt and its steps."""
    candidates = [
        Candidate(
            tuple(engines.policy.encode(task.prompt)),
            tuple(steps),
            question=task.prompt,
            step_texts=tuple(engines.policy.decode(step) for step in steps),
        )
        for task, row in zip(tasks, rows, strict=True)
        for ids, _ in row
        for steps in [engines.policy.split_steps(ids)]
    ]
    flat = iter(await final_scores_of_candidates(engines, candidates))
    return [[next(flat) for _ in row] for row in rows]


async def final_scores_of_candidates(engines: Engines, candidates: Sequence[Candidate]) -> list[float | None]:
    """The PRM's last-step score of each candidate, a few hundred per engine call; None for one the PRM
    cannot read (a sample that filled the policy's context leaves no room for its step tags)."""
    fits = [
        i
        for i, c in enumerate(candidates)
        if c.steps and engines.prm.scored_length(c) <= engines.prm.max_model_len
    ]
    scores: list[float | None] = [None] * len(candidates)
    for start in range(0, len(fits), CHUNK * 4):
        chunk = fits[start : start + CHUNK * 4]
        result = await engines.prm.score([candidates[i] for i in chunk], f"eval-prm-{start}")
        for i, row in zip(chunk, result.step_scores, strict=True):
            scores[i] = aggregate(row, "last")
    return scores


async def _step_label_auroc(
    engines: Engines, tasks: Sequence[Task], rollouts: int, seed: int
) -> float | None:
    scores: list[float] = []
    labels: list[bool] = []
    for start in tqdm(range(0, len(tasks), CHUNK), desc="step labels", unit="chunk", leave=False):
        sampling = Sampling(temperature=1.0, seed=seed + start, logprobs=False)
        chunk = tasks[start : start + CHUNK]
        labelled: Sequence[Labelled]
        if all(t.kind == "countdown" for t in chunk):
            problems = [countdown_problem(t) for t in chunk]
            labelled = await label_problems(engines.policy, problems, 1, rollouts, sampling, f"lab-{start}")
        else:
            labelled = await label_tasks(engines.policy, chunk, 1, rollouts, sampling, f"lab-{start}")
        items = [i for i in labelled if i.steps]
        candidates = [
            Candidate(
                tuple(engines.policy.encode(item.prompt)),
                tuple(tuple(engines.policy.encode_continuation(s)) for s in item.steps),
                question=item.prompt,
                step_texts=tuple(item.steps),
            )
            for item in items
        ]
        readable_items = [
            (item, c)
            for item, c in zip(items, candidates, strict=True)
            if engines.prm.scored_length(c) <= engines.prm.max_model_len
        ]
        if not readable_items:
            continue
        result = await engines.prm.score([c for _, c in readable_items], f"lab-prm-{start}")
        for (item, _), step_scores in zip(readable_items, result.step_scores, strict=True):
            for score, label in zip(step_scores, item.soft_labels, strict=True):
                if label is not None:
                    scores.append(score)
                    labels.append(label > 0)
    return auroc(scores, labels)


def readable(scores: Sequence[float | None], labels: Sequence[T]) -> tuple[list[float], list[T]]:
    """The scores and labels of the solutions the PRM could read."""
    pairs = [(s, ok) for s, ok in zip(scores, labels, strict=True) if s is not None]
    return [s for s, _ in pairs], [ok for _, ok in pairs]


def per_problem_auroc(
    scores: Sequence[Sequence[float | None]], correct: Sequence[Sequence[bool]]
) -> dict[str, Any]:
    """The mean over problems of the AUROC among one problem's own samples (what picking one of them
    needs), over the problems with both a correct and a wrong readable sample; and how many those are."""
    values = [auroc(*readable(row, oks)) for row, oks in zip(scores, correct, strict=True)]
    defined = [v for v in values if v is not None]
    return {
        "prm_auroc_per_problem": statistics.fmean(defined) if defined else None,
        "prm_auroc_per_problem_n": len(defined),
    }


def best_of_n_accuracy(scores: Sequence[Sequence[float | None]], correct: Sequence[Sequence[bool]]) -> float:
    """The share of problems whose sample with the highest final PRM score is correct (an unreadable
    sample is never picked; first of equals)."""
    hits = 0
    for row, oks in zip(scores, correct, strict=True):
        ranked = [(s, ok) for s, ok in zip(row, oks, strict=True) if s is not None]
        hits += bool(ranked) and max(ranked, key=lambda pair: pair[0])[1]
    return hits / len(scores) if scores else 0.0


async def evaluate_tier(
    engines: Engines, tasks: Sequence[Task], samples: int, label_rollouts: int, seed: int
) -> dict[str, Any]:
    greedy = await _solutions(
        engines, tasks, 1, Sampling(temperature=0.0, seed=seed, logprobs=False), "greedy"
    )
    sampled = await _solutions(
        engines, tasks, samples, Sampling(temperature=1.0, seed=seed, logprobs=False), "sampled"
    )
    correct_greedy = sum(row[0][1] for row in greedy)
    correct = [[ok for _, ok in row] for row in sampled]
    flat_correct = [ok for row in correct for ok in row]
    scores = await _final_scores_of_samples(engines, tasks, sampled)
    n = len(tasks)
    greedy_ci = wilson_interval(correct_greedy, n)
    return {
        "n_problems": n,
        "greedy_accuracy": correct_greedy / n,
        "greedy_ci": [round(greedy_ci[0], 4), round(greedy_ci[1], 4)],
        "sampled_accuracy": sum(flat_correct) / len(flat_correct),
        f"pass_at_{samples}": sum(any(row) for row in correct) / n,
        f"best_of_{samples}_prm_accuracy": best_of_n_accuracy(scores, correct),
        "prm_auroc_final": auroc(*readable([s for row in scores for s in row], flat_correct)),
        **per_problem_auroc(scores, correct),
        "prm_auroc_steps": await _step_label_auroc(engines, tasks, label_rollouts, seed + 7),
    }


async def engine_throughput(
    policy: PolicyEngine, prompts: int = 16, n: int = 16, repeats: int = 3
) -> dict[str, Any]:
    """Generated tokens per second, 16 prompts x n=16 full rollouts at temperature 1.0, median of repeats."""
    problems = [countdown_problem(t) for t in load_eval_set(4, limit=prompts)]
    ids = [policy.encode(p.prompt()) for p in problems]
    await policy.rollout(ids[:2], 2, Sampling(seed=0, logprobs=False), "bench-warmup")
    rates, tokens = [], []
    for r in range(repeats):
        started = time.perf_counter()
        generation = await policy.rollout(
            ids, n, Sampling(temperature=1.0, seed=100 + r, logprobs=False), f"bench-{r}"
        )
        elapsed = time.perf_counter() - started
        rates.append(generation.usage.generated_tokens / elapsed)
        tokens.append(generation.usage.generated_tokens)
    return {
        "engine_generated_tokens_per_s": round(statistics.median(rates), 1),
        "engine_benchmark": {
            "prompts": prompts,
            "n": n,
            "repeats": repeats,
            "generated_tokens": tokens,
            "tokens_per_s": [round(x, 1) for x in rates],
        },
    }


async def sampled_candidates(engines: Engines, prompts: int, n: int) -> list[Candidate]:
    """n policy solutions (T=1.0, fixed seed) for each of the first `prompts` held-out tier-4 problems,
    split into steps as the PRM reads them."""
    problems = [countdown_problem(t) for t in load_eval_set(4, limit=prompts)]
    ids = [engines.policy.encode(p.prompt()) for p in problems]
    sampling = Sampling(temperature=1.0, seed=7, logprobs=False)
    generation = await engines.policy.rollout(ids, n, sampling, "bench-prm-samples")
    return [
        Candidate(tuple(prompt), tuple(engines.policy.split_steps(c.token_ids)))
        for prompt, row in zip(ids, generation.continuations, strict=True)
        for c in row
    ]


async def prm_throughput(
    engines: Engines, prompts: int = 16, n: int = 16, repeats: int = 3
) -> dict[str, Any]:
    """Scored tokens per second: the PRM reading 16 prompts x n=16 sampled solutions at once, median of
    repeats after one unmeasured pass (the CPU backend's first calls pay one-off kernel set-up)."""
    candidates = await sampled_candidates(engines, prompts, n)
    await engines.prm.score(candidates, "bench-prm-warmup")
    rates, tokens = [], []
    for r in range(repeats):
        started = time.perf_counter()
        scores = await engines.prm.score(candidates, f"bench-prm-{r}")
        rates.append(scores.usage.scored_tokens / (time.perf_counter() - started))
        tokens.append(scores.usage.scored_tokens)
    return {
        "prm_scored_tokens_per_s": round(statistics.median(rates), 1),
        "prm_benchmark": {
            "candidates": len(candidates),
            "repeats": repeats,
            "scored_tokens": tokens,
            "tokens_per_s": [round(x, 1) for x in rates],
        },
    }


async def evaluate_pair(
    engines: Engines,
    tiers: Sequence[int],
    problems_per_tier: int,
    samples: int,
    label_rollouts: int,
    seed: int = 0,
    benchmark: bool = True,
    split: Literal["eval", "dev"] = "eval",
) -> dict[str, Any]:
    report: dict[str, Any] = {"split": split}
    load = load_eval_set if split == "eval" else load_dev_set
    for tier in tiers:
        tasks = load(tier, limit=problems_per_tier)
        report[str(tier)] = await evaluate_tier(engines, tasks, samples, label_rollouts, seed)
        tqdm.write(f"tier {tier}: {json.dumps(report[str(tier)])}")
    if benchmark:
        report.update(await engine_throughput(engines.policy))
    return report


def card_metrics(recipe: dict[str, Any], out: Path) -> dict[str, Any]:
    """Quick held-out metrics of a freshly trained pair (`ponder train`'s card stage records them in both
    checkpoints' cards), also written to OUT/eval.json. On the **dev** split: training-time checks are
    tuning, and the eval split is kept for `ponder eval foundation`'s report."""
    table = recipe["eval"]
    engines = Engines.start(EngineSettings(models=out))
    try:
        report = asyncio.run(
            evaluate_pair(
                engines,
                (3, 4, 5),
                int(table["problems_per_tier"]),
                int(table["samples"]),
                label_rollouts=4,
                benchmark=bool(table.get("benchmark", True)),
                split="dev",
            )
        )
    finally:
        engines.shutdown()
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def foundation_markdown(report: dict[str, Any]) -> str:
    """The report as the README's table: one row per tier, the split named."""
    tiers = sorted(k for k in report if k.isdigit())
    pass_key = next((k for k in report[tiers[0]] if k.startswith("pass_at_")), "pass_at_16") if tiers else ""
    pick_key = pass_key.replace("pass_at_", "best_of_") + "_prm_accuracy"
    lines = [
        f"Split: **{report.get('split', 'eval')}**.",
        "",
        "| tier | problems | greedy accuracy (95% CI) | sampled accuracy (T=1) "
        f"| {pass_key.replace('_at_', '@')} | Best-of-{pass_key.removeprefix('pass_at_')} by PRM "
        "| PRM AUROC, final (pooled) | PRM AUROC, final (per problem, n) | PRM AUROC, steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    for tier in tiers:
        row = report[tier]
        low, high = row["greedy_ci"]
        lines.append(
            f"| {tier} numbers | {row['n_problems']} "
            f"| {pct(row['greedy_accuracy'])} ({pct(low)}-{pct(high)}) "
            f"| {pct(row['sampled_accuracy'])} | {pct(row.get(pass_key))} | {pct(row.get(pick_key))} "
            f"| {num(row['prm_auroc_final'])} "
            f"| {num(row.get('prm_auroc_per_problem'))} ({row.get('prm_auroc_per_problem_n', 'n/a')}) "
            f"| {num(row['prm_auroc_steps'])} |"
        )
    if "engine_generated_tokens_per_s" in report:
        bench = report["engine_benchmark"]
        lines.append("")
        lines.append(
            "Raw policy engine throughput: "
            f"**{report['engine_generated_tokens_per_s']:.0f} generated tokens/s** "
            f"({bench['prompts']} prompts x n={bench['n']}, median of {bench['repeats']})."
        )
    return "\n".join(lines) + "\n"


def foundation_results(
    models: Path,
    out: Path,
    problems_per_tier: int,
    samples: int,
    label_rollouts: int,
    split: Literal["eval", "dev"] = "eval",
) -> dict[str, Any]:
    """`ponder eval foundation`: the committed results/foundation.json."""
    engines = Engines.start(EngineSettings(models=models))
    try:
        started = time.time()
        report = asyncio.run(
            evaluate_pair(engines, (3, 4, 5), problems_per_tier, samples, label_rollouts, split=split)
        )
    finally:
        engines.shutdown()
    report["models"] = str(models)
    report["eval_seconds"] = round(time.time() - started, 1)
    report["command"] = (
        f"ponder eval foundation --models {models} --problems {problems_per_tier} --samples {samples} "
        f"--label-rollouts {label_rollouts} --split {split}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(foundation_markdown(report))
    return report
