"""The tiny real-architecture models (tests/tiny_models.py): transformers loads each and its tokenizer
has the family's traits; vLLM (engine tests) generates with both policies and scores with both PRMs as
the transformers references do."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from tiny_models import (
    ENDOFTEXT,
    EOT,
    EXTRA_0,
    IM_END,
    QWEN2_SPLIT,
    QWEN_PRM_SYSTEM,
    SHEPHERD_TAG,
    causal_lm_logits,
    llama3_policy,
    math_problems,
    math_shepherd_prm,
    math_shepherd_text,
    math_shepherd_tokens,
    qwen2_policy,
    qwen2_prm,
    qwen2_prm_logits,
    qwen2_prm_text,
)
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

AGREEMENT = 1e-3  # vLLM's step scores against the transformers references
PROBLEMS = list(math_problems(4, seed=11))
SOLUTION = "Step 1: 761 + 24 = 785.\n\nStep 2: the answer is right!\n\nTherefore, so:\n\nThe"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    builders = (qwen2_policy, qwen2_prm, llama3_policy, math_shepherd_prm)
    return {build.__name__: build(root / build.__name__) for build in builders}


def tokenizer(path: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(path))


def config(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "config.json").read_text()))


def qwen_prm_scores(path: Path, ids: list[int], tag_id: int) -> list[float]:
    """P(class 1) at each `<extra_0>`, as Qwen2.5-Math-PRM's model card computes it."""
    probabilities = qwen2_prm_logits(path, ids).softmax(dim=-1)[:, 1]
    return [float(probabilities[i]) for i, token in enumerate(ids) if token == tag_id]


def shepherd_scores(path: Path, ids: list[int]) -> list[float]:
    """P(+) at each `ки`: softmax over the logits of the ids of "+" and "-" (Math-Shepherd's card)."""
    tokens = math_shepherd_tokens(tokenizer(path))
    logits = causal_lm_logits(path, ids)[:, [tokens.good_id, tokens.bad_id]]
    good = logits.softmax(dim=-1)[:, 0]
    return [float(good[i]) for i, token in enumerate(ids) if token == tokens.tag_id]


def qwen_reference(tiny: dict[str, Path], question: str, steps: list[str]) -> list[float]:
    prm = tokenizer(tiny["qwen2_prm"])
    ids = prm.encode(qwen2_prm_text(prm, question, steps))
    return qwen_prm_scores(tiny["qwen2_prm"], ids, prm.convert_tokens_to_ids(EXTRA_0))


def shepherd_reference(tiny: dict[str, Path], question: str, steps: list[str]) -> list[float]:
    ids = tokenizer(tiny["math_shepherd_prm"]).encode(math_shepherd_text(question, steps))
    return shepherd_scores(tiny["math_shepherd_prm"], ids)


