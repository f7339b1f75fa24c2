"""Tiny random-weight models of real architectures and tokenizer styles, built offline inside tests.

Contract: each builder writes a complete Hugging Face model directory (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json with the family's chat template where it has one,
generation_config.json) into the directory it is given, and returns that directory. Nothing is
downloaded. The same arguments give the same files (the tokenizers are trained on a built-in corpus,
the weights drawn from a seeded generator), and each model builds in about a second.

- `qwen2_policy`: `Qwen2ForCausalLM` with a Qwen2-style byte-level BPE (Qwen2's split regex, NFC, no BOS
  token, `<|endoftext|>` / `<|im_start|>` / `<|im_end|>` / `<extra_0>` appended after the merges, eos
  `<|im_end|>`, pad `<|endoftext|>`) and the ChatML template with Qwen2.5's default system message.
- `qwen2_prm`: `Qwen2ForProcessRewardModel` as Qwen2.5-Math-PRM ships it: the Qwen2 body (`model.*`) and
  the score head `score.0` (h x h), ReLU, `score.2` (2 x h), no `lm_head`; the same tokenizer as the
  policy (one vocabulary, `<extra_0>` the step separator). `qwen2_prm_logits` is its transformers
  reference (the 2 class logits at every position); `qwen2_prm_text` renders the model card's input.
- `llama3_policy`: `LlamaForCausalLM` with a Llama-3-style byte-level BPE (Llama-3's split regex, no
  normaliser, no unk token, `<|begin_of_text|>` added by the post-processor) and Llama-3's chat template;
  eos `<|eot_id|>`.
- `math_shepherd_prm`: `MistralForCausalLM` with a Mistral-style (SentencePiece-like) BPE: Metaspace
  "▁" with the prefix on the first piece, byte fallback (newline is `<0x0A>`, never merged), single
  digits, `<unk>` / `<s>` / `</s>` first; a different vocabulary from the policies'. As in the real
  checkpoint, `encode("+ -")` without BOS is the verdict pair `▁+`, `▁-` (not the bare `+`, `-`) and a
  step's " ки" ends in the tag token `ки` (" ки" is `▁`, `ки`). `math_shepherd_tokens` names the ids,
  `math_shepherd_text` renders the model card's input. Saved by `LlamaTokenizer` as the real one; for
  model type `mistral` transformers 5 loads its tokenizer.json as it is (`TokenizersBackend`), as vLLM does.

Sizes: hidden 64, 2 layers, 2 query heads of 32 (vLLM's CPU attention needs head sizes >= 32), 1 KV head
(grouped-query attention, as the real models), vocabularies of 1-2 thousand; config `vocab_size` equals
the tokenizer's length (real Qwen pads it; a random model could then sample ids the tokenizer lacks).
Weights are drawn with std 1/sqrt(hidden) so PRM scores spread over (0, 1) instead of all sitting at 0.5.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Model,
)

SEED = 0
HIDDEN = 64
ARCH: dict[str, Any] = {
    "hidden_size": HIDDEN,
    "intermediate_size": 2 * HIDDEN,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 2048,
    "initializer_range": HIDDEN**-0.5,
}

# Qwen2 (transformers' Qwen2Tokenizer) and Llama-3 (its tokenizer.json): digits one by one vs up to three.
SPLIT_HEAD = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
SPLIT_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_SPLIT = SPLIT_HEAD + r"\p{N}" + SPLIT_TAIL
LLAMA3_SPLIT = SPLIT_HEAD + r"\p{N}{1,3}" + SPLIT_TAIL

ENDOFTEXT, IM_START, IM_END, EXTRA_0 = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"
QWEN2_SPECIALS = [ENDOFTEXT, IM_START, IM_END, EXTRA_0]
BEGIN, END, HEADER_START, HEADER_END, EOT = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)
LLAMA3_SPECIALS = [BEGIN, END, HEADER_START, HEADER_END, EOT]
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
SHEPHERD_TAG, SHEPHERD_GOOD, SHEPHERD_BAD = "ки", "+", "-"
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

QWEN2_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + QWEN_DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


# --- corpus ------------------------------------------------------------------------------------------
NAMES = ["Janet", "Tom", "Ana", "Li", "Omar", "Sara", "Ken", "Maya", "Priya", "Lucas", "Noah", "Emma"]
THINGS = ["eggs", "apples", "books", "coins", "marbles", "pencils", "cookies", "stamps", "tickets", "shells"]
CONNECTIVES = [
    "First,",
    "Next,",
    "Then",
    "Now",
    "Since",
    "Because",
    "Hence",
    "Thus,",
    "Finally,",
    "Note that",
]
PHRASES = [
    "we substitute the value into the equation",
    "the remaining quantity is the difference of the two amounts",
    "multiplying both sides by the denominator gives an integer",
    "the perimeter of the rectangle is twice the sum of its sides",
    "the probability is the number of favorable outcomes over all outcomes",
    "we simplify the fraction by dividing the numerator and denominator",
    "the average equals the total divided by the number of values",
    "each triangle has three angles whose measures add up to a straight angle",
    "the square root of a perfect square is a whole number",
    "solving the linear equation for the unknown variable",
    "the percentage increase is computed relative to the original price",
    "we factor the quadratic expression and find its roots",
]


def math_problems(count: int, seed: int = SEED) -> Iterator[tuple[str, list[str]]]:
    """Seeded word problems with step-by-step solutions: (question, steps), steps without delimiters."""
    rng = random.Random(seed)
    for _ in range(count):
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        a, b, c = rng.randint(2, 999), rng.randint(2, 40), rng.randint(2, 9)
        total = (a + b) * c
        question = (
            f"{name} has {a} {thing} and buys {b} more. Each of them is worth ${c}. "
            f"What is the total value, in dollars?"
        )
        steps = [
            f"Step 1: {name} starts with {a} {thing} and gets {b} more, so {a} + {b} = {a + b}.",
            f"Step 2: {rng.choice(CONNECTIVES)} {rng.choice(PHRASES)}: $({a} + {b}) \\times {c} = {total}$.",
            f"Step 3: Check: ${total} \\div {c} = {a + b}$, and {a + b} - {b} = {a}; it is right!",
            f"Therefore, the answer is $\\boxed{{{total}}}$.",
        ]
        if rng.random() < 0.5:
            x = rng.randint(2, 20)
            fraction = f"$\\frac{{{x * c}}}{{{c}}} = x$"
            steps.insert(2, f"Let $x = {x}$; {rng.choice(PHRASES)}, so {fraction}, as follows:")
        yield question, steps


def solution_text(question: str, steps: Sequence[str]) -> str:
    """A question and its solution as chat models write them: steps separated by blank lines."""
    return question + "\n\n" + "\n\n".join(steps) + "\n"


def math_shepherd_text(question: str, steps: Sequence[str]) -> str:
    """Math-Shepherd's input (model card): question, a space, then each step followed by " ки", the
    steps one per line."""
    return f"{question} " + "\n".join(f"{step} {SHEPHERD_TAG}" for step in steps)


def policy_corpus() -> list[str]:
    return [solution_text(q, steps) for q, steps in math_problems(400)]


def shepherd_corpus() -> list[str]:
    return [math_shepherd_text(q, steps) for q, steps in math_problems(300, seed=SEED + 1)]


# --- tokenizers -----------------------------------------------------------------------------------
def byte_level_bpe(split: str, vocab_size: int, normalizer: Any = None) -> Tokenizer:
    """A byte-level BPE (GPT-2 bytes, the family's split regex) trained on the policy corpus; no
    special tokens yet (the real families append them after the merges)."""
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(policy_corpus(), trainer=trainer)
    return tokenizer


def bpe_parts(core: Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A trained BPE's vocabulary and merges."""
    model = json.loads(core.to_str())["model"]
    return dict(model["vocab"]), [(a, b) for a, b in model["merges"]]


def qwen2_tokenizer() -> PreTrainedTokenizerFast:
    """Qwen2-style (transformers' `Qwen2Tokenizer`, as Qwen's checkpoints name it): NFC, Qwen2's regex
    (one digit a token), no BOS and no unk, the special tokens after the merges."""
    from transformers import Qwen2Tokenizer

    vocab, merges = bpe_parts(byte_level_bpe(QWEN2_SPLIT, 2048, normalizers.NFC()))
    for token in QWEN2_SPECIALS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        extra_special_tokens=[IM_START, EXTRA_0],
        model_max_length=ARCH["max_position_embeddings"],
    )
    tokenizer.chat_template = QWEN2_CHAT_TEMPLATE
    return tokenizer


