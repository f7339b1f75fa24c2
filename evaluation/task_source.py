"""Which problems a search sweep runs on, and how its reports name them.

Contract:
- `countdown_source(tier, problems, split)` is a shipped Countdown set of the eval split (reporting) or
  the dev split (tuning), the first `problems` (None: all); its `meta` is `{"tier": tier, "split":
  split}` (a sweep from before the partition has no split: read back as eval).
- `file_source(path, problems, split)` is a user's JSONL file, in the project's task-set format or GSM8K /
  MATH style (`tasks.datasets.load_task_file` tells them apart); its `meta` names the file as given, its
  format, the SHA-256 of its bytes (so a report says exactly which content it measured) and the `split`
  label (dev, test, ...; None when not given).
- `source_of(meta, problems)` re-opens what a finished sweep's meta names (for `--auto-only`), refusing a
  task file whose content hash has changed since.
- `described` is how auto's table records what it was fitted on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.datasets import Task, load_task_file, task_file_format
from tasks.sets import load_dev_set, load_eval_set

SHORT_HASH = 12  # hex digits of the SHA-256 shown in the markdown header


@dataclass(frozen=True)
class TaskSource:
    tasks: list[Task]
    meta: dict[str, Any]  # what the reports' meta says about the problems (before n_problems)
    described: str  # e.g. "300 tier-4 eval problems"


def countdown_source(tier: int, problems: int | None, split: str = "eval") -> TaskSource:
    """A shipped Countdown set: the eval split (reporting) or the dev split (tuning, auto's table)."""
    if split not in ("eval", "dev"):
        raise ValueError(f"a Countdown set's split is eval or dev, got {split!r}")
    tasks = (load_eval_set if split == "eval" else load_dev_set)(tier, limit=problems)
    return TaskSource(tasks, {"tier": tier, "split": split}, f"{len(tasks)} tier-{tier} {split} problems")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_source(path: Path, problems: int | None, split: str | None = None) -> TaskSource:
    tasks = load_task_file(path)
    tasks = tasks if problems is None else tasks[:problems]
    if not tasks:
        raise ValueError(f"{path}: no tasks to evaluate")
    digest = file_sha256(path)
    meta = {
        "task_file": str(path),
        "task_format": task_file_format(path),
        "task_sha256": digest,
        "split": split,
    }
    where = f"{path.name} (sha256 {digest[:SHORT_HASH]}" + (f", split {split})" if split else ")")
    return TaskSource(tasks, meta, f"{len(tasks)} problems of {where}")


def source_of(meta: dict[str, Any], problems: int | None) -> TaskSource:
    """The problems a finished sweep with this meta ran on."""
    if "task_file" not in meta:
        return countdown_source(int(meta["tier"]), problems, meta.get("split") or "eval")
    path = Path(meta["task_file"])
    if file_sha256(path) != meta["task_sha256"]:
        raise ValueError(f"{path} has changed since the sweep (its SHA-256 differs from the meta's)")
    return file_source(path, problems, meta.get("split"))
