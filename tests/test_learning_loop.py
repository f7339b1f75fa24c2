"""The learning loop on a user's own pair and task file: a tiny random-weight Qwen2 policy (`--base`), a tiny
Math-Shepherd-format PRM (`--prm-base`) and a math JSONL graded by math-verify. One round runs end to end
on vLLM; the refitted PRM keeps its public format, so `ponder serve --prm-format math-shepherd` reads it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import math_problems, math_shepherd_prm, qwen2_policy

from engines.spec import PolicySpec, PRMSpec, read_prm_spec, write_spec
from tasks.split import split_of_text
from training.iterate import round_tasks
from training.pipeline import load_recipe

pytestmark = pytest.mark.training

RECIPE = """
name = "math-loop"
seed = 0

[iterate]
rounds = 1
tasks = "{tasks}"
problems_per_tier = {{ file = 6 }}
label_problems_per_tier = {{ file = 3 }}
strategy = "best_of_n"
budget = 200
temperature = 1.0
label_samples = 1
label_rollouts = 1

[iterate.sft]
steps = 2
batch_size = 4
lr = 1e-4
warmup = 1

[iterate.prm]
steps = 2
batch_size = 4
lr = 1e-4
warmup = 1

[iterate.eval]
problems = 3
samples = 2
label_rollouts = 1
"""


def write_math_tasks(path: Path) -> None:
    with path.open("w") as handle:
        for question, steps in math_problems(80):
            answer = steps[-1].split("boxed{")[1].split("}")[0]
            handle.write(
                json.dumps({"question": question, "answer": f"{' '.join(steps)}\n#### {answer}"}) + "\n"
            )


@pytest.fixture(scope="module")
def user_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("user-pair")
    policy = qwen2_policy(root / "policy")
    write_spec(policy, PolicySpec(step_delimiter="\n\n", max_step_tokens=16, max_solution_tokens=48))
    prm = math_shepherd_prm(root / "prm")
    write_spec(prm, PRMSpec(format="math-shepherd", step_tag="ки", good_token="+", bad_token="-"))
    tasks = root / "math.jsonl"
    write_math_tasks(tasks)
    recipe = root / "recipe.toml"
    recipe.write_text(RECIPE.format(tasks=tasks))
    return policy, prm, recipe


def test_a_task_files_loop_searches_its_train_split_only(user_pair: tuple[Path, Path, Path]) -> None:
    recipe = load_recipe(str(user_pair[2]))
    tasks = round_tasks(recipe, 1)
    assert len(tasks) == 6 and {split_of_text(t.prompt) for t in tasks} == {"train"}
    assert {t.kind for t in tasks} == {"math"}


def test_one_round_on_a_users_own_pair_and_math_file(
    user_pair: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    policy, prm, recipe = user_pair
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ponder.cli", "train", "--recipe", str(recipe), "--out", str(out)]
    command += ["--base", str(policy), "--prm-base", str(prm), "--stages", "policy,prm,iterate"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    searched = [json.loads(line) for line in (out / "rounds/1/search.jsonl").read_text().splitlines()]
    assert len(searched) == 6 and all(isinstance(r["verified"], bool) for r in searched)
    labelled = [json.loads(line) for line in (out / "rounds/1/prm_data.jsonl").read_text().splitlines()]
    assert labelled and all(len(r["soft_labels"]) == len(r["completions"]) for r in labelled)
    for number in (0, 1):
        record = json.loads((out / "rounds" / str(number) / "metrics.json").read_text())
        assert record["dev"]["split"] == "dev" and record["dev"]["file"]["n_problems"] == 3
    assert read_prm_spec(out / "prm").format == "math-shepherd"  # the refitted PRM keeps its public format
    assert (out / "prm/model.safetensors").read_bytes() != (prm / "model.safetensors").read_bytes()
    # a random policy verifies nothing and a math file has no solver traces: no example, weights unchanged
    card = json.loads((out / "policy/ponder_card.json").read_text())
    assert card["loop"][-1]["kept"] == sum(len(r["kept"]) for r in searched)
