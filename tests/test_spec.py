"""The model spec: read from checkpoints, overridden from the command line, refused when it is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engines.spec import (
    SPEC_FILE,
    PolicySpec,
    PRMSpec,
    SpecError,
    read_policy_spec,
    read_prm_spec,
    split_steps_ids,
    write_spec,
)
from engines.vllm_engine import PolicyText, load_tokenizer
from engines.vllm_serve import prm_pooling
from ponder.defaults import DEFAULT_POLICY, DEFAULT_PRM
from training.tokenizer import POLICY_SPEC, PRM_SPEC

SERVING_PATH = ("server", "searchers", "engines", "verifiers", "tasks")
ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_models_carry_the_spec_their_training_writes() -> None:
    assert read_policy_spec(DEFAULT_POLICY) == POLICY_SPEC
    assert read_prm_spec(DEFAULT_PRM) == PRM_SPEC


def test_a_spec_round_trips_and_overrides_win(tmp_path: Path) -> None:
    write_spec(tmp_path, PolicySpec(step_delimiter="\n", max_step_tokens=10, max_solution_tokens=20))
    assert read_policy_spec(tmp_path).max_step_tokens == 10
    overridden = read_policy_spec(tmp_path, max_step_tokens=12, step_delimiter=None)
    assert overridden == PolicySpec(step_delimiter="\n", max_step_tokens=12, max_solution_tokens=20)


def test_a_policy_without_a_spec_gets_chat_model_defaults(tmp_path: Path) -> None:
    spec = read_policy_spec(tmp_path)
    assert spec.step_delimiter == "\n\n" and spec.prompt_format == "chat_template"
    assert spec.max_solution_tokens >= 1024  # math solutions run to hundreds of tokens


def test_a_prm_without_a_spec_must_be_told_its_tokens(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no complete PRMSpec"):
        read_prm_spec(tmp_path)
    spec = read_prm_spec(tmp_path, step_tag=" ки", good_token="+", bad_token="-")
    assert spec == PRMSpec(step_tag=" ки", good_token="+", bad_token="-")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"bogus": 1}, "unknown PolicySpec fields"),
        ({"step_delimiter": ""}, "must not be empty"),
        ({"max_step_tokens": 300, "max_solution_tokens": 200}, "max_step_tokens"),
        ({"prompt_format": "xml"}, "unknown prompt format"),
    ],
)
def test_malformed_policy_specs_are_refused(tmp_path: Path, fields: dict[str, object], message: str) -> None:
    (tmp_path / SPEC_FILE).write_text(json.dumps(fields))
    with pytest.raises(SpecError, match=message):
        read_policy_spec(tmp_path)


def test_prm_tokens_must_differ_and_exist() -> None:
    with pytest.raises(SpecError, match="three different tokens"):
        PRMSpec(step_tag="<step>", good_token="<good>", bad_token="<good>")
    missing = PRMSpec(step_tag="<nope>", good_token="<good>", bad_token="<bad>")
    with pytest.raises(SpecError, match="step tag '<nope>' is not a token"):
        prm_pooling(str(DEFAULT_PRM), missing)


def test_the_policy_engine_cuts_steps_on_the_spec_delimiter() -> None:
    tokenizer = load_tokenizer(DEFAULT_POLICY)
    text = PolicyText(tokenizer, read_policy_spec(DEFAULT_POLICY))
    ids = text.tokenizer.encode("3+4=7 [7 5]\n7+5=12 [12]\n", add_special_tokens=False)
    steps = split_steps_ids(ids, text.step_token_id)
    assert [text.decode(s) for s in steps] == ["3+4=7 [7 5]\n", "7+5=12 [12]\n"]
    with pytest.raises(SpecError, match="is 2 tokens of this tokenizer"):
        PolicyText(tokenizer, PolicySpec(step_delimiter="\n\n"))


def test_plain_prompts_and_system_prompts_render_as_the_spec_says() -> None:
    tokenizer = load_tokenizer(DEFAULT_POLICY)
    messages = [{"role": "user", "content": "3 4 5 -> 12"}]
    chat = PolicyText(tokenizer, read_policy_spec(DEFAULT_POLICY))
    plain = PolicyText(tokenizer, PolicySpec(step_delimiter="\n", prompt_format="plain"))
    assert chat.render_chat(messages) == plain.render_chat(messages) == chat.encode("3 4 5 -> 12\n")
    system = PolicyText(
        tokenizer, PolicySpec(step_delimiter="\n", prompt_format="plain", system_prompt="Go.")
    )
    assert system.decode(system.render_chat(messages)) == "Go.\n3 4 5 -> 12\n"


def test_the_serving_path_names_no_special_token_of_our_own_models() -> None:
    """The layers below `training` read tokens from the spec, never from our tokenizer's constants."""
    ours = (PRM_SPEC.step_tag, PRM_SPEC.good_token, PRM_SPEC.bad_token)
    for package in SERVING_PATH:
        for path in (ROOT / package).rglob("*.py"):
            source = path.read_text()
            assert not [t for t in ours if t in source], path
            assert "import training" not in source and "from training" not in source, path