# --- the directories ---------------------------------------------------------------------------------
def test_each_builder_writes_a_complete_small_model_directory(tiny: dict[str, Path]) -> None:
    for name, path in tiny.items():
        files = {p.name for p in path.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files, name
        assert "generation_config.json" in files, name
        cfg = config(path)
        assert (cfg["hidden_size"], cfg["num_hidden_layers"]) == (64, 2), name
        assert cfg["vocab_size"] == len(tokenizer(path)) < 4096, name
    for name in ("qwen2_policy", "llama3_policy"):  # chat templates where Qwen and Meta keep them
        assert "chat_template" in json.loads((tiny[name] / "tokenizer_config.json").read_text())


def test_builders_are_deterministic(tiny: dict[str, Path], tmp_path: Path) -> None:
    def digests(path: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}

    for build in (qwen2_prm, math_shepherd_prm):
        assert digests(build(tmp_path / build.__name__)) == digests(tiny[build.__name__])


def test_transformers_loads_the_causal_models(tiny: dict[str, Path]) -> None:
    expected = {
        "qwen2_policy": "Qwen2ForCausalLM",
        "llama3_policy": "LlamaForCausalLM",
        "math_shepherd_prm": "MistralForCausalLM",
    }
    for name, architecture in expected.items():
        model = AutoModelForCausalLM.from_pretrained(str(tiny[name]))
        assert type(model).__name__ == architecture == config(tiny[name])["architectures"][0]


def test_the_qwen_prm_checkpoint_has_the_weights_vllm_loads(tiny: dict[str, Path]) -> None:
    path = tiny["qwen2_prm"]
    assert config(path)["architectures"] == ["Qwen2ForProcessRewardModel"]
    with safe_open(str(path / "model.safetensors"), "pt") as weights:
        shapes = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118
    assert shapes["score.0.weight"] == (64, 64) and shapes["score.0.bias"] == (64,)
    assert shapes["score.2.weight"] == (2, 64) and shapes["score.2.bias"] == (2,)
    assert "model.embed_tokens.weight" in shapes and "model.layers.1.self_attn.q_proj.bias" in shapes
    assert not any(name.startswith("lm_head") for name in shapes)
    assert all(name.startswith(("model.", "score.")) for name in shapes)


# --- tokenizer facts -----------------------------------------------------------------------------------
def test_qwen_tokenizer_is_qwen2_style(tiny: dict[str, Path]) -> None:
    tok = tokenizer(tiny["qwen2_policy"])
    assert type(tok).__name__ == "Qwen2Tokenizer" and QWEN2_SPLIT == PRETOKENIZE_REGEX
    assert tok.bos_token is None and tok.bos_token_id is None and tok.unk_token is None
    assert (tok.eos_token, tok.pad_token) == (IM_END, ENDOFTEXT)
    assert tok.encode("Step 1", add_special_tokens=True) == tok.encode("Step 1", add_special_tokens=False)
    # "\n\n" merges with the punctuation before it; alone or after a letter it is its own token. Digits
    # are single tokens, a space before a number its own.
    assert tok.tokenize(SOLUTION) == [
        "Step", "Ġ", "1", ":", "Ġ", "7", "6", "1", "Ġ+", "Ġ", "2", "4", "Ġ=", "Ġ", "7", "8", "5", ".ĊĊ",
        "Step", "Ġ", "2", ":", "Ġthe", "Ġanswer", "Ġis", "Ġright", "!ĊĊ",
        "Therefore", ",", "Ġso", ":ĊĊ", "The",
    ]  # fmt: skip
    assert tok.tokenize("a\n\nb") == ["a", "ĊĊ", "b"]
    assert tok.convert_tokens_to_ids("\n") is None  # no unk: a missing token has no id
    assert len(tok.encode(EXTRA_0, add_special_tokens=False)) == 1


def test_qwen_chat_template_renders_chatml(tiny: dict[str, Path]) -> None:
    tok = tokenizer(tiny["qwen2_policy"])
    user = [{"role": "user", "content": "What is 3 + 4?"}]
    assert tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n"
    )
    chat = [{"role": "system", "content": "Be brief."}, *user, {"role": "assistant", "content": "7"}]
    assert tok.apply_chat_template(chat, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n"
        "<|im_start|>assistant\n7<|im_end|>\n"
    )


def test_qwen_prm_shares_the_policy_vocabulary_and_renders_the_card_input(tiny: dict[str, Path]) -> None:
    policy, prm = tokenizer(tiny["qwen2_policy"]), tokenizer(tiny["qwen2_prm"])
    assert policy.get_vocab() == prm.get_vocab()
    question, steps = PROBLEMS[0]
    text = qwen2_prm_text(prm, question, steps)
    assert text == (
        f"<|im_start|>system\n{QWEN_PRM_SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
        f"<|im_start|>assistant\n{EXTRA_0.join(steps)}{EXTRA_0}<|im_end|>\n"
    )
    tag_id = prm.convert_tokens_to_ids(EXTRA_0)
    assert prm.encode(text).count(tag_id) == len(steps)
    assert prm.decode(prm.encode(text)) == text


def test_llama3_tokenizer_is_llama3_style(tiny: dict[str, Path]) -> None:
    tok = tokenizer(tiny["llama3_policy"])
    assert tok.unk_token is None and tok.convert_tokens_to_ids("\n") is None
    assert tok.eos_token == EOT
    ids = tok.encode(SOLUTION)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1  # the post-processor's BOS
    assert tok.convert_ids_to_tokens(ids[1:]) == [  # numbers of up to 3 digits are one token
        "Step", "Ġ", "1", ":", "Ġ", "761", "Ġ+", "Ġ", "24", "Ġ=", "Ġ", "785", ".ĊĊ",
        "Step", "Ġ", "2", ":", "Ġthe", "Ġanswer", "Ġis", "Ġright", "!ĊĊ",
        "Therefore", ",", "Ġso", ":ĊĊ", "The",
    ]  # fmt: skip
    user = [{"role": "user", "content": "What is 3 + 4?"}]
    rendered = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 3 + 4?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    # as with real Llama-3: the template writes the BOS, so encoding its text with special tokens
    # (what vLLM does to a text prompt) doubles it
    assert tok.encode(rendered)[:2] == [tok.bos_token_id] * 2
    assert tok.encode(rendered, add_special_tokens=False).count(tok.bos_token_id) == 1


