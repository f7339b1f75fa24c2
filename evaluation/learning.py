"""The learning loop's measurements: each round's dev metrics while it trains, and the eval curve after.

Contract:
- `round_metrics(recipe, policy_dir, prm_dir)` is what `ponder train`'s iterate stage logs per round: the
  pair's foundation metrics (`evaluate_tier`) on the **dev** split, for the recipe's `[iterate.eval]`
  Countdown tiers, or on the dev split of its task file.
- `learning_results(run, out, tier, problems, samples)` measures every finished round of a run
  (OUT/rounds/r) on the **eval** split and writes `results/learning.json` (one entry per round, round 0
  the pair before the loop, with each stage's wall time) and its plot beside it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from evaluation.foundation import evaluate_tier
from server.engines import Engines
from server.settings import EngineSettings
from tasks.datasets import Task, load_task_file
from tasks.sets import load_dev_set, load_eval_set
from tasks.split import split_of_text


def start_pair(policy: Path, prm: Path) -> Engines:
    return Engines.start(EngineSettings(policy=str(policy), prm=str(prm)))


def dev_tasks(recipe: dict[str, Any]) -> dict[str, list[Task]]:
    """The dev tasks each round is measured on, by tier (or "file")."""
    table = recipe["iterate"].get("eval", {})
    if "tasks" in recipe["iterate"]:
        pool = [t for t in load_task_file(recipe["iterate"]["tasks"]) if split_of_text(t.prompt) == "dev"]
        return {"file": pool[: int(table.get("problems", len(pool)))]}
    per_tier = table.get("problems_per_tier", {"4": 100})
    return {str(tier): load_dev_set(int(tier), limit=int(count)) for tier, count in per_tier.items()}


def round_metrics(recipe: dict[str, Any], policy: Path, prm: Path) -> dict[str, Any]:
    table = recipe["iterate"].get("eval", {})
    samples, rollouts = int(table.get("samples", 16)), int(table.get("label_rollouts", 4))
    engines = start_pair(policy, prm)
    try:

        async def measure() -> dict[str, Any]:
            report: dict[str, Any] = {"split": "dev"}
            for tier, tasks in dev_tasks(recipe).items():
                if tasks:
                    report[tier] = await evaluate_tier(engines, tasks, samples, rollouts, seed=0)
            return report

        return asyncio.run(measure())
    finally:
        engines.shutdown()


def learning_entry(round_dir: Path, tier: int, problems: int, samples: int) -> dict[str, Any]:
    engines = start_pair(round_dir / "policy", round_dir / "prm")
    try:
        tasks = load_eval_set(tier, limit=problems)
        row = asyncio.run(evaluate_tier(engines, tasks, samples, label_rollouts=4, seed=0))
    finally:
        engines.shutdown()
    facts = (
        json.loads((round_dir / "metrics.json").read_text()) if (round_dir / "metrics.json").exists() else {}
    )
    return {
        "round": int(round_dir.name),
        "split": "eval",
        "tier": tier,
        "n_problems": row["n_problems"],
        "greedy_accuracy": row["greedy_accuracy"],
        "greedy_ci": row["greedy_ci"],
        f"pass_at_{samples}": row[f"pass_at_{samples}"],
        f"best_of_n_{samples}x_accuracy": row[f"best_of_{samples}_prm_accuracy"],
        "prm_auroc_final": row["prm_auroc_final"],
        "prm_auroc_per_problem": row["prm_auroc_per_problem"],
        "prm_auroc_per_problem_n": row["prm_auroc_per_problem_n"],
        "prm_auroc_steps": row["prm_auroc_steps"],
        "search_verified": facts.get("search_verified"),
        "search_solved": facts.get("search_solved"),
        "search_tasks": facts.get("search_tasks"),
        "search_yield": facts.get("search_yield"),  # problems with a verified sample per CPU minute
        "prm_kept": (facts.get("prm_gate") or {}).get("kept"),  # the gate's verdict (None: no gate)
        "stage_seconds": facts.get("stage_seconds", {}),
        "dev": dev_figures(facts, tier, samples),
    }


def dev_figures(facts: dict[str, Any], tier: int, samples: int) -> dict[str, Any] | None:
    """The round's figures on the dev split, as the loop measured them while it trained (metrics.json)."""
    row = facts.get("dev", {}).get(str(tier))
    if not row:
        return None
    names = {
        "n_problems": "n_problems",
        "greedy_accuracy": "greedy_accuracy",
        f"pass_at_{samples}": f"pass_at_{samples}",
        f"best_of_n_{samples}x_accuracy": f"best_of_{samples}_prm_accuracy",
        "prm_auroc_final": "prm_auroc_final",
        "prm_auroc_per_problem": "prm_auroc_per_problem",
    }
    return {"split": "dev", **{name: row.get(key) for name, key in names.items()}}


