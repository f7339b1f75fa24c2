"""`ponder`: one command line for serving, training, evaluation and benchmarks.

Contract: each subcommand has one small function that adds its parser and one that runs it, calling into
the package that owns the work. `serve` and `engine` derive their flags from settings models
(`server.settings`, pydantic-settings): a setting is declared once, with its default and help text, and
can also come from the environment (`PONDER_<NAME>`). Heavy imports (torch, vLLM) happen inside the
subcommand, so `ponder --help` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, CliPositionalArg, CliSettingsSource

from engines.spec import SpecError
from ponder.defaults import DEFAULT_MODELS
from server.settings import SETTINGS_CONFIG, ModelSettings, ServerSettings

Subparsers = Any  # argparse's private _SubParsersAction
MODELS_HELP = "directory with the policy in policy/ and the PRM in prm/"


def docs(*pages: str) -> str:
    """A help text's last line: the pages of the docs site (docs/, `mkdocs serve`) that explain it."""
    return "Docs: " + ", ".join(f"docs/{page}.md" for page in pages)


class ServeSettings(ServerSettings):
    """`ponder serve`: the server's settings, with the embedded default models as the default."""

    models: Path = Field(DEFAULT_MODELS, description=MODELS_HELP)


class ReplicaSettings(ModelSettings):
    """`ponder engine ROLE`: one vLLM server for a remote policy or PRM replica."""

    model_config = SETTINGS_CONFIG

    role: CliPositionalArg[Literal["policy", "prm"]] = Field(description="which model to serve")
    models: Path = Field(DEFAULT_MODELS, description=MODELS_HELP)
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8001, ge=0, lt=65_536, description="port to listen on")
    kv_cache_gib: float | None = Field(
        None,
        gt=0,
        description="the server's KV cache in GiB (default: 2 on CPU; on GPU from the memory share)",
    )
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="the share of GPU memory the server takes (default: vLLM's 0.9)"
    )
    tensor_parallel_size: int = Field(1, gt=0, description="GPUs the model is split over")
    cpu_cores: str | None = Field(
        None,
        description="CPU backend: the cores this server computes on, e.g. 0 or 2-3 "
        "(VLLM_CPU_OMP_THREADS_BIND); give a policy and a PRM server on one machine different cores. "
        "Default: vLLM's binding",
    )
    max_model_len: int | None = Field(None, gt=0, description="default: the model's max_position_embeddings")
    dtype: str = Field("auto", description="weights' dtype: auto (the checkpoint's), bfloat16, ...")
    enforce_eager: bool | None = Field(None, description="no CUDA graphs (default: eager on CPU only)")
    print: bool = Field(False, description="print the vLLM command instead of running it")