def test_math_shepherd_tokenizer_is_mistral_style_with_its_own_vocabulary(tiny: dict[str, Path]) -> None:
    tok = tokenizer(tiny["math_shepherd_prm"])
    assert tok.get_vocab() != tokenizer(tiny["qwen2_policy"]).get_vocab()
    assert tok.get_vocab() != tokenizer(tiny["llama3_policy"]).get_vocab()
    tokens = math_shepherd_tokens(tok)
    # as the real checkpoint: the verdicts are "▁+" and "▁-", not the bare "+" and "-" it also has
    assert (tokens.good, tokens.bad) == ("▁+", "▁-")
    assert tok.convert_tokens_to_ids(["+", "-"]) != [tokens.good_id, tokens.bad_id]
    # the tag: " ки" is "▁", "ки", so every step ends in the tag's id
    assert tok.convert_ids_to_tokens(tokens.tag_id) == SHEPHERD_TAG
    assert tok.tokenize(" ки") == ["▁", SHEPHERD_TAG]
    question, steps = PROBLEMS[0]
    ids = tok.encode(math_shepherd_text(question, steps))
    assert ids[0] == tok.bos_token_id and ids.count(tokens.tag_id) == len(steps)
    assert ids[-1] == tokens.tag_id
    assert tok.tokenize("7.\nStep") == ["▁", "7", ".", "<0x0A>", "Step"]  # byte fallback, single digits


def test_the_references_spread_their_scores(tiny: dict[str, Path]) -> None:
    """Random heads near 0.5 everywhere would let a reversed orientation pass within tolerance."""
    qwen = [s for question, steps in PROBLEMS for s in qwen_reference(tiny, question, steps)]
    shepherd = [s for question, steps in PROBLEMS for s in shepherd_reference(tiny, question, steps)]
    for scores in (qwen, shepherd):
        assert max(abs(s - 0.5) for s in scores) > 0.2 and min(scores) < 0.5 < max(scores)


# --- vLLM ---------------------------------------------------------------------------------------------
def start_vllm(path: Path, **extra: Any) -> Any:
    """One small CPU engine (fp32, eager, 1,024 tokens, 256 MiB of KV cache, whole prefills)."""
    from vllm import LLM

    return LLM(
        model=str(path),
        dtype="float32",
        enforce_eager=True,
        max_model_len=1024,
        block_size=32,
        kv_cache_memory_bytes=256 * 2**20,
        enable_chunked_prefill=False,
        seed=0,
        **extra,
    )


def stop_vllm(llm: Any) -> None:
    llm.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="class")
def vllm_policy(request: pytest.FixtureRequest, tiny: dict[str, Path]) -> Iterator[tuple[Any, Any]]:
    path = tiny[request.param]
    llm = start_vllm(path)
    yield llm, tokenizer(path)
    stop_vllm(llm)


@pytest.mark.engine
@pytest.mark.parametrize("vllm_policy", ["qwen2_policy", "llama3_policy"], indirect=True)
class TestPoliciesOnVLLM:
    def test_generates_and_cuts_at_a_stop_string(self, vllm_policy: tuple[Any, Any]) -> None:
        from vllm import SamplingParams, TokensPrompt

        llm, tok = vllm_policy
        messages = [{"role": "user", "content": PROBLEMS[1][0]}]
        # as the engines send prompts: token ids of the rendered chat, which already holds any BOS
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt = TokensPrompt(prompt_token_ids=tok.encode(text, add_special_tokens=False))
        whole = SamplingParams(temperature=1.0, seed=1, n=8, max_tokens=48)
        cut = SamplingParams(temperature=1.0, seed=1, n=8, max_tokens=48, stop=["\n\n"])
        (free,), (stopped,) = (llm.generate([prompt], params, use_tqdm=False) for params in (whole, cut))
        assert any(sample.text for sample in free.outputs)
        for full, short in zip(free.outputs, stopped.outputs, strict=True):
            # the same seeded samples, cut before the first "\n\n" (also inside a ".ĊĊ" token)
            assert short.text == full.text.split("\n\n")[0]
            assert (short.finish_reason == "stop") == ("\n\n" in full.text)
        assert any(sample.finish_reason == "stop" for sample in stopped.outputs)


