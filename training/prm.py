"""PRM training, Math-Shepherd style: after each step a step tag; at the tag the model says good or bad.

Contract: `train_prm` reads OUT/prm_data.jsonl (TRL stepwise format with soft labels), starts from the
policy's weights (or fresh, per the recipe), and fits binary cross-entropy between
sigmoid(logit[good] - logit[bad]) at each tag and the step's soft label, i.e. a value function of the
policy that produced the labels. Saves OUT/prm as a checkpoint vLLM's pooling runner serves.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, LlamaForCausalLM

from training.checkpoint import llama_config, save_checkpoint
from training.loop import IGNORE, Example, FitConfig, LossFn, MetricsLog, fit
from training.sft import encode_prompt
from training.tokenizer import BAD, GOOD, STEP_TAG
from verifiers.hf_prm import verdict_logits
from verifiers.prm import prm_input_ids


def prm_example(tokenizer: Any, record: dict[str, Any], tag_id: int) -> Example:
    steps = [tokenizer.encode(text, add_special_tokens=False) for text in record["completions"]]
    ids = prm_input_ids(encode_prompt(tokenizer, record["prompt"]), steps, tag_id)
    labels = iter(record["soft_labels"])
    targets = [float(next(labels)) if token == tag_id else float(IGNORE) for token in ids]
    return Example(ids, targets)


def verdict_loss(good_id: int, bad_id: int) -> LossFn:
    def loss(
        model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        logits = verdict_logits(model(input_ids=ids, attention_mask=mask).logits, good_id, bad_id)
        keep = targets != IGNORE
        return F.binary_cross_entropy_with_logits(logits[keep], targets[keep])

    return loss


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_prm(recipe: dict[str, Any], out: Path) -> None:
    table = recipe["prm"]
    tokenizer = AutoTokenizer.from_pretrained(str(out / "policy"))
    tag_id, good_id, bad_id = (int(tokenizer.convert_tokens_to_ids(t)) for t in (STEP_TAG, GOOD, BAD))
    records = [r for r in read_records(out / "prm_data.jsonl") if r["completions"]]
    examples = [prm_example(tokenizer, r, tag_id) for r in records]
    torch.manual_seed(int(recipe["seed"]))
    if table.get("init", "policy") == "policy":
        model = LlamaForCausalLM.from_pretrained(str(out / "policy"), dtype=torch.float32)
    else:
        model = LlamaForCausalLM(llama_config(tokenizer, recipe["policy"]))
    fit_config = FitConfig(
        steps=int(table["steps"]),
        batch_size=int(table["batch_size"]),
        lr=float(table["lr"]),
        warmup=int(table["warmup"]),
        seed=int(recipe["seed"]),
    )
    started = time.time()
    log = MetricsLog(out / "metrics.jsonl")
    log.write(
        stage="prm", sequences=len(examples), labelled_steps=sum(len(r["completions"]) for r in records)
    )
    final_loss = fit(
        model, examples, verdict_loss(good_id, bad_id), fit_config, tokenizer.pad_token_id, log, "prm"
    )
    card = {
        "kind": "prm",
        "recipe": recipe,
        "step_tag": STEP_TAG,
        "verdict_tokens": {"good": GOOD, "bad": BAD},
        "train_seconds": round(time.time() - started, 1),
        "train_loss": round(final_loss, 5),
        "labelled_sequences": len(examples),
    }
    save_checkpoint(model, tokenizer, out / "prm", card)
