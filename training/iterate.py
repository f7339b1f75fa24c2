"""The learning loop, `ponder train`'s stage `iterate`: search -> verify -> train, round after round.

Contract: `iterate(recipe, out, hooks)` runs the recipe's `[iterate]` rounds (ReST-EM / expert iteration)
on the pair in OUT/policy and OUT/prm. Round r:
  1. search   the served search itself (a `Controller` on the current pair, the recipe's strategy and
              budget) solves fresh train-split tasks; the task's checker keeps up to `keep_per_task`
              distinct verified solutions among every sample the search drew
                                                                   -> OUT/rounds/r/search.jsonl
  2. policy   the current policy fine-tuned on the kept solutions (as token ids, exactly as sampled),
              mixed with fresh solver traces where the task has a solver       -> OUT/rounds/r/policy
  3. labels   Monte-Carlo step labels of the new policy's solutions to other fresh train tasks, and
              exact-only labels (no rollouts) of its solutions to more of them
                                                                   -> OUT/rounds/r/prm_data.jsonl
  4. prm      the current PRM refitted on those labels (mixed with `prm_replay` x as many it was fitted on
              before, and with `prm_refine`'s counterfactual last steps and arithmetic target where the
              recipe asks), in its own format (ponder or math-shepherd,
              `verifiers.prm_format`), so a user's public-format PRM stays servable  -> OUT/rounds/r/prm
     gate     with `prm_gate`, the refit is kept only if it ranks the new policy's dev solutions at least
              as well as the PRM before it; otherwise that one stays       -> OUT/rounds/r/prm_gate.json
  5. measure  the hooks' dev metrics of the new pair    -> OUT/rounds/r/metrics.json and OUT/metrics.jsonl
OUT/rounds/0 keeps the pair the loop started from; the last round's pair is copied to OUT/policy and
OUT/prm, what `ponder serve --models OUT` serves. Every part of a round is written once and skipped when
present, and the fits resume (`training.loop`), so an interrupted loop picks up where it stopped.

Tasks come from Countdown tiers (`problems_per_tier`) or a task file (`tasks`, a math JSONL graded by
math-verify), train split only (`tasks.split`); `round_tasks` is what the partition test checks. Engines
and metrics are injected (`LoopHooks`): training does not import the server or the evaluations.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from engines.base import InvalidPrompt, PolicyEngine, Sampling
from engines.spec import read_prm_spec, verdict_tokens
from searchers.base import Trace
from searchers.controller import Controller, Limits, SearchRequest
from searchers.registry import default_searchers
from tasks.countdown import SolutionCounter, generate, reference_solution, solution_text
from tasks.datasets import Task, countdown_problem, countdown_task, load_task_file
from tasks.split import split_of_text
from training.checkpoint import read_card, write_card
from training.loop import IGNORE, Example, FitConfig, MetricsLog, fit, resume_path
from training.prm_refine import counterfactual_records, refine_loss, result_target
from training.sft import next_token_loss
from verifiers.countdown import true_result
from verifiers.montecarlo import Labelled, label_problems, label_tasks
from verifiers.outcome import grade
from verifiers.prm import Candidate, StepVerifier
from verifiers.prm_format import PRMFormat, prm_format, tag_positions

log = logging.getLogger("ponder.train.iterate")
CONCURRENT_SEARCHES = 64  # searches in flight at once: they batch together in the engines


class Pair(Protocol):
    policy: PolicyEngine
    prm: StepVerifier

    def shutdown(self) -> None: ...


@dataclass(frozen=True)
class LoopHooks:
    """What the command line injects: engine start-up and the dev metrics of a pair."""

    start_pair: Callable[[Path, Path], Pair]
    measure: Callable[[dict[str, Any], Path, Path], dict[str, Any]]  # (recipe, policy dir, prm dir)


def iterate(recipe: dict[str, Any], out: Path, hooks: LoopHooks) -> None:
    if "iterate" not in recipe:
        log.info("recipe %s has no [iterate]: no learning loop", recipe["name"])
        return
    table = recipe["iterate"]
    strategies = default_searchers()
    if table["strategy"] not in strategies:
        raise SystemExit(
            f"[iterate] strategy {table['strategy']!r} is not one of {', '.join(sorted(strategies))}"
        )
    rounds = out / "rounds"
    start = rounds / "0"
    if not (start / "done").exists():
        for name in ("policy", "prm"):
            copy_checkpoint(out / name, start / name)
        finish_round(recipe, out, 0, {}, hooks)
    for number in range(1, int(table["rounds"]) + 1):
        if not (rounds / str(number) / "done").exists():
            run_round(recipe, out, number, hooks)
    last = rounds / str(int(table["rounds"]))
    for name in ("policy", "prm"):
        copy_checkpoint(last / name, out / name)


def run_round(recipe: dict[str, Any], out: Path, number: int, hooks: LoopHooks) -> None:
    table = recipe["iterate"]
    before, here = out / "rounds" / str(number - 1), out / "rounds" / str(number)
    here.mkdir(parents=True, exist_ok=True)
    log.info("round %d: search, fine-tune, relabel, refit -> %s", number, here)
    seconds: dict[str, float] = {}
    tasks = round_tasks(recipe, number)

    started = time.time()
    if not (here / "search.jsonl").exists():
        records = with_pair(hooks, before, lambda pair: search_round(pair, tasks, table, number))
        write_jsonl(here / "search.jsonl", records)
        seconds["search"] = round(time.time() - started, 1)
    searched = read_jsonl(here / "search.jsonl")
    kept = [(r["prompt_ids"], ids) for r in searched for ids in r["kept"]]

    started = time.time()
    if not (here / "policy" / "done").exists():
        fine_tune_policy(before / "policy", here, kept, solver_traces(recipe, tasks, number), table, number)
        seconds["policy"] = round(time.time() - started, 1)

    started = time.time()
    if not (here / "prm_data.jsonl").exists():
        label_set, exact_set = label_tasks_of(recipe, number), exact_label_tasks_of(recipe, number)
        labelled = with_pair(
            hooks,
            here,
            lambda pair: relabel(pair.policy, label_set, table, number, exact_set),
            prm=before / "prm",
        )
        write_jsonl(here / "prm_data.jsonl", [item.record() for item in labelled])
        seconds["labels"] = round(time.time() - started, 1)

    started = time.time()
    if not (here / "prm" / "done").exists() and not (here / "prm_gate.json").exists():
        records = read_jsonl(here / "prm_data.jsonl")
        replayed = replay_records(out, number, len(records), table)
        refit_prm(before / "prm", here, [*records, *replayed], table, number)
        seconds["prm"] = round(time.time() - started, 1)
    started, gating = time.time(), not (here / "prm_gate.json").exists()
    gate = gate_prm(recipe, before, here, hooks) if table.get("prm_gate") else None
    if gate is not None and gating:
        seconds["gate"] = round(time.time() - started, 1)  # two dev measurements; the round's is one

    yield_ = search_yield(searched, seconds.get("search"))
    decision = {"prm_gate": {"kept": gate["kept"], "scores": gate["scores"]}} if gate else {}
    measured = gate["dev"][gate["kept"]] if gate else None
    finish_round(recipe, out, number, {**yield_, **decision, "stage_seconds": seconds}, hooks, measured)


def search_yield(searched: Sequence[dict[str, Any]], seconds: float | None) -> dict[str, Any]:
    """What the round's search bought: problems whose answer verified, problems with any verified sample
    (what the fine-tune learns from), and those per CPU minute (wall time x cores; None for a search
    written by an earlier run of the loop, whose time this run did not see)."""
    solved = sum(bool(r["kept"]) for r in searched)
    cpu_minutes = seconds * (os.cpu_count() or 1) / 60 if seconds else None
    return {
        "search_tasks": len(searched),
        "search_verified": sum(r["verified"] for r in searched),  # the search's own answer
        "search_solved": solved,  # any verified sample
        "kept_solutions": sum(len(r["kept"]) for r in searched),
        "search_cpu_minutes": round(cpu_minutes, 1) if cpu_minutes else None,
        "search_yield": round(solved / cpu_minutes, 2) if cpu_minutes else None,
    }


def finish_round(
    recipe: dict[str, Any],
    out: Path,
    number: int,
    facts: dict[str, Any],
    hooks: LoopHooks,
    measured: dict[str, Any] | None = None,
) -> None:
    """Measure the round's pair on dev (unless the PRM gate just did), log it, record it in both cards,
    and mark the round done."""
    here = out / "rounds" / str(number)
    started = time.time()
    metrics = measured if measured is not None else hooks.measure(recipe, here / "policy", here / "prm")
    record = {"round": number, **facts, "dev": metrics}
    if measured is None:
        record["measure_seconds"] = round(time.time() - started, 1)
    (here / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    MetricsLog(out / "metrics.jsonl").write(stage="iterate", **flat_dev_metrics(record))
    for name in ("policy", "prm"):
        card = read_card(here / name)
        card["rounds"] = [*[r for r in card.get("rounds", []) if r.get("round") != number], record]
        write_card(here / name, card)
    (here / "done").write_text("")
    log.info("round %d: %s", number, json.dumps(flat_dev_metrics(record)))


def flat_dev_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """A round's metrics as one log line: the round, its yield and the dev figures of each tier."""
    line = {k: v for k, v in record.items() if k not in ("dev", "stage_seconds")}
    for tier, values in record["dev"].items():
        if isinstance(values, dict):
            line.update({f"dev_{tier}_{k}": v for k, v in values.items() if isinstance(v, int | float)})
    return line