def learning_results(run: Path, out: Path, tier: int, problems: int, samples: int) -> dict[str, Any]:
    started = time.time()
    rounds = sorted(
        (d for d in (run / "rounds").iterdir() if (d / "done").exists()), key=lambda d: int(d.name)
    )
    if not rounds:
        raise SystemExit(
            f"{run}/rounds holds no finished round: run `ponder train ... --stages iterate` first"
        )
    entries = [learning_entry(d, tier, problems, samples) for d in rounds]
    stage_file = run / "stage_seconds.json"
    report = {
        "split": "eval",
        "tier": tier,
        "run": str(run),
        "rounds": entries,
        "training_stage_seconds": json.loads(stage_file.read_text()) if stage_file.exists() else {},
        "eval_seconds": round(time.time() - started, 1),
        "command": f"ponder eval learning --run {run} --tier {tier} --problems {problems} "
        f"--samples {samples}",
        "note": "best_of_n_16x_accuracy: the PRM's pick (highest final score) among the 16 samples at T=1.0 "
        "that pass@16 counts",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot_learning(report, out.with_suffix(".png"), samples)
    return report


def plot_learning(report: dict[str, Any], path: Path, samples: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, prm) = plt.subplots(1, 2, figsize=(10, 3.8))
    accuracy = (
        ("greedy_accuracy", "greedy"),
        (f"pass_at_{samples}", f"pass@{samples}"),
        (f"best_of_n_{samples}x_accuracy", f"Best-of-{samples} by PRM"),
    )
    for key, label in accuracy:
        plot_both_splits(acc, report["rounds"], key, label, scale=100.0)
    for key, label in (("prm_auroc_final", "final, pooled"), ("prm_auroc_per_problem", "final, per problem")):
        plot_both_splits(prm, report["rounds"], key, label, scale=1.0)
    acc.set_ylabel(f"tier {report['tier']} accuracy, %")
    prm.set_ylabel("PRM AUROC")
    for axis in (acc, prm):
        axis.set_xlabel("round (0 = before the loop)")
        axis.set_xticks([e["round"] for e in report["rounds"]])
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    fig.suptitle("ponder train --stages iterate: the learning loop (solid: eval, dashed: dev)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_both_splits(axis: Any, entries: list[dict[str, Any]], key: str, label: str, scale: float) -> None:
    """One figure per round on eval (solid) and, where the loop measured it, on dev (dashed, same colour)."""
    eval_points = [(e["round"], e.get(key)) for e in entries]
    dev_points = [(e["round"], (e.get("dev") or {}).get(key)) for e in entries]
    colour = None
    for points, style, split in ((eval_points, "-", "eval"), (dev_points, "--", "dev")):
        known = [(r, v) for r, v in points if v is not None]
        if known:
            line = axis.plot(
                [r for r, _ in known],
                [scale * v for _, v in known],
                linestyle=style,
                marker="o" if split == "eval" else ".",
                color=colour,
                label=f"{label}, {split}",
            )
            colour = line[0].get_color()
