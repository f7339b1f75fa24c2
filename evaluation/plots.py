"""`ponder plot results`: the plots of committed results files whose measuring command draws none.

Contract: every function here reads a results JSON as its command wrote it (nothing is measured, no engine
starts) and writes one PNG beside it, `results/<name>.png`; each plot's title names its split and its
results file, so a figure shown on its own still says what it is. `results_plots` draws every one whose
JSON is present and returns the paths written. The sweeps (`ponder eval search`), the learning loop
(`ponder eval learning`) and the engine curve (`ponder bench --out`) draw their own plots when they run.
Uses matplotlib's file-only backend (the `train` extra), so it works on headless machines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

TIERS = ("3", "4", "5")


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def bar_labels(axis: Any, bars: Any, fmt: str) -> None:
    for bar in bars:
        height = bar.get_height()
        axis.annotate(
            fmt.format(height),
            (bar.get_x() + bar.get_width() / 2, height),
            ha="center",
            va="bottom",
            fontsize=7,
            xytext=(0, 1),
            textcoords="offset points",
        )


def grouped_bars(axis: Any, series: list[tuple[str, list[float]]], fmt: str) -> None:
    """One group of bars a category (x = 0, 1, ...), one bar a series, each labelled with its value."""
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(values))]
        bar_labels(axis, axis.bar(xs, values, width, label=label), fmt)


def plot_foundation(report: dict[str, Any], path: Path, source: str) -> Path:
    """Accuracy by tier (greedy, sampled, pass@k, Best-of-k by PRM) and the PRM's AUROCs by tier."""
    plt = pyplot()
    tiers = [t for t in TIERS if t in report]
    fig, (acc, prm) = plt.subplots(1, 2, figsize=(10, 4))
    accuracy = (
        ("greedy_accuracy", "greedy"),
        ("sampled_accuracy", "sampled (T=1)"),
        ("pass_at_16", "pass@16"),
        ("best_of_16_prm_accuracy", "Best-of-16 by PRM"),
    )
    grouped_bars(acc, [(label, [100 * report[t][key] for t in tiers]) for key, label in accuracy], "{:.0f}")
    aurocs = (
        ("prm_auroc_final", "final, pooled"),
        ("prm_auroc_per_problem", "final, per problem"),
        ("prm_auroc_steps", "steps"),
    )
    grouped_bars(prm, [(label, [report[t][key] for t in tiers]) for key, label in aurocs], "{:.2f}")
    for axis in (acc, prm):
        axis.set_xticks(range(len(tiers)), [f"{t} numbers" for t in tiers])
        axis.legend(fontsize=7, loc="upper right")
        axis.grid(axis="y", alpha=0.3)
    acc.set_ylabel("accuracy, %")
    acc.set_ylim(0, 100)
    prm.set_ylabel("PRM AUROC")
    prm.set_ylim(0.5, 1.0)
    problems = report[tiers[0]]["n_problems"]
    fig.suptitle(
        f"the default models, split {report.get('split', 'eval')} ({problems} problems a tier) - {source}",
        fontsize=10,
    )
    return save(fig, path)


def plot_prm_failures(report: dict[str, Any], path: Path, source: str) -> Path:
    """The PRM's AUROC against the correct solutions for each kind of wrong one, with the counts."""
    plt = pyplot()
    kinds = {k: v for k, v in report["kinds"].items() if "auroc_against_correct" in v}
    names = sorted(kinds, key=lambda k: -kinds[k]["count"])
    fig, axis = plt.subplots(figsize=(7, 3.8))
    values = [kinds[k]["auroc_against_correct"] for k in names] + [report["prm_auroc_final"]]
    labels = [f"{k}\n({kinds[k]['count']:,})" for k in names] + [
        f"all wrong\n({sum(kinds[k]['count'] for k in names):,})"
    ]
    bars = axis.bar(labels, values, color=["C1"] * len(names) + ["C0"])
    bar_labels(axis, bars, "{:.3f}")
    axis.set_ylim(0.5, 1.0)
    axis.set_ylabel("AUROC against the correct solutions")
    axis.grid(axis="y", alpha=0.3)
    correct = report["kinds"].get("correct", {}).get("count")
    axis.set_title(
        f"PRM final score by kind of mistake: tier {report['tier']}, split {report['split']}, "
        f"{report['problems']} problems, {report['solutions']:,} solutions ({correct} correct)\n{source}",
        fontsize=9,
    )
    return save(fig, path)


