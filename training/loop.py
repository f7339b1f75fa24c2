"""One small training loop shared by the policy (SFT) and PRM stages.

Contract: `fit` runs AdamW with linear warm-up and cosine decay for a fixed number of optimizer steps over
an in-memory list of examples (reshuffled each epoch), with a progress bar, and appends one JSON line per
logging interval to the run's metrics log. The stage supplies the loss.

Resumable: given a `resume` path, `fit` saves the model, the optimizer and the step there every
`save_every_s` seconds, and a later call with the same path (after an interrupted run) picks up at that
step with the same batch order, so a long stage spans sessions. The file is removed when the fit ends.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    targets: list[float]  # one per position; IGNORE where the loss does not look


@dataclass(frozen=True)
class FitConfig:
    steps: int
    batch_size: int
    lr: float
    warmup: int = 100
    weight_decay: float = 0.01
    log_every: int = 50
    seed: int = 0

    @classmethod
    def from_table(cls, table: dict[str, Any], seed: int) -> FitConfig:
        """A recipe stage's optimisation settings (`steps`, `batch_size`, `lr`, `warmup`)."""
        return cls(
            steps=int(table["steps"]),
            batch_size=int(table["batch_size"]),
            lr=float(table["lr"]),
            warmup=int(table["warmup"]),
            seed=seed,
        )


LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class MetricsLog:
    """Appends JSON lines to `<run>/metrics.jsonl`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **fields: Any) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"time": round(time.time(), 3), **fields}) + "\n")


def collate(examples: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    targets = torch.full((len(examples), width), float(IGNORE))
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        mask[row, :n] = 1
        targets[row, :n] = torch.tensor(example.targets, dtype=torch.float)
    return ids, mask, targets


def learning_rate(step: int, config: FitConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def batches(examples: list[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    """Endless shuffled batches; examples of similar length are grouped to waste little padding."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        chunk = batch_size * 50
        for start in range(0, len(order), chunk):
            block = sorted(order[start : start + chunk], key=lambda i: len(examples[i].input_ids))
            groups = [block[i : i + batch_size] for i in range(0, len(block), batch_size)]
            rng.shuffle(groups)
            for group in groups:
                yield [examples[i] for i in group]


def fit(
    model: torch.nn.Module,
    examples: list[Example],
    loss_fn: LossFn,
    config: FitConfig,
    pad_id: int,
    log: MetricsLog,
    stage: str,
    resume: Path | None = None,
    save_every_s: float = 300.0,
) -> float:
    """Train `model` in place; returns the mean loss over the last logging interval."""
    torch.manual_seed(config.seed)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    stream = batches(examples, config.batch_size, config.seed)
    first = restore(resume, model, optimizer, stream)
    if first:
        log.write(stage=stage, resumed_at_step=first)
    recent: list[float] = []
    mean = float("nan")
    saved_at = time.monotonic()
    progress = tqdm(range(first, config.steps), desc=stage, unit="step", initial=first, total=config.steps)
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        ids, mask, targets = collate(next(stream), pad_id)
        loss = loss_fn(model, ids, mask, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        recent.append(loss.item())
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            mean = sum(recent) / len(recent)
            progress.set_postfix(loss=f"{mean:.4f}")
            log.write(stage=stage, step=step + 1, loss=mean, lr=learning_rate(step, config))
            recent = []
        if resume is not None and time.monotonic() - saved_at > save_every_s:
            save_resume(resume, model, optimizer, step + 1)
            saved_at = time.monotonic()
    model.eval()
    if resume is not None:
        resume.unlink(missing_ok=True)
    return mean


def resume_path(out: Path, stage: str) -> Path:
    """Where a stage's interrupted fit is kept, in the run's output directory."""
    return out / f"{stage}.resume.pt"


def save_resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Written to a temporary name first, so an interruption mid-write leaves the previous state."""
    partial = path.with_suffix(".partial")
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}, partial)
    partial.replace(path)


def restore(
    path: Path | None, model: torch.nn.Module, optimizer: torch.optim.Optimizer, stream: Iterator[Any]
) -> int:
    """The step to start at: 0, or the saved step of an interrupted fit (model, optimizer and batch
    stream brought to it)."""
    if path is None or not path.exists():
        return 0
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for _ in range(int(state["step"])):
        next(stream)
    return int(state["step"])
