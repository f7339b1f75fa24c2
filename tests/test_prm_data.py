"""Math-Shepherd labelling logic, on the deterministic fake engine."""

import json

from fake_engine import FakeEngine

from engines.base import Sampling
from tasks.countdown import generate
from verifiers.countdown import check_solution, legal_prefix_state
from verifiers.montecarlo import label_problems


async def test_labels_follow_the_math_shepherd_definition() -> None:
    engine = FakeEngine(slip=0.3, seed=1)
    problems = generate(3, 12, seed=5)
    labelled = await label_problems(
        engine, problems, samples=3, rollouts=4, sampling=Sampling(seed=2), request_id="t"
    )
    assert len(labelled) == 36
    for item in labelled:
        assert len(item.soft_labels) == len(item.steps)
        assert all(s is not None and 0.0 <= s <= 1.0 and float(s * 4).is_integer() for s in item.soft_labels)
        assert item.correct == check_solution(item.problem, "".join(item.steps)).correct
        # the last step of a complete solution is labelled by the checker itself
        assert item.soft_labels[-1] == float(item.correct)
        for k in range(len(item.steps)):
            if legal_prefix_state(item.problem, item.steps[: k + 1]) is None:
                assert item.soft_labels[k] == 0.0  # an illegal step can never lead to success
    assert any(item.correct for item in labelled) and any(not item.correct for item in labelled)


async def test_records_use_the_trl_stepwise_format() -> None:
    engine = FakeEngine(slip=0.0)
    labelled = await label_problems(engine, generate(3, 2, seed=1), 1, 2, Sampling(seed=0), "t")
    record = json.loads(json.dumps(labelled[0].record()))
    assert set(record) >= {"prompt", "completions", "labels"}
    assert isinstance(record["completions"], list) and all(isinstance(s, str) for s in record["completions"])
    assert record["labels"] == [s > 0 for s in record["soft_labels"]]


async def test_fake_engine_is_deterministic_and_counts_usage() -> None:
    engine = FakeEngine()
    prompt = engine.encode("3 7 9 13 -> 24\n")
    first = await engine.expand([prompt, prompt], 3, Sampling(seed=4), "a")
    second = await FakeEngine().expand([prompt, prompt], 3, Sampling(seed=4), "b")
    assert [[c.text for c in row] for row in first.continuations] == [
        [c.text for c in row] for row in second.continuations
    ]
    texts = [c.text for c in first.continuations[0]]
    assert len(set(texts)) > 1, "samples of one prefix must differ"
    assert first.usage.prompt_tokens == 6 * len(prompt)
    assert first.usage.generated_tokens == sum(
        len(c.token_ids) + (c.finish == "end") for row in first.continuations for c in row
    )


async def test_exact_only_labels_leave_unknown_values_out() -> None:
    """rollouts=0: illegal steps and dead ends are 0, finished solutions graded, the rest unknown."""
    from tasks.countdown import SolutionCounter

    engine = FakeEngine(slip=0.3, seed=3)
    problems = generate(4, 10, seed=9)
    labelled = await label_problems(
        engine, problems, samples=3, rollouts=0, sampling=Sampling(seed=1), request_id="x"
    )
    unknown = 0
    for item in labelled:
        counter = SolutionCounter(item.problem.target)
        for k, label in enumerate(item.soft_labels):
            state = legal_prefix_state(item.problem, item.steps[: k + 1])
            if state is None or (k < len(item.steps) - 1 and counter.count(state) == 0):
                assert label == 0.0
            elif k == len(item.steps) - 1:
                assert label == float(item.correct)
            else:
                assert label is None
                unknown += 1
    assert unknown > 0
    assert engine.calls == 1  # sampling only: no rollouts were spent
    record = labelled[0].record()
    assert record["labels"] == [None if s is None else s > 0 for s in record["soft_labels"]]