# -- tasks ----------------------------------------------------------------------------------------------


def round_tasks(recipe: dict[str, Any], number: int) -> list[Task]:
    """The fresh train-split tasks round `number` searches."""
    return loop_tasks(recipe, recipe["iterate"]["problems_per_tier"], seed_of(recipe, number, 0))


def label_tasks_of(recipe: dict[str, Any], number: int) -> list[Task]:
    """The fresh train-split tasks whose solutions round `number` labels for the PRM."""
    table = recipe["iterate"]
    return loop_tasks(recipe, table.get("label_problems_per_tier", {}), seed_of(recipe, number, 1))


def exact_label_tasks_of(recipe: dict[str, Any], number: int) -> list[Task]:
    """The fresh train-split tasks whose solutions round `number` labels exactly only (no rollouts)."""
    table = recipe["iterate"]
    return loop_tasks(recipe, table.get("label_exact_problems_per_tier", {}), seed_of(recipe, number, 3))


def seed_of(recipe: dict[str, Any], number: int, use: int) -> int:
    return int(recipe["seed"]) + 10_000 + 100 * number + use


def loop_tasks(recipe: dict[str, Any], per_tier: dict[str, int], seed: int) -> list[Task]:
    table = recipe["iterate"]
    if "tasks" in table:  # a task file: its train split, a fresh sample each round
        pool = [t for t in load_task_file(table["tasks"]) if split_of_text(t.prompt) == "train"]
        count = int(per_tier.get("file", len(pool)))
        return random.Random(seed).sample(pool, min(count, len(pool)))
    return [
        countdown_task(problem, f"loop-{seed}-{tier}-{i}")
        for tier, count in sorted(per_tier.items())
        for i, problem in enumerate(generate(int(tier), int(count), seed, "train", distinct="meaning"))
    ]