def llama3_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-3-style (a plain `tokenizer.json`, as Meta ships it): Llama-3's regex (up to three digits a
    token), no normaliser, no unk, `<|begin_of_text|>` added by the post-processor."""
    core = byte_level_bpe(LLAMA3_SPLIT, 1536)
    core.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in LLAMA3_SPECIALS])
    bos_id = core.token_to_id(BEGIN)
    core.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BEGIN} $A", pair=f"{BEGIN} $A {BEGIN} $B:1", special_tokens=[(BEGIN, bos_id)]
            ),
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BEGIN,
        eos_token=EOT,
        unk_token=None,
        extra_special_tokens=[END, HEADER_START, HEADER_END],
        clean_up_tokenization_spaces=False,
        model_max_length=ARCH["max_position_embeddings"],
    )
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    return tokenizer


def byte_tokens() -> list[str]:
    return [f"<0x{byte:02X}>" for byte in range(256)]


def sentencepiece_style_bpe(vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a Mistral-style BPE trained on the Math-Shepherd corpus: `<unk>`, `<s>`,
    `</s>`, the 256 byte-fallback tokens, then the pieces, with what SentencePiece never learns dropped
    (see `sentencepiece_piece`)."""
    core = Tokenizer(models.BPE(unk_token=UNK, byte_fallback=True, fuse_unk=True))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False)
    core.train_from_iterator(shepherd_corpus(), trainer=trainer)
    trained, trained_merges = bpe_parts(core)
    kept = [piece for piece in sorted(trained, key=trained.__getitem__) if sentencepiece_piece(piece)]
    vocab = {token: index for index, token in enumerate([UNK, BOS, EOS, *byte_tokens(), *kept])}
    merges = [(a, b) for a, b in trained_merges if a + b in vocab]
    if SHEPHERD_TAG not in vocab:  # the tag is one piece, as in the real vocabulary
        vocab[SHEPHERD_TAG] = len(vocab)
        merges.append((SHEPHERD_TAG[0], SHEPHERD_TAG[1]))
    return vocab, merges


