"""The loop's PRM refit keeps `prm_refine`'s objective (training/iterate.py, `refit_examples`): in the PRM's
own format, each labelled solution carries its verdict labels at the step tags and the true result's token
at each step's '=', exactly as `prm_refine` builds them, and counterfactual last steps join the mix."""

from __future__ import annotations

from typing import Any

from tasks.countdown import generate, reference_solution
from training.iterate import arithmetic_targets, refit_examples
from training.loop import IGNORE
from training.prm_refine import TOKEN_TARGET, refine_example
from training.tokenizer import PRM_SPEC, STEP_TAG, build_tokenizer
from verifiers.prm_format import prm_format

TOKENIZER = build_tokenizer()
FORMAT = prm_format(PRM_SPEC, TOKENIZER)
(EQUALS,) = TOKENIZER.encode("=", add_special_tokens=False)


def records(count: int) -> list[dict[str, Any]]:
    import random

    rng = random.Random(0)
    made: list[dict[str, Any]] = []
    for problem in generate(4, count, seed=11):
        steps = [s.text() for s in reference_solution(problem, rng)]
        steps[0] = steps[0].replace("=", "=1", 1)  # a wrong claim: its target is still the true result
        labels = [0.0, None, 1.0]
        made.append({"prompt": problem.prompt(), "completions": steps, "soft_labels": labels})
    return made


def set_targets(targets: list[float]) -> list[float]:
    return [t for t in targets if t != float(IGNORE)]


def test_refit_examples_carry_prm_refines_targets_in_the_prms_own_format() -> None:
    labelled = records(20)
    examples, counterfactual = refit_examples(
        FORMAT, TOKENIZER, labelled, {"counterfactual": False, "arithmetic_weight": 0.5}, number=1
    )
    assert counterfactual == 0 and len(examples) == len(labelled)
    tag = int(TOKENIZER.convert_tokens_to_ids(STEP_TAG))
    for example, record in zip(examples, labelled, strict=True):
        reference = refine_example(TOKENIZER, record, tag, EQUALS)
        assert set_targets(example.targets) == set_targets(reference.targets)
        tokens = sum(t >= TOKEN_TARGET for t in example.targets)
        assert tokens == 3  # one true result at each of the three steps' '='
        for position, target in enumerate(example.targets):
            if target >= TOKEN_TARGET:
                assert example.input_ids[position] == EQUALS


def test_without_the_knobs_the_refit_is_the_verdict_labels_alone() -> None:
    examples, counterfactual = refit_examples(FORMAT, TOKENIZER, records(5), {}, number=1)
    assert counterfactual == 0
    assert all(t <= 1.0 for e in examples for t in e.targets)


def test_counterfactual_last_steps_join_the_mix() -> None:
    labelled = records(30)
    for record in labelled:  # legal first steps, so each has a counterfactual last step
        record["completions"][0] = record["completions"][0].replace("=1", "=", 1)
    examples, counterfactual = refit_examples(
        FORMAT, TOKENIZER, labelled, {"counterfactual": True, "arithmetic_weight": 0.0}, number=2
    )
    assert counterfactual > 0 and len(examples) == len(labelled) + counterfactual
    assert all(t <= 1.0 for e in examples for t in e.targets)


def test_a_step_without_one_equals_or_a_result_token_gets_no_arithmetic_target() -> None:
    steps = ["no operation here\n", "8+6=15 [15]\n"]
    encoded = [TOKENIZER.encode(s, add_special_tokens=False) for s in steps]
    ids = [EQUALS, *encoded[0], *encoded[1]]  # an '=' of the format's own before the steps
    found = arithmetic_targets(TOKENIZER, ids, encoded, steps, EQUALS)
    (fourteen,) = TOKENIZER.encode("14", add_special_tokens=False)
    assert found == [(1 + len(encoded[0]) + encoded[1].index(EQUALS), TOKEN_TARGET + fourteen)]
