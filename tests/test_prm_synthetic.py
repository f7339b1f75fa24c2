"""The PRM's exactly-labelled verification data: every label it carries must be the true value."""

from tasks.countdown import parse_prompt
from tasks.split import split_of_key
from training.loop import IGNORE
from training.prm import prm_example, synthetic_records
from training.tokenizer import STEP_TAG, build_tokenizer
from verifiers.countdown import check_solution, legal_prefix_state


def test_synthetic_labels_are_exact() -> None:
    records = synthetic_records({3: 40, 4: 40, 5: 10}, seed=1)
    assert len(records) > 150
    corrupted = 0
    for record in records:
        problem = parse_prompt(record["prompt"])
        assert problem is not None
        steps, labels = record["completions"], record["soft_labels"]
        assert len(steps) == len(labels) == problem.tier - 1
        if labels[-1] == 1.0:
            assert check_solution(problem, "".join(steps)).correct
            assert all(label is None for label in labels[:-1])
        else:
            corrupted += 1
            first_zero = labels.index(0.0)
            assert all(label is None for label in labels[:first_zero])
            assert all(label == 0.0 for label in labels[first_zero:])
            assert legal_prefix_state(problem, steps[:first_zero]) is not None
            assert legal_prefix_state(problem, steps[: first_zero + 1]) is None
            assert not check_solution(problem, "".join(steps)).correct
    assert corrupted > 50


def test_synthetic_data_draws_from_the_train_split_only() -> None:
    records = synthetic_records({3: 400}, seed=2)
    problems = [parse_prompt(r["prompt"]) for r in records]
    assert all(p is not None and split_of_key(p.key) == "train" for p in problems)


def test_unknown_labels_carry_no_loss() -> None:
    tokenizer = build_tokenizer()
    tag = tokenizer.convert_tokens_to_ids(STEP_TAG)
    record = {"prompt": "3 4 -> 7\n", "completions": ["4+3=7 [7]\n", "x\n"], "soft_labels": [None, 0.0]}
    example = prm_example(tokenizer, record, tag)
    tagged = [t for token, t in zip(example.input_ids, example.targets, strict=True) if token == tag]
    assert tagged == [IGNORE, 0.0]
    assert sum(t != IGNORE for t in example.targets) == 1
