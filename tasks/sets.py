"""The shipped Countdown eval and dev sets: which problems they hold, and where the files live.

Contract: `split_problems(split, tier)` is fixed by its split's seed and draws only from that split's
buckets (`tasks.split`): the shipped `tasks/data/countdown-<tier>.jsonl` files are the eval split (final
reporting only), `countdown-<tier>-dev.jsonl` the dev split (every tuning decision). Training draws from
the train split alone, so neither is ever trained on, by meaning: the same numbers in another order are
the same problem. `write_split_sets()` (re)writes the files, ids `countdown-<tier>-<index:04d>` (eval) and
`countdown-<tier>-dev-<index:04d>`; `load_eval_set` / `load_dev_set(tier, limit)` read one back as `Task`s.
"""

from __future__ import annotations

from pathlib import Path

from tasks.countdown import Problem, generate
from tasks.datasets import Task, countdown_task, read_tasks, write_tasks
from tasks.split import Split

SPLIT_SEEDS: dict[Split, int] = {"eval": 20261123, "dev": 20261201}
EVAL_TIERS = (3, 4, 5)
SET_SIZE = 300
DATA_DIR = Path(__file__).parent / "data"


def split_problems(split: Split, tier: int, size: int = SET_SIZE) -> list[Problem]:
    return generate(tier, size, SPLIT_SEEDS[split], split, distinct="meaning")


def set_path(split: Split, tier: int) -> Path:
    return DATA_DIR / (f"countdown-{tier}.jsonl" if split == "eval" else f"countdown-{tier}-{split}.jsonl")


def eval_set_path(tier: int) -> Path:
    return set_path("eval", tier)


def write_split_sets() -> list[Path]:
    """Write the shipped eval and dev set of every tier in `EVAL_TIERS`; returns the paths written."""
    paths: list[Path] = []
    for split in ("eval", "dev"):
        prefix = "countdown-{tier}" if split == "eval" else "countdown-{tier}-dev"
        for tier in EVAL_TIERS:
            name = prefix.format(tier=tier)
            problems = split_problems(split, tier)
            tasks = [countdown_task(p, f"{name}-{index:04d}") for index, p in enumerate(problems)]
            write_tasks(set_path(split, tier), tasks)
            paths.append(set_path(split, tier))
    return paths


def load_eval_set(tier: int, limit: int | None = None) -> list[Task]:
    """The shipped eval set of `tier` (the first `limit` tasks when given)."""
    tasks = read_tasks(set_path("eval", tier))
    return tasks if limit is None else tasks[:limit]


def load_dev_set(tier: int, limit: int | None = None) -> list[Task]:
    """The shipped dev set of `tier` (the first `limit` tasks when given)."""
    tasks = read_tasks(set_path("dev", tier))
    return tasks if limit is None else tasks[:limit]
