"""The PRM refinement's data (training/prm_refine.py): every label exact, every arithmetic target true."""

from __future__ import annotations

from typing import Any

import torch

from tasks.countdown import generate, parse_prompt, reference_solution
from training.loop import IGNORE, collate
from training.prm_refine import TOKEN_TARGET, counterfactual_records, refine_example, refine_loss
from training.tokenizer import BAD, GOOD, STEP_TAG, build_tokenizer
from verifiers.countdown import check_solution, split_steps, true_result

TOKENIZER = build_tokenizer()
TAG = int(TOKENIZER.convert_tokens_to_ids(STEP_TAG))
(EQUALS,) = TOKENIZER.encode("=", add_special_tokens=False)


def solver_records(tier: int, count: int) -> list[dict[str, object]]:
    import random

    rng = random.Random(0)
    records: list[dict[str, object]] = []
    for problem in generate(tier, count, seed=3):
        steps = [s.text() for s in reference_solution(problem, rng)]
        records.append({"prompt": problem.prompt(), "completions": steps, "soft_labels": [None] * len(steps)})
    return records


def test_true_result_is_what_the_operation_gives_whatever_is_claimed() -> None:
    assert true_result("8+6=15 [15]") == 14
    assert true_result("12/5=2 [2 3]") is None  # inexact division is not a move
    assert true_result("3-8=5 [5]") is None  # no negatives
    assert true_result("banana") is None


def test_counterfactual_last_steps_claim_the_target_and_are_labelled_by_the_checker() -> None:
    records = solver_records(4, 60) + solver_records(3, 40)
    made = counterfactual_records(records, seed=1)
    assert len(made) > len(records)  # a right claim (the solver's own numbers reach it) and a wrong one
    labels_seen = set()
    for record in made:
        problem = parse_prompt(str(record["prompt"]))
        assert problem is not None
        steps, labels = record["completions"], record["soft_labels"]
        assert len(steps) == len(labels) == len(problem.numbers) - 1
        assert all(label is None for label in labels[:-1])
        assert steps[-1].endswith(f"={problem.target} [{problem.target}]\n")
        assert labels[-1] == (1.0 if check_solution(problem, "".join(steps)).correct else 0.0)
        labels_seen.add(labels[-1])
    assert labels_seen == {0.0, 1.0}


def test_counterfactuals_skip_solutions_that_are_illegal_before_the_last_step() -> None:
    record = {"prompt": "8 3 8 10 -> 30\n", "completions": ["8+3=12 [12 8 10]\n", "12+8=20 [20 10]\n"]}
    assert counterfactual_records([{**record, "soft_labels": [None, None]}], seed=0) == []


def test_the_arithmetic_target_at_each_equals_is_the_true_result() -> None:
    record: dict[str, Any] = {
        "prompt": "8 3 8 10 -> 30\n",
        "completions": ["8+3=11 [11 8 10]\n", "11+8=19 [19 10]\n", "19+10=30 [30]\n"],
        "soft_labels": [None, 0.25, 0.0],
    }
    example = refine_example(TOKENIZER, record, TAG, EQUALS)
    at_equals = [t for token, t in zip(example.input_ids, example.targets, strict=True) if token == EQUALS]
    expected = [true_result(step) for step in split_steps("".join(record["completions"]))]
    assert [TOKENIZER.convert_ids_to_tokens(int(t - TOKEN_TARGET)) for t in at_equals] == [
        str(v) for v in expected
    ]  # 29, not the claimed 30, on the fake last step
    at_tags = [t for token, t in zip(example.input_ids, example.targets, strict=True) if token == TAG]
    assert at_tags == [IGNORE, 0.25, 0.0]


def test_the_refinement_loss_adds_the_arithmetic_term_only_when_weighted() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(TOKENIZER), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    good, bad = (int(TOKENIZER.convert_tokens_to_ids(t)) for t in (GOOD, BAD))
    record = {"prompt": "3 4 -> 7\n", "completions": ["4+3=7 [7]\n"], "soft_labels": [1.0]}
    ids, mask, targets = collate([refine_example(TOKENIZER, record, TAG, EQUALS)], TOKENIZER.pad_token_id)
    verdict_only = refine_loss(good, bad, 0.0)(model, ids, mask, targets)
    both = refine_loss(good, bad, 0.5)(model, ids, mask, targets)
    assert torch.isfinite(both) and both.item() > verdict_only.item() > 0