def sentencepiece_piece(piece: str) -> bool:
    """Whether a trained piece stays: no newline (byte fallback `<0x0A>`, as in Mistral's vocabulary),
    digits only alone (SentencePiece's split_digits) and the tag's letters only as `к`, `и`, `ки` (so a
    step's " ки" is `▁`, `ки` and ends in the tag)."""
    if "\n" in piece:
        return False
    if any(ch.isdigit() for ch in piece) and len(piece) > 1:
        return False
    return not (set(piece) & set(SHEPHERD_TAG)) or piece in ("к", "и", SHEPHERD_TAG)


def math_shepherd_tokenizer() -> PreTrainedTokenizerFast:
    """Mistral-style, as math-shepherd-mistral-7b-prm ships it (transformers' `LlamaTokenizer`: Metaspace,
    byte fallback, `<s>` added by the post-processor); no chat template (a base model)."""
    from transformers import LlamaTokenizer

    vocab, merges = sentencepiece_style_bpe(1024)
    tokenizer = LlamaTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        add_bos_token=True,
        add_eos_token=False,
        model_max_length=ARCH["max_position_embeddings"],
    )
    return tokenizer


# --- models ---------------------------------------------------------------------------------------
def seeded_model(model_class: Callable[[Any], PreTrainedModel], config: PretrainedConfig) -> PreTrainedModel:
    """A randomly initialised model, the same for the same config (transformers' own init, seeded)."""
    torch.manual_seed(SEED)
    return model_class(config).eval()


