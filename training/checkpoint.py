"""Model configs and checkpoint directories that vLLM and transformers both load.

Contract: `llama_config` builds the small Llama-architecture config; `save_checkpoint` writes a Hugging
Face directory (safetensors weights, config, tokenizer, generation config) plus `ponder_spec.json`, what
the serving path reads about the model (`engines.spec`), and `ponder_card.json`, the recipe and the
metrics measured on that checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import GenerationConfig, LlamaConfig, PreTrainedModel, PreTrainedTokenizerFast

from engines.spec import PolicySpec, PRMSpec, write_spec

CARD = "ponder_card.json"


def llama_config(tokenizer: PreTrainedTokenizerFast, arch: dict[str, Any]) -> LlamaConfig:
    heads = int(arch["num_heads"])
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=int(arch["hidden_size"]),
        intermediate_size=int(arch["intermediate_size"]),
        num_hidden_layers=int(arch["num_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=int(arch["max_position_embeddings"]),
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["LlamaForCausalLM"],
    )


def save_checkpoint(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    directory: Path,
    card: dict[str, Any],
    spec: PolicySpec | PRMSpec,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_spec(directory, spec)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(directory)
    write_card(directory, card)


def read_card(directory: Path) -> dict[str, Any]:
    path = directory / CARD
    return json.loads(path.read_text()) if path.exists() else {}


def write_card(directory: Path, card: dict[str, Any]) -> None:
    (directory / CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def update_card(directory: Path, **fields: Any) -> None:
    card = read_card(directory)
    card.update(fields)
    write_card(directory, card)


def record_metrics(models: Path, metrics: dict[str, Any]) -> None:
    """Held-out metrics of a policy/PRM pair, written into both of their cards."""
    for name in ("policy", "prm"):
        update_card(models / name, metrics=metrics)
