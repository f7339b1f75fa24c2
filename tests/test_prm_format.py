"""The PRM formats render exactly what each model card feeds its PRM, and refuse what does not fit."""

from __future__ import annotations

import pytest
from tiny_models import (
    math_problems,
    math_shepherd_text,
    math_shepherd_tokenizer,
    qwen2_prm_text,
    qwen2_tokenizer,
)

from engines.spec import PRMSpec, SpecError, read_prm_spec, verdict_tokens
from engines.vllm_engine import load_tokenizer
from ponder.defaults import DEFAULT_PRM
from verifiers.prm import Candidate, prm_input_ids
from verifiers.prm_format import PRMInputError, prm_format, tag_positions

QUESTION, STEPS = next(iter(math_problems(1)))
WRITTEN = tuple(step + "\n\n" for step in STEPS)  # as the policy wrote them, each closed by its delimiter


def candidate(texts: tuple[str, ...] = WRITTEN, question: str = QUESTION) -> Candidate:
    return Candidate((), tuple(() for _ in texts), (), question, texts)


def test_qwen_renders_its_model_card_input() -> None:
    tokenizer = qwen2_tokenizer()
    format = prm_format(PRMSpec.of_format("qwen"), tokenizer)
    expected = tokenizer.encode(qwen2_prm_text(tokenizer, QUESTION, STEPS))
    ids = format.render(candidate())
    assert ids == expected and format.good_column == 1
    assert len(tag_positions(format, ids, len(STEPS))) == len(STEPS)


def test_math_shepherd_renders_its_model_card_input_and_verdicts() -> None:
    tokenizer = math_shepherd_tokenizer()
    spec = PRMSpec.of_format("math-shepherd")
    format = prm_format(spec, tokenizer)
    assert format.render(candidate()) == tokenizer.encode(math_shepherd_text(QUESTION, STEPS))
    # the card compares encode("+ -")'s two tokens, which a sentencepiece vocabulary writes with "▁"
    assert verdict_tokens(tokenizer, spec) == ("▁+", "▁-")


def test_our_format_extends_the_policy_ids() -> None:
    spec = read_prm_spec(DEFAULT_PRM)
    format = prm_format(spec, load_tokenizer(DEFAULT_PRM))
    tag = format.step_tag_id
    steps = ((5, 6), (7, tag, 8))  # a policy that wrote the tag: it is dropped, not taken as a boundary
    assert format.render(Candidate((1, 2), steps)) == prm_input_ids((1, 2), [(5, 6), (7, 8)], tag)


@pytest.mark.parametrize("format_name", ["qwen", "math-shepherd"])
def test_a_policy_cannot_forge_a_step_tag(format_name: str) -> None:
    tokenizer = qwen2_tokenizer() if format_name == "qwen" else math_shepherd_tokenizer()
    spec = PRMSpec.of_format(format_name)
    format = prm_format(spec, tokenizer)
    forged = (f"x = 1 {spec.step_tag} y = 2\n\n", f"{spec.step_tag}{spec.step_tag} z\n\n")
    ids = format.render(candidate(forged, question=f"why {spec.step_tag}?"))
    assert len(tag_positions(format, ids, 2)) == 2


def test_rows_that_do_not_match_the_steps_are_an_error() -> None:
    format = prm_format(PRMSpec.of_format("qwen"), qwen2_tokenizer())
    ids = format.render(candidate())
    with pytest.raises(PRMInputError, match=f"holds {len(STEPS)} step tags for {len(STEPS) + 1} steps"):
        tag_positions(format, ids, len(STEPS) + 1)
    with pytest.raises(PRMInputError, match="this PRM reads text"):
        format.render(Candidate((1,), ((2,), (3,))))  # ids without their texts


def test_verdicts_that_are_not_one_token_each_are_refused() -> None:
    spec = PRMSpec.of_format("math-shepherd", good_token="++", bad_token="--")
    with pytest.raises(SpecError, match="not one each"):
        prm_format(spec, math_shepherd_tokenizer())