def save_model(
    directory: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    generation: GenerationConfig,
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    save_tokenizer(tokenizer, directory)
    generation.save_pretrained(directory)
    return directory


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: Path) -> None:
    """The chat template inside tokenizer_config.json, where Qwen2.5's and Llama-3's checkpoints keep it
    (transformers 5 would write chat_template.jinja; both load the same)."""
    tokenizer.save_pretrained(directory, save_jinja_files=False)


def qwen2_config(tokenizer: PreTrainedTokenizerFast, architecture: str) -> Qwen2Config:
    """Qwen2.5-Math's settings at toy size: biased q/k/v (Qwen2's), untied embeddings, rope base 10000,
    bos `<|endoftext|>` in the config although the tokenizer has no BOS, as in Qwen's config.json."""
    return Qwen2Config(
        vocab_size=len(tokenizer),
        **ARCH,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_sliding_window=False,
        bos_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        architectures=[architecture],
    )


def qwen2_policy(directory: Path) -> Path:
    """A Qwen2 chat policy; its generation_config.json carries Qwen2.5-Instruct's sampling defaults
    (vLLM applies them to requests that leave those fields unset) and stops on `<|im_end|>` or
    `<|endoftext|>`."""
    tokenizer = qwen2_tokenizer()
    model = seeded_model(Qwen2ForCausalLM, qwen2_config(tokenizer, "Qwen2ForCausalLM"))
    end_ids = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(ENDOFTEXT)]
    generation = GenerationConfig(
        bos_token_id=end_ids[1],
        eos_token_id=end_ids,
        pad_token_id=end_ids[1],
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.05,
    )
    return save_model(directory, model, tokenizer, generation)


def qwen2_prm(directory: Path) -> Path:
    """A `Qwen2ForProcessRewardModel` checkpoint as Qwen2.5-Math-PRM ships it: `model.*` (the Qwen2 body),
    `score.0.weight/bias` [h, h] and `score.2.weight/bias` [2, h], no `lm_head`; the policy's tokenizer."""
    directory = Path(directory)
    tokenizer = qwen2_tokenizer()
    config = qwen2_config(tokenizer, "Qwen2ForProcessRewardModel")
    config.num_labels = 2
    config.dtype = torch.float32  # as the policy's save records it; vLLM's "auto" would guess otherwise
    body = seeded_model(Qwen2Model, config)
    tensors = {f"model.{name}": tensor for name, tensor in body.state_dict().items()}
    tensors.update(score_head(config.hidden_size, config.num_labels))
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, directory / "model.safetensors", {"format": "pt"}
    )
    config.save_pretrained(directory)
    save_tokenizer(tokenizer, directory)
    end_ids = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(ENDOFTEXT)]
    GenerationConfig(bos_token_id=end_ids[1], eos_token_id=end_ids).save_pretrained(directory)
    return directory


def score_head(hidden: int, labels: int) -> dict[str, torch.Tensor]:
    """Linear(h, h), ReLU, Linear(h, labels), He-initialised so the 2 logits differ by about 1."""
    generator = torch.Generator().manual_seed(SEED + 1)
    shapes = {"score.0": (hidden, hidden), "score.2": (labels, hidden)}
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        tensors[f"{name}.weight"] = torch.randn(shape, generator=generator) * (2 / hidden) ** 0.5
        tensors[f"{name}.bias"] = torch.randn(shape[0], generator=generator) * 0.1
    return tensors