@pytest.fixture(scope="class")
def vllm_qwen_prm(tiny: dict[str, Path]) -> Iterator[Any]:
    from vllm.config import PoolerConfig

    tag_id = tokenizer(tiny["qwen2_prm"]).convert_tokens_to_ids(EXTRA_0)
    pooler = PoolerConfig(task="token_classify", tok_pooling_type="STEP", step_tag_id=tag_id)
    llm = start_vllm(tiny["qwen2_prm"], runner="pooling", pooler_config=pooler)
    yield llm
    stop_vllm(llm)


@pytest.mark.engine
class TestQwenPRMOnVLLM:
    def test_step_scores_match_transformers(
        self, vllm_qwen_prm: Any, tiny: dict[str, Path], record_property: Any
    ) -> None:
        prm = tokenizer(tiny["qwen2_prm"])
        tag_id = prm.convert_tokens_to_ids(EXTRA_0)
        texts = [qwen2_prm_text(prm, question, steps) for question, steps in PROBLEMS]
        outputs = vllm_qwen_prm.encode(texts, pooling_task="token_classify", use_tqdm=False)
        gap = 0.0
        for text, (_, steps), output in zip(texts, PROBLEMS, outputs, strict=True):
            ids = prm.encode(text)
            assert list(output.prompt_token_ids) == ids  # vLLM tokenises the card's text the same way
            data = output.outputs.data  # one row per <extra_0>: the 2 class probabilities
            assert tuple(data.shape) == (len(steps), 2)
            expected = torch.tensor(qwen_prm_scores(tiny["qwen2_prm"], ids, tag_id))
            assert torch.allclose(data[:, 1], expected, atol=AGREEMENT)
            assert torch.allclose(data.sum(dim=-1), torch.ones(len(steps)), atol=1e-5)
            gap = max(gap, float((data[:, 1] - expected).abs().max()))
        record_property("max_abs_difference", gap)


@pytest.fixture(scope="class")
def vllm_shepherd_prm(tiny: dict[str, Path]) -> Iterator[Any]:
    from vllm.config import PoolerConfig

    tokens = math_shepherd_tokens(tokenizer(tiny["math_shepherd_prm"]))
    llm = start_vllm(
        tiny["math_shepherd_prm"],
        runner="pooling",
        convert="classify",
        # from_2_way_softmax scores sigmoid(logit[second] - logit[first]): [bad, good] gives P(good)
        hf_overrides={
            "classifier_from_token": [tokens.bad, tokens.good],
            "method": "from_2_way_softmax",
            "num_labels": 1,
        },
        pooler_config=PoolerConfig(task="token_classify", tok_pooling_type="STEP", step_tag_id=tokens.tag_id),
    )
    yield llm
    stop_vllm(llm)


@pytest.mark.engine
class TestMathShepherdPRMOnVLLM:
    def test_step_scores_match_transformers(
        self, vllm_shepherd_prm: Any, tiny: dict[str, Path], record_property: Any
    ) -> None:
        tok = tokenizer(tiny["math_shepherd_prm"])
        texts = [math_shepherd_text(question, steps) for question, steps in PROBLEMS]
        outputs = vllm_shepherd_prm.encode(texts, pooling_task="token_classify", use_tqdm=False)
        gap = reversed_gap = 0.0
        for text, (_, steps), output in zip(texts, PROBLEMS, outputs, strict=True):
            ids = tok.encode(text)
            assert list(output.prompt_token_ids) == ids  # with the BOS, as the card encodes it
            data = output.outputs.data
            assert tuple(data.shape) == (len(steps), 1)
            expected = torch.tensor(shepherd_scores(tiny["math_shepherd_prm"], ids))
            assert torch.allclose(data[:, 0], expected, atol=AGREEMENT)
            gap = max(gap, float((data[:, 0] - expected).abs().max()))
            reversed_gap = max(reversed_gap, float((data[:, 0] - (1 - expected)).abs().max()))
        assert reversed_gap > 0.1  # the other order, 1 - P(+), would have failed
        record_property("max_abs_difference", gap)
