"""`training.loop.fit` resumes an interrupted fit where it stopped, ending where an uninterrupted one ends."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.loop import Example, FitConfig, LossFn, MetricsLog, fit, resume_path

pytestmark = pytest.mark.training


class Interrupted(Exception):
    pass


def examples() -> list[Example]:
    return [Example([i % 7, (i * 3) % 7, (i * 5) % 7], [float((i * 2) % 7)] * 3) for i in range(40)]


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(7, 8), torch.nn.Linear(8, 7))


def loss_stopping_after(calls: int | None) -> LossFn:
    seen = [0]

    def loss(
        net: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        seen[0] += 1
        if calls is not None and seen[0] > calls:
            raise Interrupted
        logits = net(ids)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.long().flatten())

    return loss


def test_an_interrupted_fit_resumes_to_the_same_weights(tmp_path: Path) -> None:
    config = FitConfig(steps=12, batch_size=8, lr=1e-2, warmup=2, log_every=4)
    log = MetricsLog(tmp_path / "metrics.jsonl")
    straight = model()
    fit(straight, examples(), loss_stopping_after(None), config, 0, log, "s")

    resume = resume_path(tmp_path, "s")
    broken = model()
    with pytest.raises(Interrupted):  # saves after every step, stops in step 8
        fit(broken, examples(), loss_stopping_after(7), config, 0, log, "s", resume, save_every_s=0.0)
    assert torch.load(resume, weights_only=True)["step"] == 7

    resumed = model()  # a fresh process: new weights, restored from the file
    fit(resumed, examples(), loss_stopping_after(None), config, 0, log, "s", resume, save_every_s=0.0)
    assert not resume.exists()
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(
        '"resumed_at_step": 7' in line for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    )