# -- 1. search ------------------------------------------------------------------------------------------


async def search_round(
    pair: Pair, tasks: Sequence[Task], table: dict[str, Any], number: int
) -> list[dict[str, Any]]:
    controller = Controller(pair.policy, pair.prm, Limits(max_budget=1_000_000))
    keep = int(table.get("keep_per_task", 1))
    gate = asyncio.Semaphore(CONCURRENT_SEARCHES)
    progress = tqdm(total=len(tasks), desc=f"round {number} search", unit="task")

    async def solve(index: int, task: Task) -> dict[str, Any]:
        async with gate:
            prompt_ids = tuple(pair.policy.encode(task.prompt))
            request = SearchRequest(
                prompt_ids=prompt_ids,
                prompt_text=task.prompt,
                request_id=f"loop-{number}-{index}",
                strategy=str(table["strategy"]),
                budget=int(table["budget"]),
                knobs=dict(table.get("knobs", {})),
                sampling=Sampling(
                    temperature=float(table.get("temperature", 0.8)), seed=number * 100_003 + index
                ),
            )
            try:
                result = await controller.run(request)
            except InvalidPrompt as error:  # the engines refuse it (too long for the context)
                log.warning("round %d: task %s refused: %s", number, task.id, error)
                return {
                    "id": task.id,
                    "prompt": task.prompt,
                    "verified": False,
                    "kept": [],
                    "refused": str(error),
                }
            finally:
                progress.update()
            return {
                "id": task.id,
                "prompt": task.prompt,
                "solution": result.text,
                "prompt_ids": list(prompt_ids),
                "solution_ids": result.best.token_ids,
                "finished": result.best.finished,
                "verified": result.best.finished and grade(task, result.text),
                "kept": verified_solutions(task, [result.best, *result.candidates], keep),
                "generated_tokens": result.usage.generated_tokens,
                "scored_tokens": result.usage.scored_tokens,
            }

    try:
        return list(await asyncio.gather(*(solve(i, t) for i, t in enumerate(tasks))))
    finally:
        progress.close()