def plot_prm_swap(swap: dict[str, Any], loop: dict[str, Any], path: Path, source: str) -> Path:
    """One policy's dev solutions ranked by the shipped PRM and by the loop's refitted PRM (tier 4)."""
    plt = pyplot()
    refit = loop["rounds"][-1]["dev"]
    shipped = swap["4"]
    metrics = (
        ("best_of_16_prm_accuracy", "best_of_n_16x_accuracy", "Best-of-16 accuracy"),
        ("prm_auroc_final", "prm_auroc_final", "AUROC, pooled"),
        ("prm_auroc_per_problem", "prm_auroc_per_problem", "AUROC, per problem"),
    )
    fig, axis = plt.subplots(figsize=(7, 3.8))
    width = 0.38
    xs = range(len(metrics))
    ship = axis.bar(
        [x - width / 2 for x in xs], [shipped[a] for a, _, _ in metrics], width, label="shipped PRM"
    )
    rounds = loop["rounds"][-1]["round"]
    refits = axis.bar(
        [x + width / 2 for x in xs],
        [refit[b] for _, b, _ in metrics],
        width,
        label=f"PRM refitted by the loop (round {rounds}, no gate)",
    )
    bar_labels(axis, ship, "{:.3f}")
    bar_labels(axis, refits, "{:.3f}")
    axis.set_xticks(list(xs), [label for _, _, label in metrics])
    axis.set_ylim(0, 1.05)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title(
        f"round {rounds}'s policy, its solutions ranked by two PRMs: tier 4, split {swap['split']}, "
        f"{shipped['n_problems']} problems\n{source}",
        fontsize=9,
    )
    return save(fig, path)


LOAD_RUNS = (
    (lambda r: r, "mixed strategies\n16 clients"),
    (lambda r: r["best_of_n"], "Best-of-N (PRM)\n16 clients"),
    (lambda r: r["best_of_n_breakdown"]["best_of_n_direct"], "Best-of-N (PRM)\nno HTTP, 16"),
    (lambda r: r["best_of_n_breakdown"]["best_of_n_vote"], "Best-of-N (vote)\n16 clients"),
    (lambda r: r["best_of_n_breakdown"]["best_of_n_wide"], "Best-of-N (PRM)\n64 clients"),
)


def plot_server_load(report: dict[str, Any], path: Path, source: str) -> Path:
    """Each load run's share of the raw engine rate, and its latency percentiles."""
    plt = pyplot()
    runs: list[tuple[str, dict[str, Any]]] = []
    for pick, label in LOAD_RUNS:
        try:
            runs.append((label, pick(report)))
        except KeyError:  # a run without the breakdown (--no-breakdown)
            continue
    fig, (share, latency) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [label for label, _ in runs]
    bars = share.bar(labels, [run["share_of_raw"] for _, run in runs], color="C0")
    bar_labels(share, bars, "{:.2f}")
    share.axhline(0.8, color="grey", linestyle=":", label="target for Best-of-N: 0.80")
    share.set_ylim(0, 1.0)
    share.set_ylabel("generated tokens/s over the raw engine's")
    share.legend(fontsize=7, loc="lower right")
    width = 0.27
    for i, key in enumerate(("p50_s", "p95_s", "p99_s")):
        xs = [j + (i - 1) * width for j in range(len(runs))]
        latency.bar(xs, [run[key] for _, run in runs], width, label=key.removesuffix("_s"))
    latency.set_xticks(range(len(runs)), labels)
    latency.set_ylabel("request latency, s")
    latency.legend(fontsize=7)
    for axis in (share, latency):
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"ponder load: {report['requests']} requests a run, budget {report['budget']} units, tier-4 eval "
        f"prompts; raw engine {report['raw_engine_tokens_per_s']:,.0f} tokens/s - {source}",
        fontsize=10,
    )
    return save(fig, path)


