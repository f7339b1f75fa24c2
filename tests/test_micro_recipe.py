"""The whole training pipeline, end to end, in its own process: the micro recipe (quality irrelevant)."""

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
