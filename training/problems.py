"""Every problem list a training stage draws, named by stage: what the partition test checks.

Contract: `stage_problems(recipe)` rebuilds, from the recipe alone and with the functions the stages
themselves call, each list of Countdown problems training uses: the SFT traces' problems, the PRM data's
Monte-Carlo and exact-label problems, and the PRM's synthetic records' problems. `prm_refine`'s
counterfactual last steps are built on the PRM data's solutions, so its problems are those of the PRM
data. The learning loop's rounds each search one list and label another (`training.iterate`). A stage
that draws problems some new way must add its list here, or the partition test cannot see
it.
"""

from __future__ import annotations

from typing import Any

from tasks.countdown import Problem
from tasks.datasets import countdown_problem
from training.iterate import exact_label_tasks_of, label_tasks_of, round_tasks
from training.prm import synthetic_problems, synthetic_table
from training.prm_data import labelled_problems
from training.traces import sft_problems


def stage_problems(recipe: dict[str, Any]) -> dict[str, list[Problem]]:
    sft = recipe["sft"]
    per_tier = {int(k): int(v) for k, v in sft["problems_per_tier"].items()}
    lists = {
        "sft": [
            p
            for tier in sft_problems(per_tier, int(recipe["seed"]), sft.get("distinct", "order")).values()
            for p in tier
        ]
    }
    lists.update(labelled_problems(recipe))
    lists["prm_synthetic"] = synthetic_problems(*synthetic_table(recipe))
    for number in range(1, int(recipe.get("iterate", {}).get("rounds", 0)) + 1):
        draws = (("search", round_tasks), ("labels", label_tasks_of), ("exact_labels", exact_label_tasks_of))
        for name, tasks in draws:
            lists[f"iterate_{number}_{name}"] = [countdown_problem(t) for t in tasks(recipe, number)]
    return lists