def qwen2_prm_logits(directory: Path, input_ids: Sequence[int]) -> torch.Tensor:
    """The transformers reference of `qwen2_prm`: the 2 class logits at every position, [len(ids), 2]
    (`Qwen2Model` with the checkpoint's body, then the score head read from the safetensors)."""
    weights = load_file(str(Path(directory) / "model.safetensors"))
    body = Qwen2Model(Qwen2Config.from_pretrained(directory)).eval()
    body.load_state_dict({k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")})
    hidden = body.config.hidden_size
    head = torch.nn.Sequential(
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, body.config.num_labels)
    )
    head.load_state_dict({k.removeprefix("score."): v for k, v in weights.items() if k.startswith("score.")})
    with torch.no_grad():
        states = body(input_ids=torch.tensor([list(input_ids)])).last_hidden_state[0]
        return head(states)


def qwen2_prm_text(tokenizer: PreTrainedTokenizerFast, question: str, steps: Sequence[str]) -> str:
    """Qwen2.5-Math-PRM's input (model card): its system prompt, the question as the user turn, the steps
    joined by `<extra_0>` plus one after the last as the assistant turn; encode it as it is."""
    messages = [
        {"role": "system", "content": QWEN_PRM_SYSTEM},
        {"role": "user", "content": question},
        {"role": "assistant", "content": EXTRA_0.join(steps) + EXTRA_0},
    ]
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))


def llama3_policy(directory: Path) -> Path:
    """A Llama-3 chat policy (Llama-3-Instruct's settings at toy size: rope base 500000, untied
    embeddings); generation_config.json stops on `<|end_of_text|>` or `<|eot_id|>` and carries
    Llama-3-Instruct's sampling defaults."""
    tokenizer = llama3_tokenizer()
    end_ids = [tokenizer.convert_tokens_to_ids(END), tokenizer.convert_tokens_to_ids(EOT)]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        **ARCH,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=end_ids[1],
        architectures=["LlamaForCausalLM"],
    )
    model = seeded_model(LlamaForCausalLM, config)
    generation = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=end_ids, do_sample=True, temperature=0.6, top_p=0.9
    )
    return save_model(directory, model, tokenizer, generation)


def math_shepherd_prm(directory: Path) -> Path:
    """A Math-Shepherd PRM: a `MistralForCausalLM` whose verdict is the next-token logits of `▁+` vs `▁-`
    at each `ки` (see `math_shepherd_tokens`); its own Mistral-style vocabulary."""
    tokenizer = math_shepherd_tokenizer()
    config = MistralConfig(
        vocab_size=len(tokenizer),
        **ARCH,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        architectures=["MistralForCausalLM"],
    )
    model = seeded_model(MistralForCausalLM, config)
    generation = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return save_model(directory, model, tokenizer, generation)


@dataclass(frozen=True)
class ShepherdTokens:
    """Math-Shepherd's ids as its model card computes them: `tag_id = encode("ки")[-1]`,
    `good_id, bad_id = encode("+ -")` without BOS; `good`, `bad` are those ids' token strings (`▁+`, `▁-`),
    what vLLM's `classifier_from_token` needs."""

    tag_id: int
    good_id: int
    bad_id: int
    good: str
    bad: str


def math_shepherd_tokens(tokenizer: PreTrainedTokenizerFast) -> ShepherdTokens:
    tag_id = int(tokenizer.encode(SHEPHERD_TAG)[-1])
    good_id, bad_id = (
        int(i) for i in tokenizer.encode(f"{SHEPHERD_GOOD} {SHEPHERD_BAD}", add_special_tokens=False)
    )
    good, bad = tokenizer.convert_ids_to_tokens([good_id, bad_id])
    return ShepherdTokens(tag_id, good_id, bad_id, str(good), str(bad))


def causal_lm_logits(directory: Path, input_ids: Sequence[int]) -> torch.Tensor:
    """A causal LM's next-token logits at every position, [len(ids), vocab] (the transformers reference
    of a Math-Shepherd-style PRM)."""
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([list(input_ids)])).logits[0]
