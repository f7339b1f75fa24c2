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


def test_a_prm_without_a_spec_is_read_by_its_format(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="name its format"):
        read_prm_spec(tmp_path)
    shepherd = read_prm_spec(tmp_path, format="math-shepherd")
    assert shepherd == PRMSpec(format="math-shepherd", step_tag="ки", good_token="+", bad_token="-")
    assert read_prm_spec(tmp_path, format="math-shepherd", good_token="▁+").good_token == "▁+"
    with pytest.raises(SpecError, match="three different tokens"):
        read_prm_spec(tmp_path, format="ponder", step_tag="<step>")  # our format has no default tokens
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForProcessRewardModel"]}))
    qwen = read_prm_spec(tmp_path)
    assert qwen.format == "qwen" and qwen.step_tag == "<extra_0>"
    assert qwen.system_prompt == "Please reason step by step, and put your final answer within \\boxed{}."
    with pytest.raises(SpecError, match="unknown PRM format 'skywork'"):
        read_prm_spec(tmp_path, format="skywork")


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
    with pytest.raises(SpecError, match="good verdict token '<nah>' is not a token"):
        prm_pooling(
            load_tokenizer(DEFAULT_PRM), PRMSpec(step_tag="<step>", good_token="<nah>", bad_token="<bad>")
        )
    with pytest.raises(SpecError, match="step tag '<nope>' is not a token"):
        prm_pooling(load_tokenizer(DEFAULT_PRM), missing)


def test_the_policy_engine_cuts_steps_on_the_spec_delimiter() -> None:
    tokenizer = load_tokenizer(DEFAULT_POLICY)
    text = PolicyText(tokenizer, read_policy_spec(DEFAULT_POLICY))
    ids = text.tokenizer.encode("3+4=7 [7 5]\n7+5=12 [12]\n", add_special_tokens=False)
    steps = text.split_steps(ids)
    assert [text.decode(s) for s in steps] == ["3+4=7 [7 5]\n", "7+5=12 [12]\n"]
    assert text.steps.exact_id is not None and text.steps.stop_kwargs() == {"stop_token_ids": [ids[11]]}
    # a delimiter of two tokens is a text boundary: vLLM stops on the string, steps end on its last token
    blank = PolicyText(tokenizer, PolicySpec(step_delimiter="\n\n"))
    assert blank.steps.exact_id is None and blank.steps.stop_kwargs()["stop"] == ["\n\n"]
    ids = tokenizer.encode("3+4=7\n\n7+5=12\n\n12", add_special_tokens=False)
    assert [blank.decode(s) for s in blank.split_steps(ids)] == ["3+4=7\n\n", "7+5=12\n\n", "12"]
    assert blank.steps.stopped_at_step("\n\n") and not blank.steps.stopped_at_step(None)
    with pytest.raises(SpecError, match="cannot write the step delimiter"):
        PolicyText(tokenizer, PolicySpec(step_delimiter="\u2603"))  # outside the vocabulary


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
    ours = [t for t in (PRM_SPEC.step_tag, PRM_SPEC.good_token, PRM_SPEC.bad_token) if t is not None]
    for package in SERVING_PATH:
        for path in (ROOT / package).rglob("*.py"):
            source = path.read_text()
            assert not [t for t in ours if t in source], path
            assert "import training" not in source and "from training" not in source, path


async def test_searches_take_their_limits_from_the_policy_spec_unless_asked_for_less() -> None:
    """A request that names no token limits gets the policy's: a user's model writes steps of hundreds
    of tokens, ours of tens, and neither may be cut at the other's size."""
    from dataclasses import replace

    from fake_engine import FakeEngine

    from engines.base import Sampling

    engine = FakeEngine()
    prompt = engine.encode("3 7 9 13 -> 24\n")
    assert Sampling().limit(engine.spec, until_step=True) == engine.spec.max_step_tokens
    assert Sampling(max_tokens=9).limit(engine.spec, until_step=False) == 9
    engine.spec = replace(engine.spec, max_step_tokens=3, max_solution_tokens=5)
    step = (await engine.expand([prompt], 1, Sampling(seed=0), "t")).continuations[0][0]
    whole = (await engine.rollout([prompt], 1, Sampling(seed=0), "t")).continuations[0][0]
    assert (step.finish, len(step.token_ids)) == ("length", 3)
    assert (whole.finish, len(whole.token_ids)) == ("length", 5)
