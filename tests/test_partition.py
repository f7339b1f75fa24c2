"""The partition of the problem space by meaning: no training stage draws outside the train split."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from tasks.countdown import Problem, generate
from tasks.datasets import countdown_problem
from tasks.sets import EVAL_TIERS, load_dev_set, load_eval_set
from tasks.split import bucket, split_of_key, split_of_text, text_key
from training.pipeline import load_recipe
from training.problems import stage_problems


def test_the_key_is_the_problem_not_its_order() -> None:
    assert Problem((13, 3, 9, 7), 24).key == Problem((3, 7, 9, 13), 24).key == "3 7 9 13 -> 24"
    assert Problem((3, 7, 9, 13), 25).key != Problem((3, 7, 9, 13), 24).key


def test_buckets_are_the_hash_the_issue_fixes() -> None:
    key = "3 7 9 13 -> 24"
    assert bucket(key) == int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100
    splits = Counter(split_of_key(p.key) for tier in (3, 4, 5) for p in generate(tier, 2000, seed=11))
    total = sum(splits.values())
    assert 0.03 < splits["eval"] / total < 0.07 and 0.03 < splits["dev"] / total < 0.07


def test_a_set_by_meaning_never_repeats_a_problem_in_another_order() -> None:
    keys = [p.key for p in generate(3, 400, seed=5, distinct="meaning")]
    assert len(keys) == len(set(keys))
    with pytest.raises(ValueError, match="distinct 2-number problems"):
        generate(2, 100, seed=5, split="eval", distinct="meaning")  # fewer such problems exist


def test_user_task_files_split_by_their_normalised_text() -> None:
    assert text_key("  What is  2+2?\n") == text_key("what is 2+2?")
    assert split_of_text("What is 2+2?") == split_of_text("what   is 2+2?")


def held_out_keys() -> set[str]:
    return {countdown_problem(t).key for tier in EVAL_TIERS for t in load_eval_set(tier) + load_dev_set(tier)}


@pytest.mark.parametrize("recipe", ["default", "micro"])
def test_no_training_stage_draws_outside_the_train_split(recipe: str) -> None:
    """Every stage's problem list, rebuilt from the recipe as the stages build it, lies in the train
    buckets, so no eval or dev problem reaches training, in any order of its numbers."""
    lists = stage_problems(load_recipe(recipe))
    assert {"sft", "prm_data_mc", "prm_synthetic"} <= set(lists)
    held_out = held_out_keys()
    for stage, problems in lists.items():
        outside = [p.key for p in problems if split_of_key(p.key) != "train"]
        assert not outside, f"{stage} draws {len(outside)} problems outside the train split: {outside[:3]}"
        assert not {p.key for p in problems} & held_out, stage
    assert sum(len(problems) for problems in lists.values()) > 0
