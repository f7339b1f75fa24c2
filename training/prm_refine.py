"""PRM refinement: teach the trained PRM to check a step's arithmetic, which its labels alone did not.

Contract: `refine_prm(recipe, out)` continues OUT/prm on three things at once and saves it back to
OUT/prm (its card gains a `refine` section):
- its own training data (OUT/prm_data.jsonl and, if present, OUT/prm_data_exact.jsonl), so that it
  stays calibrated on the policy's solutions;
- counterfactual last steps (`counterfactual_records`): for a policy solution whose first steps are
  legal down to two numbers, the last step claiming the target through each operator, labelled 1 when
  the arithmetic gives the target and 0 when it does not (the right one if any, and one wrong one);
- an arithmetic target (`refine_example`): at every step's '=', the token of the result its operation
  truly gives, whatever the step claims (cross-entropy, weighted by `arithmetic_weight`).

Why: the default policy copies the target on its last step whatever its arithmetic gives, and
most of its wrong solutions are such fake last steps (`ponder eval prm-failures`). A PRM started from
the policy inherits no check for that, and labels alone taught it too slowly. The arithmetic target
makes it compute the true result where the claimed one is written.

All labels are exact: a counterfactual last step's label is the checker's verdict on the whole solution.
A target in a refinement example is a verdict label in [0, 1] at a step tag, `TOKEN_TARGET` + a token
id at a step's '=', or IGNORE.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, LlamaForCausalLM

from tasks.countdown import OPS, apply, parse_prompt
from training.checkpoint import read_card, save_checkpoint
from training.loop import IGNORE, Example, FitConfig, LossFn, MetricsLog, fit, resume_path
from training.prm import labelled_records
from training.sft import encode_prompt
from training.tokenizer import BAD, GOOD, PRM_SPEC, STEP_TAG
from verifiers.countdown import legal_prefix_state, true_result
from verifiers.hf_prm import verdict_logits

TOKEN_TARGET = 2.0  # token targets sit above the verdict labels' [0, 1]


def counterfactual_records(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """For each solution of two steps or more, its legal prefix down to two numbers, finished by a
    last step that claims the target (see the module docstring); the prefix's steps carry no label."""
    rng = random.Random(seed)
    made: list[dict[str, Any]] = []
    for record in records:
        problem = parse_prompt(record["prompt"])
        if problem is None or len(record["completions"]) < 2:
            continue
        prefix = record["completions"][: len(problem.numbers) - 2]
        state = legal_prefix_state(problem, prefix) if len(prefix) == len(problem.numbers) - 2 else None
        if state is None or len(state) != 2:
            continue
        right, wrong = target_claims(max(state), min(state), problem.target)
        finished = [(text, 1.0) for text in right[:1]] + ([(rng.choice(wrong), 0.0)] if wrong else [])
        for text, label in finished:
            labels = [None] * len(prefix) + [label]
            made.append({"prompt": record["prompt"], "completions": [*prefix, text], "soft_labels": labels})
    return made


def target_claims(a: int, b: int, target: int) -> tuple[list[str], list[str]]:
    """Last steps `a op b=T [T]` for every operator the rules allow: those whose arithmetic gives the
    target, and those whose does not."""
    right: list[str] = []
    wrong: list[str] = []
    for op in OPS:
        result = apply(op, a, b)
        if result is not None:
            (right if result == target else wrong).append(f"{a}{op}{b}={target} [{target}]\n")
    return right, wrong


def refine_example(tokenizer: Any, record: dict[str, Any], tag_id: int, equals_id: int) -> Example:
    """Verdict labels at the step tags (None: no loss) and the true result's token at each '='."""
    ids = encode_prompt(tokenizer, record["prompt"])
    targets = [float(IGNORE)] * len(ids)
    for text, label in zip(record["completions"], record["soft_labels"], strict=True):
        at_equals = result_target(tokenizer, true_result(text))
        for token in tokenizer.encode(text, add_special_tokens=False):
            ids.append(token)
            targets.append(at_equals if token == equals_id else float(IGNORE))
        ids.append(tag_id)
        targets.append(float(IGNORE) if label is None else float(label))
    return Example(ids, targets)


def result_target(tokenizer: Any, result: int | None) -> float:
    """TOKEN_TARGET + the result's token id, or IGNORE when there is no result or no single token."""
    if result is None:
        return float(IGNORE)
    token_id = tokenizer.convert_tokens_to_ids(str(result))  # None in a vocabulary without unk
    return float(IGNORE) if token_id in (None, tokenizer.unk_token_id) else TOKEN_TARGET + int(token_id)


def refine_loss(good_id: int, bad_id: int, arithmetic_weight: float) -> LossFn:
    def loss(
        model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        logits = model(input_ids=ids, attention_mask=mask).logits
        tags = (targets >= 0) & (targets <= 1)
        verdicts = verdict_logits(logits, good_id, bad_id)[tags]
        total = F.binary_cross_entropy_with_logits(verdicts, targets[tags])
        results = targets >= TOKEN_TARGET
        if arithmetic_weight > 0 and bool(results.any()):
            truth = (targets[results] - TOKEN_TARGET).long()
            total = total + arithmetic_weight * F.cross_entropy(logits[results], truth)
        return total

    return loss


def refine_prm(recipe: dict[str, Any], out: Path) -> None:
    table = recipe["prm_refine"]
    tokenizer = AutoTokenizer.from_pretrained(str(out / "policy"))
    tag_id, good_id, bad_id = (int(tokenizer.convert_tokens_to_ids(t)) for t in (STEP_TAG, GOOD, BAD))
    (equals_id,) = tokenizer.encode("=", add_special_tokens=False)
    records = labelled_records(out)
    counterfactual = counterfactual_records(records, int(table["counterfactual_seed"]))
    examples = [refine_example(tokenizer, r, tag_id, equals_id) for r in records + counterfactual]
    model = LlamaForCausalLM.from_pretrained(str(out / "prm"), dtype=torch.float32)
    fit_config = FitConfig.from_table(table, int(table["seed"]))
    weight = float(table["arithmetic_weight"])
    log = MetricsLog(out / "metrics.jsonl")
    log.write(stage="prm_refine", sequences=len(examples), counterfactual=len(counterfactual))
    started = time.time()
    loss = refine_loss(good_id, bad_id, weight)
    final_loss = fit(
        model,
        examples,
        loss,
        fit_config,
        tokenizer.pad_token_id,
        log,
        "prm_refine",
        resume_path(out, "prm_refine"),
    )
    card = {**(read_card(out / "prm") or {"kind": "prm"}), "recipe": recipe}
    card["refine"] = {
        "recipe": table,
        "train_seconds": round(time.time() - started, 1),
        "train_loss": round(final_loss, 5),
        "sequences": len(examples),
        "counterfactual_sequences": len(counterfactual),
    }
    save_checkpoint(model, tokenizer, out / "prm", card, PRM_SPEC)