def verified_solutions(task: Task, traces: Sequence[Trace], keep: int) -> list[list[int]]:
    """Up to `keep` distinct finished solutions the checker verifies, the search's answer first: ReST-EM
    keeps every correct sample, not only the one the search returned."""
    kept: list[list[int]] = []
    for trace in traces:
        ids = trace.token_ids
        if len(kept) < keep and trace.finished and ids not in kept and grade(task, trace.text):
            kept.append(ids)
    return kept


# -- 2. policy ------------------------------------------------------------------------------------------


def solver_traces(recipe: dict[str, Any], tasks: Sequence[Task], number: int) -> list[tuple[str, str]]:
    """(prompt, solution) solver traces of the round's Countdown tasks, `trace_mix` per kept solution's
    worth of tasks (none for tasks without a solver): they keep the policy close to valid play."""
    mix = float(recipe["iterate"].get("trace_mix", 0.0))
    countdown = [t for t in tasks if t.kind == "countdown"]
    rng = random.Random(seed_of(recipe, number, 2))
    chosen = rng.sample(countdown, min(len(countdown), round(mix * len(countdown))))
    traces = []
    for task in chosen:
        problem = countdown_problem(task)
        steps = reference_solution(problem, rng, SolutionCounter(problem.target))
        traces.append((task.prompt, solution_text(steps)))
    return traces


def fine_tune_policy(
    previous: Path,
    here: Path,
    kept: Sequence[tuple[Sequence[int], Sequence[int]]],  # (prompt ids, solution ids)
    traces: Sequence[tuple[str, str]],
    table: dict[str, Any],
    number: int,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(previous))
    model = AutoModelForCausalLM.from_pretrained(str(previous), dtype=torch.float32)
    examples = [sequence_example(prompt, solution, tokenizer.eos_token_id) for prompt, solution in kept]
    for prompt, solution in traces:
        ids = tokenizer.encode(
            prompt
        )  # as the engines encode a prompt (BOS included where the model has one)
        examples.append(
            sequence_example(
                ids, tokenizer.encode(solution, add_special_tokens=False), tokenizer.eos_token_id
            )
        )
    log_ = MetricsLog(here.parent.parent / "metrics.jsonl")
    log_.write(stage=f"iterate_policy_{number}", kept=len(kept), traces=len(traces))
    if examples:
        config = FitConfig.from_table(table["sft"], seed=number)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        stage = f"iterate_policy_{number}"
        fit(model, examples, next_token_loss, config, pad, log_, stage, resume_path(here, stage))
    save_round_checkpoint(model, tokenizer, previous, here / "policy", {"round": number, "kept": len(kept)})


