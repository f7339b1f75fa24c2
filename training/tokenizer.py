"""The project's tokenizer: numbers of up to three digits are single tokens, everything else one character.

Contract: lossless for any text (longer digit runs split into 3-digit chunks, characters outside the
vocabulary become `<unk>`); saved as a `PreTrainedTokenizerFast` that vLLM and transformers load unchanged,
with a chat template that renders the last user turn the way the models were trained.

Why numbers as tokens: in Countdown the small model's typical failures were multi-digit arithmetic and
bookkeeping; with one token per number, arithmetic becomes a lookup and bookkeeping becomes copying.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from engines.spec import PolicySpec, PRMSpec

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
STEP_TAG = "<step>"  # the PRM's step tag: one token that never occurs inside a step
GOOD, BAD = "<good>", "<bad>"  # the PRM's verdict tokens at each step tag
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, STEP_TAG, GOOD, BAD]

# What the serving path reads about the models trained here (written beside their weights): one step
# per line, and a step or a whole Countdown solution never needs more than these many tokens.
POLICY_SPEC = PolicySpec(step_delimiter="\n", max_step_tokens=48, max_solution_tokens=256)
PRM_SPEC = PRMSpec(step_tag=STEP_TAG, good_token=GOOD, bad_token=BAD)

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ message['content'] | trim }}\n"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{% endif %}{% endfor %}"
)


def vocabulary() -> dict[str, int]:
    pieces = list(SPECIAL_TOKENS) + ["\n", "\t"] + [chr(c) for c in range(32, 127)]
    pieces += [f"{n:0{width}d}" for width in (1, 2, 3) for n in range(10**width)]
    vocab: dict[str, int] = {}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    return vocab


def build_tokenizer() -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel(vocab=vocabulary(), unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"\d{1,3}|\D"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=[STEP_TAG, GOOD, BAD],
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(directory)
    return tokenizer
