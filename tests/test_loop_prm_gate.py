"""The loop's PRM gate (`training.iterate.gate_prm`): a refitted PRM is kept only when it ranks the new
policy's dev solutions at least as well as the PRM before it; otherwise the round serves the previous
PRM, keeps the refit beside it, and a rerun decides nothing again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.iterate import LoopHooks, gate_prm, ranking_score


def checkpoint(path: Path, name: str) -> None:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_text(name)
    (path / "done").write_text("")


def hooks_scoring(per_problem: dict[str, float], calls: list[str]) -> LoopHooks:
    def measure(recipe: dict[str, Any], policy: Path, prm: Path) -> dict[str, Any]:
        name = (prm / "model.safetensors").read_text()
        calls.append(name)
        return {"split": "dev", "4": {"prm_auroc_per_problem": per_problem[name], "greedy_accuracy": 0.3}}

    def no_engines(policy: Path, prm: Path) -> Any:
        raise AssertionError("the gate measures through the hook only")

    return LoopHooks(start_pair=no_engines, measure=measure)


def round_dirs(tmp_path: Path) -> tuple[Path, Path]:
    before, here = tmp_path / "rounds/0", tmp_path / "rounds/1"
    checkpoint(before / "prm", "previous")
    checkpoint(here / "prm", "refit")
    checkpoint(here / "policy", "policy")
    return before, here


@pytest.mark.parametrize(("refit", "kept"), [(0.70, "previous"), (0.85, "refit"), (0.80, "refit")])
def test_the_gate_keeps_the_prm_that_ranks_better(tmp_path: Path, refit: float, kept: str) -> None:
    before, here = round_dirs(tmp_path)
    calls: list[str] = []
    gate = gate_prm({}, before, here, hooks_scoring({"refit": refit, "previous": 0.80}, calls))
    metrics = gate["dev"][gate["kept"]]
    assert sorted(calls) == ["previous", "refit"]
    assert gate["kept"] == kept
    assert (here / "prm/model.safetensors").read_text() == kept
    assert metrics["4"]["prm_auroc_per_problem"] == (refit if kept == "refit" else 0.80)
    assert (here / "prm_refit").exists() == (kept == "previous")
    assert json.loads((here / "prm_gate.json").read_text())["kept"] == kept
    # a rerun (an interrupted round) reads the decision instead of measuring again
    assert gate_prm({}, before, here, hooks_scoring({}, calls)) == gate
    assert len(calls) == 2


def test_an_interrupted_swap_is_finished_on_rerun(tmp_path: Path) -> None:
    before, here = round_dirs(tmp_path)
    calls: list[str] = []
    gate_prm({}, before, here, hooks_scoring({"refit": 0.5, "previous": 0.9}, calls))
    for item in (here / "prm").iterdir():
        item.unlink()
    (here / "prm").rmdir()
    gate_prm({}, before, here, hooks_scoring({}, calls))
    assert (here / "prm/model.safetensors").read_text() == "previous"
    assert (here / "prm_refit/model.safetensors").read_text() == "refit"


def test_the_ranking_score_is_the_mean_per_problem_auroc_of_the_tiers() -> None:
    assert ranking_score(
        {"split": "dev", "4": {"prm_auroc_per_problem": 0.8}, "5": {"prm_auroc_per_problem": 0.6}}
    ) == pytest.approx(0.7)
    assert ranking_score({"4": {"prm_auroc_per_problem": None}}) == -1.0