def sequence_example(prompt_ids: Sequence[int], solution_ids: Sequence[int], eos: int) -> Example:
    """Next-token targets on the solution (and its end), none on the prompt."""
    solution = [*solution_ids, eos] if not solution_ids or solution_ids[-1] != eos else list(solution_ids)
    ids = [*prompt_ids, *solution]
    targets = [float(IGNORE)] * (len(prompt_ids) - 1) + [float(t) for t in solution] + [float(IGNORE)]
    return Example(ids, targets)


# -- 3. labels ------------------------------------------------------------------------------------------


async def relabel(
    policy: PolicyEngine,
    tasks: Sequence[Task],
    table: dict[str, Any],
    number: int,
    exact: Sequence[Task] = (),
) -> list[Labelled]:
    """Monte-Carlo labels of the new policy's solutions to `tasks`, then exact-only labels (`rollouts`
    0: a label only where the value is known without rollouts) of `label_exact_samples` solutions to each
    of `exact`: many more of the new policy's own mistakes for the same compute (`training.prm_data`)."""
    samples, rollouts = int(table["label_samples"]), int(table["label_rollouts"])
    labelled = await label_batches(policy, tasks, samples, rollouts, number, "labels")
    exact_samples = int(table.get("label_exact_samples", 0))
    if exact and exact_samples:
        labelled += await label_batches(policy, exact, exact_samples, 0, number, "exact labels")
    return labelled


async def label_batches(
    policy: PolicyEngine, tasks: Sequence[Task], samples: int, rollouts: int, number: int, what: str
) -> list[Labelled]:
    sampling = Sampling(temperature=1.0, seed=number * 7919 + (0 if rollouts else 1), logprobs=False)
    labelled: list[Labelled] = []
    for start in tqdm(range(0, len(tasks), 32), desc=f"round {number} {what}", unit="batch"):
        chunk = tasks[start : start + 32]
        tag = f"loop-{what.replace(' ', '-')}-{number}-{start}"
        if all(t.kind == "countdown" for t in chunk):  # exact shortcuts where a solver exists
            problems = [countdown_problem(t) for t in chunk]
            labelled += await label_problems(policy, problems, samples, rollouts, sampling, tag)
        else:
            labelled += await label_tasks(policy, chunk, samples, rollouts, sampling, tag)
    return labelled


# -- 4. prm ---------------------------------------------------------------------------------------------


def replay_records(out: Path, number: int, fresh: int, table: dict[str, Any]) -> list[dict[str, Any]]:
    """Up to `prm_replay` x `fresh` labelled solutions the PRM was fitted on before (OUT/prm_data.jsonl,
    then earlier rounds' labels), drawn by the round's seed: a refit on the new policy's labels alone
    forgets what the PRM learned from the earlier ones (on dev, final AUROC 0.908 -> 0.770 in 3 rounds).
    Replay alone slowed that fall but did not stop it; `gate_prm` is what keeps the PRM from regressing."""
    share = float(table.get("prm_replay", 0.0))
    earlier = (out / "rounds" / str(k) / "prm_data.jsonl" for k in range(1, number))
    sources = [out / "prm_data.jsonl", *earlier]
    pool = [r for path in sources if path.exists() for r in read_jsonl(path) if r["completions"]]
    count = min(len(pool), round(share * fresh))
    return random.Random(10_007 * number).sample(pool, count)


