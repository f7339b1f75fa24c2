"""The whole training pipeline, end to end, in its own process: the micro recipe (quality irrelevant),
the learning loop's round included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.training


def test_micro_recipe_produces_checkpoints_vllm_serves(tmp_path: Path) -> None:
    out = tmp_path / "micro"
    result = subprocess.run(
        [sys.executable, "-m", "ponder.cli", "train", "--recipe", "micro", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for name in ("policy", "prm"):
        directory = out / name
        for file in (
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "generation_config.json",
            "ponder_card.json",
        ):
            assert (directory / file).exists(), f"{name}/{file} missing"
        card = json.loads((directory / "ponder_card.json").read_text())
        assert card["kind"] == name and card["recipe"]["name"] == "micro"
        # the card stage loaded both checkpoints in vLLM and measured them
        assert set(card["metrics"]["4"]) >= {"greedy_accuracy", "sampled_accuracy", "prm_auroc_final"}
    records = [json.loads(line) for line in (out / "prm_data.jsonl").read_text().splitlines()]
    assert records and all({"prompt", "completions", "labels"} <= set(r) for r in records)
    assert all(len(r["labels"]) == len(r["completions"]) for r in records)
    exact = [json.loads(line) for line in (out / "prm_data_exact.jsonl").read_text().splitlines()]
    assert exact and all(len(r["soft_labels"]) == len(r["completions"]) for r in exact)
    stages = {json.loads(line).get("stage") for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert {"policy_sft", "prm", "prm_refine"} <= stages
    refine = json.loads((out / "prm" / "ponder_card.json").read_text())["refine"]
    # the micro policy rarely keeps a legal prefix, so counterfactuals may be few or none here
    assert refine["sequences"] > 0 and refine["recipe"]["steps"] == 4
    assert (out / "training.png").stat().st_size > 1000
    assert_the_loop_ran_one_round(out)
    assert_the_eval_curve_measures_every_round(out, tmp_path / "learning.json")


def assert_the_loop_ran_one_round(out: Path) -> None:
    """Round 0 (the pair before the loop) and round 1 are measured on dev and logged; round 1 searched
    its tasks through the Controller, fine-tuned, relabelled and refitted; OUT serves round 1's pair."""
    for number in (0, 1):
        record = json.loads((out / "rounds" / str(number) / "metrics.json").read_text())
        assert record["round"] == number and record["dev"]["split"] == "dev"
        assert {"greedy_accuracy", "pass_at_4", "best_of_4_prm_accuracy", "prm_auroc_per_problem"} <= set(
            record["dev"]["4"]
        )
    searched = [json.loads(line) for line in (out / "rounds/1/search.jsonl").read_text().splitlines()]
    assert len(searched) == 32 and all(r["solution_ids"] is not None for r in searched if "refused" not in r)
    assert all(not r["verified"] or r["finished"] for r in searched)
    assert (out / "rounds/1/prm_data.jsonl").read_text()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in logged if r.get("stage") == "iterate"] == [0, 1]
    assert {"iterate_policy_1", "iterate_prm_1"} <= {r.get("stage") for r in logged}
    for name in ("policy", "prm"):
        served = (out / name / "model.safetensors").read_bytes()
        assert served == (out / "rounds/1" / name / "model.safetensors").read_bytes()
        assert served != (out / "rounds/0" / name / "model.safetensors").read_bytes()
        card = json.loads((out / name / "ponder_card.json").read_text())
        assert [r["round"] for r in card["rounds"]] == [0, 1] and card["loop"][-1]["round"] == 1
    seconds = json.loads((out / "stage_seconds.json").read_text())
    assert {"policy", "prm_data", "prm", "prm_refine", "iterate"} <= set(seconds)


def assert_the_eval_curve_measures_every_round(run: Path, out: Path) -> None:
    """`ponder eval learning` measures rounds 0 and 1 on the eval split, beside each round's dev figures."""
    command = [sys.executable, "-m", "ponder.cli", "eval", "learning", "--run", str(run), "--out", str(out)]
    command += ["--tier", "4", "--problems", "4", "--samples", "4"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["split"] == "eval" and [e["round"] for e in report["rounds"]] == [0, 1]
    for entry in report["rounds"]:
        assert entry["split"] == "eval" and entry["n_problems"] == 4
        assert 0.0 <= entry["greedy_accuracy"] <= entry["pass_at_4"] <= 1.0
        assert {"best_of_n_4x_accuracy", "prm_auroc_final", "prm_auroc_per_problem"} <= set(entry)
        assert entry["dev"]["split"] == "dev" and entry["dev"]["n_problems"] == 8
    assert report["rounds"][1]["stage_seconds"]["search"] > 0
    assert out.with_suffix(".png").stat().st_size > 1000
