"""The held-out Countdown evaluation sets: which problems they hold, and where the shipped files live.

Contract: `eval_problems(tier)` is fixed by `EVAL_SEED` and is what the shipped
`tasks/data/countdown-<tier>.jsonl` files contain; training excludes all of them. `write_eval_sets()`
(re)writes those files, ids `countdown-<tier>-<index:04d>`; `load_eval_set(tier, limit)` reads one back
as `Task`s, in order.
"""

from __future__ import annotations

from pathlib import Path

from tasks.countdown import Problem, generate
from tasks.datasets import Task, countdown_task, read_tasks, write_tasks

EVAL_SEED = 20261123
EVAL_TIERS = (3, 4, 5)
EVAL_SIZE = 300
DATA_DIR = Path(__file__).parent / "data"


def eval_problems(tier_list: tuple[int, ...] = EVAL_TIERS, size: int = EVAL_SIZE) -> set[Problem]:
    return {p for tier in tier_list for p in generate(tier, size, EVAL_SEED)}


def eval_set_path(tier: int) -> Path:
    return DATA_DIR / f"countdown-{tier}.jsonl"


def write_eval_sets() -> list[Path]:
    """Write the shipped eval set of every tier in `EVAL_TIERS`; returns the paths written."""
    paths: list[Path] = []
    for tier in EVAL_TIERS:
        problems = generate(tier, EVAL_SIZE, EVAL_SEED)
        tasks = [
            countdown_task(problem, f"countdown-{tier}-{index:04d}") for index, problem in enumerate(problems)
        ]
        write_tasks(eval_set_path(tier), tasks)
        paths.append(eval_set_path(tier))
    return paths


def load_eval_set(tier: int, limit: int | None = None) -> list[Task]:
    """The shipped eval set of `tier` (the first `limit` tasks when given)."""
    tasks = read_tasks(eval_set_path(tier))
    return tasks if limit is None else tasks[:limit]