def gate_prm(recipe: dict[str, Any], before: Path, here: Path, hooks: LoopHooks) -> dict[str, Any]:
    """Keep the refitted PRM only if it ranks the new policy's dev solutions at least as well as the PRM
    it was refitted from (mean per-problem final AUROC over the dev tiers); otherwise the round serves
    the previous PRM and keeps the refit in OUT/rounds/r/prm_refit. On dev, a refit on the new policy's
    Monte-Carlo labels ranked that policy's solutions worse (0.799) than the unrefitted PRM (0.847):
    the refit undoes what `prm_refine` taught. Returns the decision (OUT/rounds/r/prm_gate.json):
    `kept`, both `scores`, and both pairs' `dev` metrics."""
    path = here / "prm_gate.json"
    if not path.exists():
        dev = {
            "refit": hooks.measure(recipe, here / "policy", here / "prm"),
            "previous": hooks.measure(recipe, here / "policy", before / "prm"),
        }
        scores = {name: ranking_score(metrics) for name, metrics in dev.items()}
        kept = "refit" if scores["refit"] >= scores["previous"] else "previous"
        path.write_text(json.dumps({"kept": kept, "scores": scores, "dev": dev}, indent=2) + "\n")
    gate = json.loads(path.read_text())
    if gate["kept"] == "previous":
        if not (here / "prm_refit").exists():
            (here / "prm").rename(here / "prm_refit")
        if not (here / "prm" / "done").exists():
            copy_checkpoint(before / "prm", here / "prm")
    log.info("round %s: PRM gate keeps the %s PRM (%s)", here.name, gate["kept"], gate["scores"])
    return dict(gate)


def ranking_score(metrics: dict[str, Any]) -> float:
    """The mean per-problem final AUROC over the measured tiers: how well the PRM ranks one problem's
    solutions, which is what selection needs (-1, below any AUROC, where no tier has both a right and
    a wrong solution)."""
    values = [
        v["prm_auroc_per_problem"]
        for v in metrics.values()
        if isinstance(v, dict) and v.get("prm_auroc_per_problem") is not None
    ]
    return sum(values) / len(values) if values else -1.0


def refit_prm(
    previous: Path, here: Path, records: Sequence[dict[str, Any]], table: dict[str, Any], number: int
) -> None:
    """The previous PRM continued on `records` in its own format. With `[iterate.prm]`'s `counterfactual`
    and `arithmetic_weight` the refit keeps `prm_refine`'s objective beside the new labels (its
    counterfactual last steps of these solutions, the true result's token at each step's '='): a refit on
    the Monte-Carlo labels alone undid what `prm_refine` taught (per-problem AUROC 0.820 -> 0.748 on eval
    in three ungated rounds)."""
    tokenizer = AutoTokenizer.from_pretrained(str(previous))
    spec = read_prm_spec(previous)
    format = prm_format(spec, tokenizer)
    good_id, bad_id = (int(tokenizer.convert_tokens_to_ids(t)) for t in verdict_tokens(tokenizer, spec))
    examples, counterfactual = refit_examples(format, tokenizer, records, table["prm"], number)
    weight = float(table["prm"].get("arithmetic_weight", 0.0))
    model = AutoModelForCausalLM.from_pretrained(str(previous), dtype=torch.float32)
    stage = f"iterate_prm_{number}"
    log_ = MetricsLog(here.parent.parent / "metrics.jsonl")
    log_.write(stage=stage, sequences=len(examples), counterfactual=counterfactual)
    if examples:
        config = FitConfig.from_table(table["prm"], seed=number)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        loss = refine_loss(good_id, bad_id, weight)  # with weight 0 and no token targets: the verdict loss
        fit(model, examples, loss, config, pad, log_, stage, resume_path(here, stage))
    facts = {"round": number, "labelled": len(examples), "counterfactual": counterfactual}
    save_round_checkpoint(model, tokenizer, previous, here / "prm", facts)


