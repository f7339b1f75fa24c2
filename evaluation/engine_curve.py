"""The policy engine's throughput against the number of sequences in flight, alone and beside a busy PRM.

Contract: `engine_curve(engines, widths, repeats)` runs, for each width W, full rollouts of W sequences at
once (W/16 held-out tier-4 prompts x n=16, the raw benchmark's shape; the raw benchmark is W=256) at
temperature 1.0 and reports the median generated tokens/s of `repeats` runs twice: with the PRM idle,
and while the PRM scores 256 sampled solutions nonstop (its scored tokens/s in that window reported
too). `plot_engine_curve(curve, path)` draws both against W.

Why: a search keeps only as many sequences in flight as its requests' samples, and on CPU an engine's
throughput grows with its batch; and in one process on a small machine the PRM's compute shares the
policy's memory and caches. The curve says what throughput a traffic shape can reach at best, which
is what a search layer's share of the raw figure should be read against.

`request_shapes(engines, width, seconds)` holds `width` requests in flight for `seconds` each way and
reports generated tokens/s and requests/s: every request a whole solution (Best-of-N's shape) or one
step, then a new request that continues it (the particle filter's shape, and beam's with step
evaluation); each with a seed per request (as the sweeps send) and without. Why: in the tier-4 sweep
at 64x the policy held 256 or more requests in flight most of the time under step-level beam and the
particle filter, as under Best-of-N, yet generated about 0.6 as many tokens/s; these shapes measure
how much of that a step-long request costs by itself, on the same engine and the same number of
requests in flight.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from engines.base import PolicyEngine, Sampling
from server.engines import Engines
from tasks.datasets import countdown_problem
from tasks.sets import load_eval_set
from verifiers.prm import Candidate, StepVerifier

from .foundation import sampled_candidates

WIDTHS = (16, 32, 64, 96, 128, 192, 256, 384, 512)
SAMPLES_PER_PROMPT = 16


async def rollout_rate(
    policy: PolicyEngine, prompts: Sequence[Sequence[int]], width: int, tag: str, repeats: int
) -> float:
    """Median generated tokens/s of `repeats` rollouts of `width` sequences at once."""
    count = max(width // SAMPLES_PER_PROMPT, 1)
    n = width // count
    rates = []
    for r in range(repeats):
        sampling = Sampling(temperature=1.0, seed=100 + r, logprobs=False)
        started = time.perf_counter()
        generation = await policy.rollout(prompts[:count], n, sampling, f"{tag}-{width}-{r}")
        rates.append(generation.usage.generated_tokens / (time.perf_counter() - started))
    return statistics.median(rates)


async def beside_busy_prm(
    prm: StepVerifier, candidates: Sequence[Candidate], work: Awaitable[float], tag: str
) -> tuple[float, float]:
    """`work`'s result while the PRM scores `candidates` over and over, and the PRM's scored tokens/s."""
    stop = asyncio.Event()
    scored = 0

    async def keep_busy() -> None:
        nonlocal scored
        k = 0
        while not stop.is_set():
            scored += (await prm.score(candidates, f"{tag}-{k}")).usage.scored_tokens
            k += 1

    busy = asyncio.create_task(keep_busy())
    started = time.perf_counter()
    try:
        result = await work
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        await busy
    return result, scored / elapsed


async def engine_curve(
    engines: Engines, widths: Sequence[int] = WIDTHS, repeats: int = 3
) -> list[dict[str, Any]]:
    needed = max(max(widths) // SAMPLES_PER_PROMPT, 1)
    prompts = [engines.policy.encode(countdown_problem(t).prompt()) for t in load_eval_set(4, limit=needed)]
    candidates = await sampled_candidates(engines, 16, 16)
    await engines.prm.score(candidates, "curve-prm-warmup")
    await engines.policy.rollout(prompts[:2], 2, Sampling(seed=0, logprobs=False), "curve-warmup")
    points = []
    for width in tqdm(widths, desc="throughput by width"):
        alone = await rollout_rate(engines.policy, prompts, width, "curve-alone", repeats)
        busy = rollout_rate(engines.policy, prompts, width, "curve-busy", repeats)
        beside_prm, prm_rate = await beside_busy_prm(engines.prm, candidates, busy, f"curve-prm-{width}")
        points.append(
            {
                "sequences": width,
                "generated_tokens_per_s": round(alone, 1),
                "generated_tokens_per_s_prm_busy": round(beside_prm, 1),
                "prm_scored_tokens_per_s_meanwhile": round(prm_rate, 1),
            }
        )
    return points


async def chains_rate(
    policy: PolicyEngine,
    prompts: Sequence[Sequence[int]],
    width: int,
    seconds: float,
    by_step: bool,
    seeded: bool,
) -> dict[str, float]:
    """Generated tokens/s and requests/s of `width` chains running at once for `seconds`: each chain sends
    one request at a time (one sample), a whole solution or one step (then the next step from where it
    stopped), and starts a new solution from its prompt when one ends."""
    deadline = time.perf_counter() + seconds
    generated = requests = 0
    call = policy.expand if by_step else policy.rollout

    async def chain(index: int) -> None:
        nonlocal generated, requests
        prompt = list(prompts[index % len(prompts)])
        prefix = list(prompt)
        k = 0
        while time.perf_counter() < deadline:
            sampling = Sampling(temperature=1.0, seed=index * 100_003 + k if seeded else None)
            generation = await call([prefix], 1, sampling, f"shape-{by_step}-{seeded}-{index}-{k}")
            continuation = generation.continuations[0][0]
            generated += generation.usage.generated_tokens
            requests += 1
            k += 1
            ended = not by_step or continuation.finish != "step"
            prefix = list(prompt) if ended else [*prefix, *continuation.token_ids]

    started = time.perf_counter()
    await asyncio.gather(*(chain(i) for i in range(width)))
    elapsed = time.perf_counter() - started
    return {
        "generated_tokens_per_s": round(generated / elapsed, 1),
        "requests_per_s": round(requests / elapsed, 1),
    }


async def request_shapes(engines: Engines, width: int = 256, seconds: float = 15.0) -> list[dict[str, Any]]:
    """Whole-solution against one-step requests, seeded and not, `width` in flight (see the module doc)."""
    prompts = [engines.policy.encode(countdown_problem(t).prompt()) for t in load_eval_set(4, limit=64)]
    await chains_rate(engines.policy, prompts, 16, 2.0, by_step=True, seeded=True)  # warm-up
    shapes = []
    for by_step in (False, True):
        for seeded in (True, False):
            rate = await chains_rate(engines.policy, prompts, width, seconds, by_step, seeded)
            shape = "one step per request" if by_step else "one solution per request"
            shapes.append({"requests": shape, "seeded": seeded, "in_flight": width, **rate})
    return shapes


def plot_engine_curve(curve: Sequence[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib
    except ImportError:  # the plot is a convenience, never a reason to fail a benchmark
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = [p["sequences"] for p in curve]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(widths, [p["generated_tokens_per_s"] for p in curve], marker="o", label="policy alone")
    beside = [p["generated_tokens_per_s_prm_busy"] for p in curve]
    ax.plot(widths, beside, marker="s", label="while the PRM scores")
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xlabel("sequences in flight")
    ax.set_ylabel("generated tokens/s")
    ax.set_ylim(bottom=0)
    ax.set_title("policy engine throughput by batch width (ponder bench)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
