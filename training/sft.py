"""Policy initialisation by behaviour cloning: next-token loss on solver traces, solution tokens only.

Contract: `train_policy` builds a fresh Llama-architecture model from the recipe's `[policy]` table,
fits it on the traces, and returns it (the pipeline saves it as a checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from training.checkpoint import llama_config
from training.loop import IGNORE, Example, FitConfig, MetricsLog, fit
from training.traces import Trace


def encode_prompt(tokenizer: PreTrainedTokenizerFast, prompt: str) -> list[int]:
    """Prompt token ids exactly as the engines send them: BOS, then the text."""
    return [tokenizer.bos_token_id, *tokenizer.encode(prompt, add_special_tokens=False)]


def sft_example(tokenizer: PreTrainedTokenizerFast, trace: Trace) -> Example:
    prompt = encode_prompt(tokenizer, trace.prompt)
    solution = [*tokenizer.encode(trace.solution, add_special_tokens=False), tokenizer.eos_token_id]
    ids = prompt + solution
    # targets[t] is the token at t+1 (shifted in the loss); prompt positions are ignored.
    targets = [float(IGNORE)] * (len(prompt) - 1) + [float(t) for t in solution] + [float(IGNORE)]
    return Example(ids, targets)


def next_token_loss(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask).logits
    return F.cross_entropy(logits.flatten(0, 1), targets.long().flatten(), ignore_index=IGNORE)


def train_policy(
    tokenizer: PreTrainedTokenizerFast,
    traces: list[Trace],
    arch: dict[str, Any],
    fit_config: FitConfig,
    log: MetricsLog,
    resume: Path | None = None,
) -> LlamaForCausalLM:
    torch.manual_seed(fit_config.seed)
    model = LlamaForCausalLM(llama_config(tokenizer, arch))
    params = sum(p.numel() for p in model.parameters())
    log.write(stage="policy_sft", parameters=params, traces=len(traces))
    examples = [sft_example(tokenizer, trace) for trace in traces]
    fit(model, examples, next_token_loss, fit_config, tokenizer.pad_token_id, log, "policy_sft", resume)
    return model