def refit_examples(
    format: PRMFormat,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    prm_table: dict[str, Any],
    number: int,
) -> tuple[list[Example], int]:
    """The refit's examples (the labelled solutions, then their counterfactual last steps where the table
    asks for them; Countdown solutions only) and how many of them are counterfactual."""
    labelled = [r for r in records if r["completions"]]
    made = counterfactual_records(labelled, 7_919 * number) if prm_table.get("counterfactual") else []
    equals = single_token_id(tokenizer, "=") if float(prm_table.get("arithmetic_weight", 0.0)) else None
    examples = [prm_format_example(format, tokenizer, r, equals) for r in [*labelled, *made]]
    return examples, len(made)


def single_token_id(tokenizer: Any, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return int(ids[0]) if len(ids) == 1 else None


def prm_format_example(
    format: PRMFormat, tokenizer: Any, record: dict[str, Any], equals_id: int | None = None
) -> Example:
    """A labelled solution as the PRM reads it in its own format, the soft label at each step's tag; with
    `equals_id`, also the true result's token at each step's '=' (`arithmetic_targets`)."""
    steps = tuple(tuple(tokenizer.encode(s, add_special_tokens=False)) for s in record["completions"])
    candidate = Candidate(
        tuple(tokenizer.encode(record["prompt"])),
        steps,
        question=record["prompt"],
        step_texts=tuple(record["completions"]),
    )
    ids = format.render(candidate)
    targets = [float(IGNORE)] * len(ids)
    for position, label in zip(tag_positions(format, ids, len(steps)), record["soft_labels"], strict=True):
        targets[position] = float(IGNORE) if label is None else float(label)
    if equals_id is not None:
        for position, target in arithmetic_targets(tokenizer, ids, steps, record["completions"], equals_id):
            targets[position] = target
    return Example(ids, targets)


def arithmetic_targets(
    tokenizer: Any,
    ids: Sequence[int],
    steps: Sequence[Sequence[int]],
    texts: Sequence[str],
    equals_id: int,
) -> list[tuple[int, float]]:
    """(position, target) of `prm_refine`'s arithmetic target in a rendered PRM input: at each step's one
    '=' token, the token of the result the step's operation truly gives. The steps are the input's last
    '=' tokens in order (a format may put its own before them, never after); a step with no single '=',
    or whose result is not one token of this vocabulary, gets none."""
    counts = [list(step).count(equals_id) for step in steps]
    positions = [i for i, token in enumerate(ids) if token == equals_id]
    if sum(counts) == 0 or len(positions) < sum(counts):
        return []
    positions = positions[len(positions) - sum(counts) :]
    targets: list[tuple[int, float]] = []
    for count, text in zip(counts, texts, strict=True):
        here, positions = positions[:count], positions[count:]
        target = result_target(tokenizer, true_result(text)) if count == 1 else float(IGNORE)
        if target != float(IGNORE):
            targets.append((here[0], target))
    return targets


# -- plumbing -------------------------------------------------------------------------------------------


def with_pair(hooks: LoopHooks, round_dir: Path, work: Callable[[Pair], Any], prm: Path | None = None) -> Any:
    """Run `work(pair)` on one event loop, with the round's pair started for it and stopped after."""
    pair = hooks.start_pair(round_dir / "policy", prm or round_dir / "prm")
    try:
        return asyncio.run(work(pair))
    finally:
        pair.shutdown()


def save_round_checkpoint(
    model: Any, tokenizer: Any, previous: Path, directory: Path, facts: dict[str, Any]
) -> None:
    """The fitted model beside its predecessor's spec and card (the card gains this round's facts);
    `done` is written last, so a half-written directory is redone."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    for extra in ("generation_config.json", "ponder_spec.json"):
        if (previous / extra).exists():
            shutil.copy2(previous / extra, directory / extra)
    card = read_card(previous)
    card["loop"] = [*card.get("loop", []), facts]
    write_card(directory, card)
    (directory / "done").write_text("")


def copy_checkpoint(source: Path, target: Path) -> None:
    if source.resolve() == target.resolve():
        return
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.resume.pt"))


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    partial = path.with_suffix(".partial")
    with partial.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    partial.replace(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