def plot_remote_overhead(report: dict[str, Any], path: Path, source: str) -> Path:
    """Search wall time and engine rate, remote against in-process, and each strategy's correct answers."""
    plt = pyplot()
    fig, (cost, correct) = plt.subplots(1, 2, figsize=(11, 4))
    paths = (
        ("in_process", "in-process"),
        ("remote", "remote"),
        ("remote_request_per_sample", "remote,\none request a sample"),
    )
    present = [(key, label) for key, label in paths if key in report]
    labels = [label for _, label in present]
    bars = cost.bar(labels, [report[key]["search"]["wall_s"] for key, _ in present], color="C0")
    bar_labels(cost, bars, "{:.2f} s")
    setup = report["setup"]
    cost.set_ylabel(
        f"wall time of {setup['searches']} searches, s\n({'+'.join(setup['strategies'])}, budget "
        f"{setup['budget']}, {setup['concurrency']} at once)"
    )
    cost.grid(axis="y", alpha=0.3)
    by_strategy = report["accuracy_by_strategy"]
    names = list(by_strategy)
    width = 0.38
    xs = range(len(names))
    for offset, key, label in (
        (-width / 2, "in_process_correct", "in-process"),
        (width / 2, "remote_correct", "remote"),
    ):
        bars = correct.bar([x + offset for x in xs], [by_strategy[n][key] for n in names], width, label=label)
        bar_labels(correct, bars, "{:.0f}")
    of = by_strategy[names[0]]["of"]
    correct.set_xticks(list(xs), names)
    correct.set_ylim(0, of)
    correct.set_ylabel(f"correct of {of} tier-4 eval problems")
    correct.legend(fontsize=7)
    correct.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"ponder bench --remote: identical answers {report['identical_answers']}, split eval - {source}",
        fontsize=10,
    )
    return save(fig, path)


HEADLINE = (
    ("best_of_n_prm", "Best-of-N, PRM"),
    ("beam", "beam (rollouts)"),
    ("particle_filter", "particle filtering"),
    ("mcts", "MCTS"),
    ("auto", "auto (dev table)"),
)


def plot_search_headline(points: list[dict[str, Any]], path: Path, source: str) -> Path:
    """Accuracy against budget for the main strategies, with Best-of-N's 95% CI and greedy beside them."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(7.5, 4.6))
    greedy = next(p for p in points if p["strategy"] == "greedy")
    multiples = sorted({p["budget_multiple"] for p in points})
    for i, (strategy, label) in enumerate(HEADLINE):
        series = sorted((p for p in points if p["strategy"] == strategy), key=lambda p: p["budget_multiple"])
        if not series:
            continue
        xs = [p["budget_multiple"] for p in series]
        axis.plot(xs, [100 * p["accuracy"] for p in series], marker="o", color=f"C{i}", label=label)
        if strategy == "best_of_n_prm":
            axis.fill_between(
                xs,
                [100 * p["ci_low"] for p in series],
                [100 * p["ci_high"] for p in series],
                color=f"C{i}",
                alpha=0.12,
                label="Best-of-N's 95% CI",
            )
    axis.axhline(100 * greedy["accuracy"], color="black", linestyle=":", label="greedy (1x)")
    axis.set_xscale("log", base=2)
    axis.set_xticks(multiples, [f"{m:g}x" for m in multiples])
    units = greedy.get("mean_units") or 0
    axis.set_xlabel(f"budget, multiples of greedy's mean cost ({units:g} compute units)")
    axis.set_ylabel(f"tier {greedy['tier']} accuracy, %")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    axis.set_title(
        f"accuracy against compute: tier {greedy['tier']}, split {greedy['split']}, "
        f"{greedy['n_problems']} problems\n{source}",
        fontsize=9,
    )
    return save(fig, path)


def results_plots(results: Path = Path("results")) -> list[Path]:
    """Draw every plot here whose results JSON is in `results`; the paths written."""
    jobs: list[tuple[str, Callable[[], Path]]] = []

    def job(name: str, draw: Callable[[Path, str], Path], *needs: str) -> None:
        if all((results / need).exists() for need in needs):
            source = " + ".join(f"results/{need}" for need in needs)
            jobs.append((name, lambda: draw(results / f"{name}.png", source)))

    job(
        "search-headline",
        lambda p, s: plot_search_headline(json.loads((results / "search.json").read_text()), p, s),
        "search.json",
    )
    job(
        "foundation", lambda p, s: plot_foundation(read(results / "foundation.json"), p, s), "foundation.json"
    )
    job(
        "prm-failures",
        lambda p, s: plot_prm_failures(read(results / "prm-failures.json"), p, s),
        "prm-failures.json",
    )
    job(
        "learning-prm-swap-dev",
        lambda p, s: plot_prm_swap(
            read(results / "learning-prm-swap-dev.json"), read(results / "learning-no-gate.json"), p, s
        ),
        "learning-prm-swap-dev.json",
        "learning-no-gate.json",
    )
    job(
        "server-load",
        lambda p, s: plot_server_load(read(results / "server-load.json"), p, s),
        "server-load.json",
    )
    job(
        "remote-overhead",
        lambda p, s: plot_remote_overhead(read(results / "remote-overhead.json"), p, s),
        "remote-overhead.json",
    )
    return [draw() for _, draw in jobs]
