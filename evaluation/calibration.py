"""`ponder bench --calibrate`: the compute unit's weights, measured on the engines being served.

Contract:
- `measure_rates(engines, sequences, prompt_tokens, decode_tokens, repeats)` measures tokens/s of each
  kind of token a search spends, through the engines' own calls (as `server.engines.Engines.start` runs
  them), each kind the median of `repeats` passes after one unmeasured warm-up:
  - prefilled: `sequences` distinct prompts of about `prompt_tokens` tokens (fewer where the context is
    shorter), `max_tokens=1`: the prompt tokens the policy computed per second;
  - cached_prompt: the same prompts again, now in the prefix cache: its hits per second, the time
    left once the uncached rest is taken off at the prefill rate (`hit_rate`);
  - generated: `sequences` distinct short prompts, each sampling `decode_tokens` tokens at temperature
    1 (all at once, as a search's batch): generated tokens per second, their prompts' prefill time
    taken off (`decode_rate`);
  - scored: the PRM reading `sequences` distinct candidates (the long prompts cut into steps);
  - cached_scored: the same candidates again with their scores known, so the PRM reads its cache.
  Every pass uses prompts no earlier pass sent (a distinct first line each), so "uncached" is uncached.
  A kind whose cache reported no hit at all (a remote PRM has none; prefix caching off) never occurs on
  that deployment: it gets the uncached kind's weight, and `no_cache_hits` names it.
- `weights_of(rates, measured)` is `CostWeights.from_rates` on those medians (generated rate over each
  kind's rate); `calibrate(engines, out, described, ...)` measures, writes `cost_weights.json` at `out`
  with the rates and every pass, and returns the weights. `ponder serve` reads the file from beside the
  models (or from `--cost-weights`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engines.base import PolicyEngine, Sampling
from engines.cost import KINDS, CostWeights
from server.engines import Engines
from tasks.sets import load_dev_set
from verifiers.prm import Candidate, StepVerifier

BLOCK = 32  # prompts are whole multiples of the KV block (the CPU backend's; GPU blocks are 16)
STEP_TOKENS = 24  # the PRM's candidates: the long prompts cut into steps of about this many tokens
MIN_SHARE = 1e-3  # a cache hit's time is at least this share of its pass: it is never free


def decode_rate(generated: int, prompt_tokens: int, seconds: float, prefill_rate: float) -> float:
    """Generated tokens/s of a pass that also prefilled `prompt_tokens` at `prefill_rate`."""
    return generated / max(seconds - prompt_tokens / prefill_rate, seconds * MIN_SHARE)


def hit_rate(cached: int, uncached: int, seconds: float, uncached_rate: float) -> float:
    """Cache hits per second of a pass that also computed `uncached` tokens at `uncached_rate`."""
    return cached / max(seconds - uncached / uncached_rate, seconds * MIN_SHARE)


def weights_of(rates: dict[str, float], measured: str) -> CostWeights:
    return CostWeights.from_rates(rates["generated"], {kind: rates[kind] for kind in KINDS}, measured)


def filler_text() -> str:
    """Text to make long prompts of: dev-split Countdown problems (any text does; no model learns from it,
    and the eval split is kept for reporting)."""
    return "".join(task.prompt for task in load_dev_set(4, limit=64))


def distinct_prompts(policy: PolicyEngine, count: int, length: int, salt: int) -> list[list[int]]:
    """`count` prompts of `length` token ids, each opening with its own line (so none shares a cached
    block with another, or with a prompt of another `salt`)."""
    text = filler_text()
    prompts = []
    for index in range(count):
        ids = policy.encode(f"{salt} {index}\n{text}")
        while len(ids) < length:
            ids += ids
        prompts.append(ids[:length])
    return prompts


def prompt_length(wanted: int, context: int) -> int:
    """`wanted` cut to what a context of `context` tokens holds with a token after it, in whole blocks."""
    return max(BLOCK, min(wanted, context - 2) // BLOCK * BLOCK)


def candidates_of(
    policy: PolicyEngine, prm: StepVerifier, prompts: Sequence[Sequence[int]]
) -> list[Candidate]:
    """Each prompt as a PRM candidate: its first half the prompt, the rest cut into steps (shortened
    until the PRM's context holds it in its own format)."""
    out = []
    for ids in prompts:
        keep = len(ids)
        while True:
            head, rest = tuple(ids[: keep // 2]), ids[keep // 2 : keep]
            steps = tuple(tuple(rest[i : i + STEP_TOKENS]) for i in range(0, len(rest), STEP_TOKENS))
            candidate = Candidate(
                head,
                steps,
                question=policy.decode(head),
                step_texts=tuple(policy.decode(step) for step in steps),
            )
            if prm.scored_length(candidate) <= prm.max_model_len or keep <= 2 * STEP_TOKENS:
                break
            keep -= BLOCK
        out.append(candidate)
    return out


async def one_repeat(
    engines: Engines, sequences: int, prompt_tokens: int, decode_tokens: int, salt: int
) -> dict[str, dict[str, float]]:
    """One pass of each kind; each pass's token counts and seconds."""
    policy, prm = engines.policy, engines.prm
    length = prompt_length(prompt_tokens, min(policy.max_model_len, prm.max_model_len))
    long = distinct_prompts(policy, sequences, length, salt)
    one_token = Sampling(temperature=1.0, max_tokens=1, seed=salt)
    passes: dict[str, dict[str, float]] = {}
    for name in ("prefill", "prefill_again"):
        started = time.perf_counter()
        usage = (await policy.rollout(long, 1, one_token, f"calibrate-{name}-{salt}")).usage
        passes[name] = {
            "prompt": usage.prompt_tokens,
            "cached": usage.cached_prompt_tokens,
            "seconds": time.perf_counter() - started,
        }
    short = distinct_prompts(policy, sequences, BLOCK, salt + 1)
    decode = Sampling(
        temperature=1.0, max_tokens=min(decode_tokens, policy.max_model_len - BLOCK - 1), seed=salt
    )
    started = time.perf_counter()
    usage = (await policy.rollout(short, 1, decode, f"calibrate-decode-{salt}")).usage
    passes["decode"] = {
        "prompt": usage.prefilled_prompt_tokens,
        "generated": usage.generated_tokens,
        "seconds": time.perf_counter() - started,
    }
    candidates = candidates_of(policy, prm, distinct_prompts(policy, sequences, length, salt + 2))
    started = time.perf_counter()
    scores = await prm.score(candidates, f"calibrate-score-{salt}")
    passes["score"] = {
        "scored": scores.usage.scored_tokens,
        "cached": scores.usage.cached_scored_tokens,
        "seconds": time.perf_counter() - started,
    }
    known = [
        Candidate(c.prompt_ids, c.steps, tuple(row), c.question, c.step_texts)
        for c, row in zip(candidates, scores.step_scores, strict=True)
    ]
    started = time.perf_counter()
    again = (await prm.score(known, f"calibrate-score-again-{salt}")).usage
    passes["score_again"] = {
        "scored": again.scored_tokens,
        "cached": again.cached_scored_tokens,
        "seconds": time.perf_counter() - started,
    }
    return passes


def repeat_rates(passes: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """Each kind's tokens/s in one repeat's passes; None for a cache that reported no hit."""
    prefill, again, decode = passes["prefill"], passes["prefill_again"], passes["decode"]
    score, score_again = passes["score"], passes["score_again"]
    prefilled = (prefill["prompt"] - prefill["cached"]) / prefill["seconds"]
    scored = (score["scored"] - score["cached"]) / score["seconds"]
    return {
        "generated": decode_rate(
            int(decode["generated"]), int(decode["prompt"]), decode["seconds"], prefilled
        ),
        "prefilled": prefilled,
        "cached_prompt": None
        if again["cached"] == 0
        else hit_rate(
            int(again["cached"]), int(again["prompt"] - again["cached"]), again["seconds"], prefilled
        ),
        "scored": scored,
        "cached_scored": None
        if score_again["cached"] == 0
        else hit_rate(
            int(score_again["cached"]),
            int(score_again["scored"] - score_again["cached"]),
            score_again["seconds"],
            scored,
        ),
    }


def median_rates(repeats: Sequence[dict[str, float | None]]) -> tuple[dict[str, float], list[str]]:
    """The median rate of each kind over the repeats; a cache with no hit in any repeat takes its
    uncached kind's rate (and is named in the list)."""
    uncached = {"cached_prompt": "prefilled", "cached_scored": "scored"}
    rates: dict[str, float] = {}
    missing = []
    for kind in ("generated", "prefilled", "scored", "cached_prompt", "cached_scored"):
        seen = [r[kind] for r in repeats if r[kind] is not None]
        if seen:
            rates[kind] = statistics.median(float(x) for x in seen if x is not None)
        else:
            rates[kind] = rates[uncached[kind]]
            missing.append(kind)
    return rates, missing


async def measure_rates(
    engines: Engines,
    sequences: int = 256,
    prompt_tokens: int = 512,
    decode_tokens: int = 128,
    repeats: int = 3,
) -> dict[str, Any]:
    """The median tokens/s of each kind over `repeats`, every pass's counts, and the caches without hits."""
    await one_repeat(engines, min(sequences, 8), prompt_tokens, 8, salt=1)  # warm-up, not measured
    runs = [
        await one_repeat(engines, sequences, prompt_tokens, decode_tokens, salt=100 * (r + 1))
        for r in range(repeats)
    ]
    rates, missing = median_rates([repeat_rates(passes) for passes in runs])
    return {"rates": rates, "no_cache_hits": missing, "passes": runs}


async def calibrate(
    engines: Engines,
    out: Path,
    described: str,
    sequences: int = 256,
    prompt_tokens: int = 512,
    decode_tokens: int = 128,
    repeats: int = 3,
) -> CostWeights:
    """Measure the rates on `engines` (`described`: which models, where), write the weights to `out`."""
    measured = await measure_rates(engines, sequences, prompt_tokens, decode_tokens, repeats)
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    weights = weights_of(measured["rates"], f"ponder bench --calibrate on {described}, {when}")
    settings = {"sequences": sequences, "prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens}
    weights.dump(
        out,
        rates={kind: round(rate, 1) for kind, rate in measured["rates"].items()},
        no_cache_hits=measured["no_cache_hits"],
        settings={**settings, "repeats": repeats},
        passes=[
            {name: {k: round(v, 4) for k, v in p.items()} for name, p in run.items()}
            for run in measured["passes"]
        ],
    )
    return weights