def settings_parser(
    sub: Subparsers,
    name: str,
    settings: type[BaseSettings],
    run: Callable[[Any, argparse.Namespace], int],
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """A subcommand whose flags are `settings`' fields: `settings_of(args)` builds the settings from the
    parsed arguments (and the environment), and `func(args)` runs the command with them."""
    parser: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
    source: CliSettingsSource[Any] = CliSettingsSource(
        settings, root_parser=parser, cli_kebab_case=True, cli_implicit_flags=True
    )
    parser.set_defaults(
        settings_of=lambda args: settings(_cli_settings_source=source(parsed_args=args)),
        func=lambda args: run(args.settings_of(args), args),
    )
    return parser


# the strategies `ponder eval search` sweeps (evaluation.sweep_records.SWEEP_ENTRIES; kept here so --help
# is instant)
STRATEGY_LABELS = (
    "majority_vote",
    "adaptive_vote",
    "best_of_n_prm",
    "weighted_vote",
    "beam",
    "dvts",
    "mcts",
    "particle_filter",
    "revision",
)


def cmd_serve(settings: ServeSettings, args: argparse.Namespace) -> int:
    """Start both engines on the models and serve the OpenAI-compatible API on uvicorn."""
    from server.main import serve

    serve(settings)
    return 0


def cmd_engine(settings: ReplicaSettings, args: argparse.Namespace) -> int:
    """Run one vLLM server for a remote policy or PRM replica, with the in-process engines' settings."""
    from engines.cpu_binding import BIND_VARIABLE, pin
    from engines.vllm_engine import VLLMConfig
    from engines.vllm_serve import serve_command, serve_env

    config = VLLMConfig(
        model=settings.policy_dir if settings.role == "policy" else settings.prm_dir,
        kv_cache_gib=settings.kv_cache_gib,
        max_model_len=settings.max_model_len,
        dtype=settings.dtype,
        enforce_eager=settings.enforce_eager,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        tensor_parallel_size=settings.tensor_parallel_size,
        cpu_cores=settings.cpu_cores,
    )
    prm_spec = settings.prm_spec() if settings.role == "prm" else None
    argv = serve_command(config, settings.role, settings.host, settings.port, prm_spec=prm_spec)
    argv += args.vllm_args
    cores = settings.cpu_cores
    if settings.print:
        # taskset keeps the server's EngineCore on the cores too, as pin() does below
        binding = ["taskset", "-c", cores, "env", f"{BIND_VARIABLE}={cores}"] if cores else []
        print(shlex.join(binding + argv))
        return 0
    # the server and the engine processes it spawns stay on those cores (or on the CPU list a
    # container set in the variable; keywords such as "auto" leave the affinity alone)
    pin(cores or os.environ.get(BIND_VARIABLE))
    os.execve(argv[0], argv, serve_env(config))  # becomes the vLLM server: signals reach it directly


def stage_card(recipe: dict[str, Any], out: Path) -> None:
    """`ponder train`'s last stage: quick held-out metrics of both checkpoints, written into their cards."""
    from evaluation.foundation import card_metrics
    from training.checkpoint import record_metrics

    record_metrics(out, card_metrics(recipe, out))


def cmd_eval(args: argparse.Namespace) -> int:
    from evaluation.foundation import foundation_results

    report = foundation_results(
        args.models, args.out, args.problems, args.samples, args.label_rollouts, args.split
    )
    if args.write_cards:
        from training.checkpoint import record_metrics

        record_metrics(args.models, report)
    print(
        json.dumps(
            {k: v for k, v in report.items() if k in ("3", "4", "5", "engine_generated_tokens_per_s")},
            indent=2,
        )
    )
    return 0


def cmd_eval_prm_failures(args: argparse.Namespace) -> int:
    from evaluation.prm_failures import prm_failure_results

    report = prm_failure_results(args.models, args.out, args.tier, args.problems, args.samples, args.split)
    print(json.dumps({k: report[k] for k in ("solutions", "prm_auroc_final", "kinds")}, indent=2))
    return 0


def cmd_eval_search(args: argparse.Namespace) -> int:
    """Sweep strategies x budgets over a Countdown tier or a task file, in-process or on a server."""
    from evaluation.search import InProcess, rerun_auto, search_results
    from evaluation.solver import SearchFailed
    from evaluation.solver_http import ServerAddress
    from evaluation.sweep_progress import OtherSweep
    from evaluation.task_source import countdown_source, file_source

    labels = None if not args.strategies else [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = sorted(set(labels or ()) - set(STRATEGY_LABELS))
    if unknown:
        print(f"unknown strategies {unknown}; valid: {', '.join(STRATEGY_LABELS)}", file=sys.stderr)
        return 2
    if args.tasks is not None and args.tier is not None:
        print("give --tasks FILE or --tier N, not both", file=sys.stderr)
        return 2
    if args.server and args.auto_table is not None:
        print("--auto-table: a server's auto runs with the server's own table", file=sys.stderr)
        return 2
    multiples = [float(m) for m in args.multiples.split(",")]
    backend = (
        ServerAddress(args.server, args.model, args.api_key, args.request_timeout)
        if args.server
        else InProcess(args.models)
    )
    table_out = search_table_out(args)
    try:
        if args.auto_only:
            rerun_auto(backend, args.out, args.concurrency, table_out, args.prompt_style)
            print(args.out.with_suffix(".md").read_text())
            return 0
        try:
            if args.tasks is not None:
                source = file_source(args.tasks, args.problems, args.split)
            else:
                source = countdown_source(args.tier or 4, args.problems, args.split or "eval")
        except (ValueError, OSError) as error:  # a missing or malformed task file
            print(f"ponder eval search: {error}", file=sys.stderr)
            return 2
        report = search_results(
            backend,
            source,
            args.out,
            labels,
            multiples,
            args.concurrency,
            table_out,
            args.temperature,
            args.prompt_style,
            search_auto_from(args),
            args.resume,
        )
    except SearchFailed as error:  # an engine refused a prompt, or the server answered an error
        print(f"ponder eval search: {error}", file=sys.stderr)
        return 1
    except OtherSweep as error:  # --resume on another sweep's progress log
        print(f"ponder eval search: {error}", file=sys.stderr)
        return 2
    print(args.out.with_suffix(".md").read_text())
    print(json.dumps({k: v for k, v in report.items() if k != "points"}, indent=2))
    if table_out is None and args.server and not args.no_table:
        print("auto's table was not written: with --server, give --table-out PATH", file=sys.stderr)
    return 0


def on_the_eval_split(args: argparse.Namespace) -> bool:
    """A Countdown tier's eval split: reported on, never fitted on."""
    return args.tasks is None and (args.split or "eval") == "eval"


def search_table_out(args: argparse.Namespace) -> Path | None:
    """Where `ponder eval search` writes auto's table: --table-out; else MODELS/auto_table.json for an
    in-process sweep that is not on the eval split (auto's table is chosen on dev), and nowhere for one
    on a server (its models are not here)."""
    if args.no_table:
        return None
    if args.table_out is not None:
        return Path(args.table_out)
    return None if args.server or on_the_eval_split(args) else Path(args.models) / "auto_table.json"


def search_auto_from(args: argparse.Namespace) -> Path | None:
    """The table auto is measured with, fitted on other problems: --auto-table; else, in-process on the
    eval split, MODELS/auto_table.json where one was fitted (on dev). None: cross-fit auto on the sweep's
    own problems, or, on a server, measure auto as served."""
    if args.server:
        return None
    if args.auto_table is not None:
        return Path(args.auto_table)
    shipped = Path(args.models) / "auto_table.json"
    return shipped if on_the_eval_split(args) and shipped.exists() else None


def cmd_eval_replay(args: argparse.Namespace) -> int:
    from evaluation.replay import replay
    from tasks.sets import load_eval_set

    tasks = load_eval_set(args.tier, limit=args.problems)
    report = asyncio.run(
        replay(args.server, tasks, args.strategy, args.budget, args.concurrency, args.api_key)
    )
    print(json.dumps(report, indent=2))
    return 0 if report["failed"] == 0 else 1


def cmd_load(args: argparse.Namespace) -> int:
    from evaluation.load import load_results

    report = load_results(
        args.models, args.out, args.requests, args.concurrency, args.budget, not args.no_breakdown
    )
    print(json.dumps(report, indent=2))
    return 0 if report["failed"] == 0 and report["best_of_n"]["failed"] == 0 else 1


def bench_settings(args: argparse.Namespace) -> Any:
    """The engines `ponder bench` measures: --models, or a pair named by --policy and --prm."""
    from server.settings import EngineSettings

    named = {"policy": args.policy, "prm": args.prm, "prm_format": args.prm_format}
    return EngineSettings(models=args.models, **{k: v for k, v in named.items() if v is not None})


def bench_calibrate(args: argparse.Namespace) -> int:
    """Measure the compute unit's weights on the engines and write them where `ponder serve` reads them."""
    import platform

    from engines.cpu_binding import on_cpu_backend
    from evaluation.calibration import calibrate
    from server.engines import Engines

    settings = bench_settings(args)
    out = args.weights_out or settings.cost_weights_file  # MODELS/cost_weights.json for --models
    if out is None:
        print(
            "ponder bench --calibrate: a pair named by --policy/--prm has no models directory to write to; "
            "give --weights-out PATH (and serve with --cost-weights PATH)",
            file=sys.stderr,
        )
        return 2
    backend = "the vLLM CPU backend" if on_cpu_backend() else "GPU"
    described = f"{settings.policy_dir} + {settings.prm_dir} ({backend}, host {platform.node()})"
    engines = Engines.start(settings)  # on the cores or GPU shares they get when serving
    try:
        weights = asyncio.run(
            calibrate(engines, Path(out), described, sequences=args.prompts * args.n, repeats=args.repeats)
        )
    finally:
        engines.shutdown()
    print(json.dumps(weights.as_dict(), indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.calibrate:
        return bench_calibrate(args)
    if args.remote:
        from evaluation.remote import remote_overhead

        report = remote_overhead(args.models, args.out or Path("results/remote-overhead.json"))
        print(json.dumps(report, indent=2))
        return 0
    from evaluation.engine_curve import engine_curve, plot_engine_curve, request_shapes
    from evaluation.foundation import engine_throughput, prm_throughput
    from server.engines import Engines

    async def both(engines: Engines) -> dict[str, object]:
        policy = await engine_throughput(engines.policy, args.prompts, args.n, args.repeats)
        report = {**policy, **await prm_throughput(engines, args.prompts, args.n, args.repeats)}
        if args.curve:
            report["by_width"] = await engine_curve(engines, repeats=args.repeats)
            report["by_request_shape"] = await request_shapes(engines)
        return report

    # the engines on the cores they get when serving (one each on 2 cores)
    engines = Engines.start(bench_settings(args))
    try:
        report = asyncio.run(both(engines))
    finally:
        engines.shutdown()
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        if args.curve:
            plot_engine_curve(report["by_width"], args.out.with_name("engine-width.png"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ponder",
        description="Ponder: inference-time search on vLLM.",
        epilog=docs("index", "getting-started"),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_serve, add_engine, add_train, add_eval, add_bench, add_load, add_plot):
        add(sub)
    return parser


def add_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS, help=MODELS_HELP)


def add_serve(sub: Subparsers) -> None:
    settings_parser(
        sub,
        "serve",
        ServeSettings,
        cmd_serve,
        help="serve the OpenAI-compatible search API (uvicorn) on the models",
        description="Start the vLLM policy and PRM engines on MODELS and serve /v1/chat/completions, "
        "/v1/completions, /v1/models, /health and /metrics. Every flag can also be set as an environment "
        "variable PONDER_<FLAG> (PONDER_API_KEY, PONDER_PORT, ...).",
        epilog=docs("api", "own-models", "budget"),
    )


def add_engine(sub: Subparsers) -> None:
    settings_parser(
        sub,
        "engine",
        ReplicaSettings,
        cmd_engine,
        help="run one vLLM server for a remote policy or PRM replica (`ponder serve --policy-url`)",
        description="Start vLLM's OpenAI-compatible server on MODELS/ROLE with the settings of Ponder's "
        "in-process engines (block size 32, no chunked prefill, prompt-token details; for the PRM the STEP "
        "pooling classifier without prefix caching). Arguments after `--` go to vLLM unchanged.",
        epilog=docs("scaling-out", "vllm-cpu"),
    ).set_defaults(vllm_args=[])


def add_train(sub: Subparsers) -> None:
    sub.add_parser("train", help="train policy and PRM from a recipe (ponder train --help)", add_help=False)


def add_eval(sub: Subparsers) -> None:
    ev = sub.add_parser(
        "eval",
        help="held-out evaluations on the real engines (foundation, learning, prm-failures, search, replay)",
        epilog=docs("results", "own-tasks"),
    )
    suites = ev.add_subparsers(dest="suite", required=True)
    for add in (
        add_eval_foundation,
        add_eval_learning,
        add_eval_prm_failures,
        add_eval_search,
        add_eval_replay,
    ):
        add(suites)


def add_eval_foundation(suites: Subparsers) -> None:
    found = suites.add_parser(
        "foundation",
        help="policy accuracy, pass@k, PRM AUROC, engine throughput",
        epilog=docs("results"),
    )
    add_models(found)
    found.add_argument("--out", type=Path, default=Path("results/foundation.json"))
    found.add_argument("--problems", type=int, default=300, help="held-out problems per tier (max 300)")
    found.add_argument("--samples", type=int, default=16, help="sampled solutions per problem (pass@k's k)")
    found.add_argument("--label-rollouts", type=int, default=8, help="rollouts per step for the step labels")
    found.add_argument("--write-cards", action="store_true", help="also record them in both cards")
    found.add_argument(
        "--split", choices=["eval", "dev"], default="eval", help="which held-out set (dev for tuning)"
    )
    found.set_defaults(func=cmd_eval)


def add_eval_learning(suites: Subparsers) -> None:
    learn = suites.add_parser(
        "learning",
        help="the learning loop's curve: every round of a run on the eval split (results/learning.json)",
        epilog=docs("training", "results"),
    )
    learn.add_argument("--run", type=Path, required=True, help="a `ponder train` output with rounds/")
    learn.add_argument("--out", type=Path, default=Path("results/learning.json"))
    learn.add_argument("--tier", type=int, default=4, choices=[3, 4, 5])
    learn.add_argument("--problems", type=int, default=300, help="eval problems (max 300)")
    learn.add_argument("--samples", type=int, default=16, help="samples per problem (pass@k, Best-of-k)")
    learn.set_defaults(func=cmd_eval_learning)


def cmd_eval_learning(args: argparse.Namespace) -> int:
    from evaluation.learning import learning_results

    report = learning_results(args.run, args.out, args.tier, args.problems, args.samples)
    for entry in report["rounds"]:
        print(json.dumps({k: v for k, v in entry.items() if k != "stage_seconds"}))
    return 0


def add_eval_prm_failures(suites: Subparsers) -> None:
    failures = suites.add_parser(
        "prm-failures",
        help="the PRM's final-solution AUROC split by kind of mistake (results/prm-failures.json)",
        description="Sample solutions to held-out problems at temperature 1.0, grade each by the first thing "
        "wrong with it (a fake last step, an earlier illegal step, ...) and report, per kind, how often it "
        "happens and how well the PRM's last-step score separates it from the correct solutions.",
        epilog=docs("results"),
    )
    add_models(failures)
    failures.add_argument("--out", type=Path, default=Path("results/prm-failures.json"))
    failures.add_argument("--tier", type=int, default=4, choices=[3, 4, 5])
    failures.add_argument("--problems", type=int, default=150, help="held-out problems (max 300)")
    failures.add_argument("--samples", type=int, default=16, help="sampled solutions per problem")
    failures.add_argument(
        "--split",
        choices=["dev", "eval"],
        default="dev",
        help="which held-out set (default dev: the failures guide the PRM's next change)",
    )
    failures.set_defaults(func=cmd_eval_prm_failures)


def add_eval_search(suites: Subparsers) -> None:
    search = suites.add_parser(
        "search",
        help="every strategy x budget: accuracy against compute (results/search.{json,md,png})",
        description="Sweep strategies x budgets over a Countdown tier's held-out problems, or over your own "
        "task file (--tasks), on engines started here (--models) or on a running Ponder server (--server). "
        "Budgets are multiples of greedy's mean cost in compute units (generated-token equivalents, each "
        "kind of token at the served models' weights). On dev or a task file it also fits auto's strategy "
        "table (cross-fitted for its own points in-process); on a Countdown eval split auto is measured "
        "with the table fitted on dev; on a server, auto is measured as served.",
        epilog=docs("own-tasks", "results"),
    )
    add_models(search)
    search.add_argument("--out", type=Path, default=Path("results/search.json"))
    problems = search.add_argument_group("problems")
    problems.add_argument(
        "--tier", type=int, choices=[3, 4, 5], help="a shipped Countdown eval set (default 4)"
    )
    problems.add_argument(
        "--tasks",
        type=Path,
        help="your own JSONL task file instead: GSM8K / MATH-500 style (question or problem; answer or "
        "solution), or Ponder's task-set format (id, prompt, answer, tier, kind); graded by math-verify",
    )
    problems.add_argument(
        "--split",
        help="a Countdown tier's split: eval (default, for reporting) or dev (for tuning and auto's table); "
        "with --tasks, a label for the file's split (dev, test, ...) in the reports",
    )
    problems.add_argument("--problems", type=int, help="only the first N problems (default: all)")
    problems.add_argument(
        "--prompt-style",
        choices=["completion", "chat"],
        help="send each problem as a completion prompt or as a chat user message "
        "(default: chat for math tasks, completion for Countdown)",
    )
    server = search.add_argument_group("running server (instead of starting engines on --models)")
    server.add_argument("--server", help="base URL of a running Ponder server, e.g. http://127.0.0.1:8000")
    server.add_argument(
        "--model", default="ponder-default", help="the model id to ask the server for, sent as given"
    )
    server.add_argument(
        "--api-key", default=os.environ.get("PONDER_API_KEY"), help="the server's API key (PONDER_API_KEY)"
    )
    server.add_argument("--request-timeout", type=float, default=600.0, help="seconds per search request")
    search.add_argument(
        "--strategies", help="comma-separated labels (default: all): " + ", ".join(STRATEGY_LABELS)
    )
    search.add_argument("--multiples", default="1,2,4,16,64", help="budgets as multiples of greedy's cost")
    search.add_argument("--concurrency", type=int, default=64, help="problems searched at once")
    search.add_argument(
        "--temperature", type=float, default=0.8, help="sampling temperature of every search (HF recipe: 0.8)"
    )
    search.add_argument(
        "--table-out",
        type=Path,
        help="write auto's table here (default: MODELS/auto_table.json, which `ponder serve` reads; "
        "with --server: not written unless given)",
    )
    search.add_argument("--no-table", action="store_true", help="do not write auto's table")
    search.add_argument(
        "--auto-table",
        type=Path,
        help="measure auto with this table, fitted on other problems (default on a Countdown eval split: "
        "MODELS/auto_table.json, fitted on dev; otherwise auto is cross-fitted on the sweep's problems)",
    )
    search.add_argument(
        "--resume",
        action="store_true",
        help="take the points an interrupted run of the same sweep logged in OUT's -progress.jsonl "
        "instead of running them again (a sweep longer than a session)",
    )
    search.add_argument(
        "--auto-only",
        action="store_true",
        help="re-measure only auto from OUT's per-problem results (after a change to auto)",
    )
    search.set_defaults(func=cmd_eval_search)


def add_eval_replay(suites: Subparsers) -> None:
    rep = suites.add_parser(
        "replay",
        help="replay a held-out task set through a running server (graded into its metrics)",
        description="Send each task to SERVER's /v1/completions with a strategy, a budget and the reference "
        "answer, so the server counts graded outcomes (ponder_graded_total) and this prints the accuracy.",
        epilog=docs("metrics"),
    )
    rep.add_argument("--server", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    rep.add_argument("--tier", type=int, default=4, choices=[3, 4, 5])
    rep.add_argument("--problems", type=int, default=100)
    rep.add_argument("--strategy", default="auto")
    rep.add_argument("--budget", type=int, default=1024)
    rep.add_argument("--concurrency", type=int, default=8)
    rep.add_argument("--api-key", default=os.environ.get("PONDER_API_KEY"))
    rep.set_defaults(func=cmd_eval_replay)


def add_bench(sub: Subparsers) -> None:
    bench = sub.add_parser(
        "bench",
        help="raw policy-engine throughput (the search layer's reference) and the PRM's scored tokens/s",
        epilog=docs("results", "budget", "scaling-out"),
    )
    add_models(bench)
    bench.add_argument("--policy", help="a policy of your own instead of --models (with --prm)")
    bench.add_argument("--prm", help="its PRM (with --policy)")
    bench.add_argument("--prm-format", help="how the PRM reads solutions (default: its spec)")
    bench.add_argument("--prompts", type=int, default=16)
    bench.add_argument("--n", type=int, default=16)
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument(
        "--calibrate",
        action="store_true",
        help="measure the compute unit's weights (tokens/s of decoding, prefill, prefix-cache hits, PRM "
        "scoring and PRM cache hits, prompts x n sequences at once) and write them to "
        "MODELS/cost_weights.json, where `ponder serve` reads them",
    )
    bench.add_argument(
        "--weights-out",
        type=Path,
        help="with --calibrate: write the weights here instead (serve them with --cost-weights PATH)",
    )
    bench.add_argument("--out", type=Path, help="also write the JSON here, and the by-width plot beside it")
    bench.add_argument(
        "--no-curve",
        dest="curve",
        action="store_false",
        help="skip the policy's throughput by sequences in flight, alone and beside a busy PRM, and by "
        "request shape (whole solutions or one step per request, seeded or not) (~4 min)",
    )
    bench.add_argument(
        "--remote",
        action="store_true",
        help="measure remote engines (vllm serve on loopback) against in-process at equal load "
        "(writes results/remote-overhead.json unless --out)",
    )
    bench.set_defaults(func=cmd_bench)


def add_load(sub: Subparsers) -> None:
    load = sub.add_parser(
        "load",
        help="load-test the server on loopback (results/server-load.json)",
        description="Start the engines and the server on a loopback port, send REQUESTS chat requests at "
        "CONCURRENCY (a strategy mix, then Best-of-N only) and write latency percentiles and throughput "
        "against the raw engine throughput.",
        epilog=docs("results", "metrics"),
    )
    add_models(load)
    load.add_argument("--requests", type=int, default=200)
    load.add_argument("--concurrency", type=int, default=16)
    load.add_argument("--budget", type=int, default=600, help="tokens per request")
    load.add_argument("--out", type=Path, default=Path("results/server-load.json"))
    load.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip the runs that explain Best-of-N throughput (no HTTP, vote without PRM, 4x concurrency)",
    )
    load.set_defaults(func=cmd_load)


def add_plot(sub: Subparsers) -> None:
    plot = sub.add_parser(
        "plot",
        help="pictures from saved JSON, no engine: the results plots, an MCTS search tree",
        epilog=docs("results", "search-tree"),
    )
    kinds = plot.add_subparsers(dest="kind", required=True)
    results = kinds.add_parser(
        "results",
        help="draw the plots of the committed results files that their commands do not draw",
        description="Read results/*.json as their commands wrote them and write the plots beside them "
        "(foundation.png, prm-failures.png, learning-prm-swap-dev.png, server-load.png, "
        "remote-overhead.png). Each plot's title names its split and its results file.",
        epilog=docs("results"),
    )
    results.add_argument("--results", type=Path, default=Path("results"), help="the results folder")
    results.set_defaults(func=cmd_plot_results)
    tree = kinds.add_parser(
        "tree",
        help="draw an MCTS search tree (search.return_tree) as a PNG",
        description="FILE is a saved chat or completion response of a request with search.strategy mcts "
        "and search.return_tree true, its `search` object, or the tree itself. Nodes are coloured by "
        "value and sized by visits; finished solutions have a red rim; the most visited path is thick.",
        epilog=docs("search-tree"),
    )
    tree.add_argument("file", type=Path, help="the saved JSON")
    tree.add_argument("--out", type=Path, help="the PNG to write (default: FILE with .png)")
    tree.add_argument("--choice", type=int, default=0, help="which choice's tree, when n > 1")
    tree.add_argument("--title", help="the picture's title (default: the file's name)")
    tree.set_defaults(func=cmd_plot_tree)


def cmd_plot_results(args: argparse.Namespace) -> int:
    from evaluation.plots import results_plots

    for path in results_plots(args.results):
        print(path)
    return 0


def cmd_plot_tree(args: argparse.Namespace) -> int:
    from evaluation.tree_plot import NoTree, plot_tree_file

    out = args.out or args.file.with_suffix(".png")
    try:
        drawn = plot_tree_file(args.file, out, args.choice, args.title)
    except (NoTree, OSError, json.JSONDecodeError) as error:
        print(f"ponder plot tree: {error}", file=sys.stderr)
        return 2
    print(f"{out}: {drawn} nodes")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # `ponder train` owns all of its flags, --help included
        from evaluation.learning import round_metrics, start_pair
        from training.iterate import LoopHooks
        from training.pipeline import main as train_main

        hooks = LoopHooks(start_pair=start_pair, measure=round_metrics)
        return train_main(argv[1:], later_stages={"card": stage_card}, loop_hooks=hooks)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM unwinds like Ctrl-C, so `finally` blocks shut the vLLM engines down instead of leaving their
    # worker processes spinning without a parent.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    extra: list[str] = []
    if argv[:1] == ["engine"] and "--" in argv:  # `ponder engine ROLE ... -- <vLLM flags>`
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    if extra:
        args.vllm_args = extra
    try:
        return int(args.func(args))
    except (SpecError, ValidationError) as error:  # a setting that cannot work: say which, no traceback
        print(f"ponder {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
