"""`ponder`: one command line for serving, training, evaluation and benchmarks.

Contract: each subcommand parses its own arguments and calls into the package that owns the work;
heavy imports (torch, vLLM) happen inside the subcommand so `ponder --help` is instant.
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
from pathlib import Path

from ponder.defaults import DEFAULT_MODELS

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
    "revision",
)


def cmd_serve(args: argparse.Namespace) -> int:
    """Start both engines on the models and serve the OpenAI-compatible API on uvicorn."""
    from server.main import ServerConfig, serve

    serve(
        ServerConfig(
            models=args.models,
            host=args.host,
            port=args.port,
            model_name=args.model_name,
            api_key=args.api_key or os.environ.get("PONDER_API_KEY") or None,
            default_strategy=args.default_strategy,
            default_budget=args.default_budget,
            max_budget=args.max_budget,
            max_running=args.max_running,
            max_queued=args.max_queued,
            policy_urls=tuple(args.policy_url or ()),
            prm_urls=tuple(args.prm_url or ()),
            replica_cool_off_s=args.replica_cool_off,
        )
    )
    return 0


def cmd_engine(args: argparse.Namespace) -> int:
    """Run one vLLM server for a remote policy or PRM replica, with the in-process engines' settings."""
    from engines.cpu_binding import BIND_VARIABLE, pin
    from engines.vllm_engine import VLLMConfig
    from engines.vllm_serve import serve_command, serve_env

    config = VLLMConfig(
        model=str(args.models / args.role),
        kv_cache_gib=args.kv_cache_gib,
        max_model_len=args.max_model_len,
        dtype=args.dtype,
        enforce_eager=not args.compile,
        cpu_cores=args.cpu_cores,
    )
    argv = serve_command(config, args.role, args.host, args.port) + list(args.vllm_args)
    if args.print:
        # taskset keeps the server's EngineCore on the cores too, as pin() does below
        binding = (
            ["taskset", "-c", args.cpu_cores, "env", f"{BIND_VARIABLE}={args.cpu_cores}"]
            if args.cpu_cores
            else []
        )
        print(shlex.join(binding + argv))
        return 0
    # the server and the engine processes it spawns stay on those cores (or on the CPU list a
    # container set in the variable; keywords such as "auto" leave the affinity alone)
    pin(args.cpu_cores or os.environ.get(BIND_VARIABLE))
    os.execve(argv[0], argv, serve_env(config))  # becomes the vLLM server: signals reach it directly


def cmd_eval(args: argparse.Namespace) -> int:
    from evaluation.foundation import foundation_results

    report = foundation_results(args.models, args.out, args.problems, args.samples, args.label_rollouts)
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

    report = prm_failure_results(args.models, args.out, args.tier, args.problems, args.samples)
    print(json.dumps({k: report[k] for k in ("solutions", "prm_auroc_final", "kinds")}, indent=2))
    return 0


def cmd_eval_search(args: argparse.Namespace) -> int:
    from evaluation.search import search_results

    labels = None if not args.strategies else [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = sorted(set(labels or ()) - set(STRATEGY_LABELS))
    if unknown:
        print(f"unknown strategies {unknown}; valid: {', '.join(STRATEGY_LABELS)}", file=sys.stderr)
        return 2
    multiples = [float(m) for m in args.multiples.split(",")]
    table_out = None if args.no_table else (args.table_out or args.models / "auto_table.json")
    if args.auto_only:
        from evaluation.search import rerun_auto

        rerun_auto(args.models, args.out, args.concurrency, table_out)
        print(args.out.with_suffix(".md").read_text())
        return 0
    report = search_results(
        args.models,
        args.out,
        args.tier,
        args.problems,
        labels,
        multiples,
        args.concurrency,
        table_out,
        args.temperature,
    )
    print(args.out.with_suffix(".md").read_text())
    print(json.dumps({k: v for k, v in report.items() if k != "points"}, indent=2))
    return 0


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


def cmd_bench(args: argparse.Namespace) -> int:
    if args.remote:
        from evaluation.remote import remote_overhead

        report = remote_overhead(args.models, args.out or Path("results/remote-overhead.json"))
        print(json.dumps(report, indent=2))
        return 0
    from evaluation.engine_curve import engine_curve, plot_engine_curve
    from evaluation.foundation import engine_throughput, prm_throughput
    from ponder.pair import Pair

    async def both(pair: Pair) -> dict[str, object]:
        policy = await engine_throughput(pair.policy, args.prompts, args.n, args.repeats)
        report = {**policy, **await prm_throughput(pair, args.prompts, args.n, args.repeats)}
        if args.curve:
            report["by_width"] = await engine_curve(pair, repeats=args.repeats)
        return report

    # the engines on the cores they get when serving (one each on 2 cores)
    pair = Pair.start(args.models)
    try:
        report = asyncio.run(both(pair))
    finally:
        pair.shutdown()
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        if args.curve:
            plot_engine_curve(report["by_width"], args.out.with_name("engine-width.png"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ponder", description="Ponder: inference-time search on vLLM.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="serve the OpenAI-compatible search API (uvicorn) on the models",
        description="Start the vLLM policy and PRM engines on MODELS and serve /v1/chat/completions, "
        "/v1/completions, /v1/models, /health and /metrics.",
    )
    serve.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="directory with policy/ and prm/")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model-name", default="ponder-default", help="the model id clients ask for")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 (or set PONDER_API_KEY)")
    serve.add_argument("--default-strategy", default="auto", help="strategy when a request names none")
    serve.add_argument("--default-budget", type=int, default=1024, help="tokens when a request names none")
    serve.add_argument("--max-budget", type=int, default=65_536, help="largest budget a request may ask")
    serve.add_argument("--max-running", type=int, default=64, help="searches run at once")
    serve.add_argument("--max-queued", type=int, default=256, help="searches waiting before 429s")
    serve.add_argument(
        "--policy-url",
        action="append",
        metavar="URL",
        help="a remote policy replica (vLLM server, e.g. from `ponder engine policy`); repeat for more. "
        "Without it the policy runs in-process",
    )
    serve.add_argument(
        "--prm-url",
        action="append",
        metavar="URL",
        help="a remote PRM replica (vLLM pooling server, `ponder engine prm`); repeat for more",
    )
    serve.add_argument(
        "--replica-cool-off", type=float, default=10.0, help="seconds a failed replica is skipped"
    )
    serve.set_defaults(func=cmd_serve)

    engine = sub.add_parser(
        "engine",
        help="run one vLLM server for a remote policy or PRM replica (`ponder serve --policy-url`)",
        description="Start vLLM's OpenAI-compatible server on MODELS/ROLE with the settings of Ponder's "
        "in-process engines (block size 32, no chunked prefill, prompt-token details; for the PRM the STEP "
        "pooling classifier without prefix caching). Arguments after `--` go to vLLM unchanged.",
    )
    engine.add_argument("role", choices=["policy", "prm"])
    engine.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="directory with policy/ and prm/")
    engine.add_argument("--host", default="127.0.0.1")
    engine.add_argument("--port", type=int, default=8001)
    engine.add_argument(
        "--kv-cache-gib", type=float, default=2.0, help="KV cache on CPU (VLLM_CPU_KVCACHE_SPACE)"
    )
    engine.add_argument(
        "--cpu-cores",
        help="CPU backend: the cores this server computes on, e.g. 0 or 2-3 (VLLM_CPU_OMP_THREADS_BIND); "
        "give a policy and a PRM server on one machine different cores. Default: vLLM's binding",
    )
    engine.add_argument("--max-model-len", type=int, help="default: the model's max_position_embeddings")
    engine.add_argument("--dtype", default="float32", help="float32 for the embedded models; auto on GPU")
    engine.add_argument("--compile", action="store_true", help="let vLLM compile (slower start-up)")
    engine.add_argument("--print", action="store_true", help="print the vLLM command instead of running it")
    engine.set_defaults(func=cmd_engine, vllm_args=[])

    sub.add_parser("train", help="train policy and PRM from a recipe (ponder train --help)", add_help=False)

    ev = sub.add_parser(
        "eval", help="held-out evaluations on the real engines (foundation, prm-failures, search)"
    )
    suites = ev.add_subparsers(dest="suite", required=True)
    found = suites.add_parser("foundation", help="policy accuracy, pass@k, PRM AUROC, engine throughput")
    found.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="directory with policy/ and prm/")
    found.add_argument("--out", type=Path, default=Path("results/foundation.json"))
    found.add_argument("--problems", type=int, default=300, help="held-out problems per tier (max 300)")
    found.add_argument("--samples", type=int, default=16, help="sampled solutions per problem (pass@k's k)")
    found.add_argument("--label-rollouts", type=int, default=8, help="rollouts per step for the step labels")
    found.add_argument("--write-cards", action="store_true", help="also record them in both cards")
    found.set_defaults(func=cmd_eval)

    failures = suites.add_parser(
        "prm-failures",
        help="the PRM's final-solution AUROC split by kind of mistake (results/prm-failures.json)",
        description="Sample solutions to held-out problems at temperature 1.0, grade each by the first thing "
        "wrong with it (a fake last step, an earlier illegal step, ...) and report, per kind, how often it "
        "happens and how well the PRM's last-step score separates it from the correct solutions.",
    )
    failures.add_argument(
        "--models", type=Path, default=DEFAULT_MODELS, help="directory with policy/ and prm/"
    )
    failures.add_argument("--out", type=Path, default=Path("results/prm-failures.json"))
    failures.add_argument("--tier", type=int, default=4, choices=[3, 4, 5])
    failures.add_argument("--problems", type=int, default=150, help="held-out problems (max 300)")
    failures.add_argument("--samples", type=int, default=16, help="sampled solutions per problem")
    failures.set_defaults(func=cmd_eval_prm_failures)

    search = suites.add_parser(
        "search",
        help="every strategy x budget: accuracy against compute (results/search.{json,md,png})",
        description="Sweep strategies x budgets over a tier's held-out problems on the real engines. "
        "Budgets are multiples of greedy's mean generated tokens; a budget counts generated + PRM-scored "
        "tokens. Also fits auto's strategy table (cross-fitted for its own points).",
    )
    search.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="directory with policy/ and prm/")
    search.add_argument("--out", type=Path, default=Path("results/search.json"))
    search.add_argument("--tier", type=int, default=4, choices=[3, 4, 5])
    search.add_argument("--problems", type=int, default=300, help="held-out problems (max 300)")
    search.add_argument(
        "--strategies", help="comma-separated labels (default: all): " + ", ".join(c for c in STRATEGY_LABELS)
    )
    search.add_argument("--multiples", default="1,2,4,16,64", help="budgets as multiples of greedy's tokens")
    search.add_argument("--concurrency", type=int, default=64, help="problems searched at once")
    search.add_argument(
        "--temperature", type=float, default=0.8, help="sampling temperature of every search (HF recipe: 0.8)"
    )
    search.add_argument(
        "--table-out", type=Path, help="write auto's table here (default: MODELS/auto_table.json)"
    )
    search.add_argument("--no-table", action="store_true", help="do not write auto's table")
    search.add_argument(
        "--auto-only",
        action="store_true",
        help="re-measure only auto from OUT's per-problem results (after a change to auto)",
    )
    search.set_defaults(func=cmd_eval_search)

    rep = suites.add_parser(
        "replay",
        help="replay a held-out task set through a running server (graded into its metrics)",
        description="Send each task to SERVER's /v1/completions with a strategy, a budget and the reference "
        "answer, so the server counts graded outcomes (ponder_graded_total) and this prints the accuracy.",
    )
    rep.add_argument("--server", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    rep.add_argument("--tier", type=int, default=4, choices=[3, 4, 5])
    rep.add_argument("--problems", type=int, default=100)
    rep.add_argument("--strategy", default="auto")
    rep.add_argument("--budget", type=int, default=1024)
    rep.add_argument("--concurrency", type=int, default=8)
    rep.add_argument("--api-key", default=os.environ.get("PONDER_API_KEY"))
    rep.set_defaults(func=cmd_eval_replay)

    bench = sub.add_parser(
        "bench",
        help="raw policy-engine throughput (the search layer's reference) and the PRM's scored tokens/s",
    )
    bench.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    bench.add_argument("--prompts", type=int, default=16)
    bench.add_argument("--n", type=int, default=16)
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--out", type=Path, help="also write the JSON here, and the by-width plot beside it")
    bench.add_argument(
        "--no-curve",
        dest="curve",
        action="store_false",
        help="skip the policy's throughput by sequences in flight, alone and beside a busy PRM (~3 min)",
    )
    bench.add_argument(
        "--remote",
        action="store_true",
        help="measure remote engines (vllm serve on loopback) against in-process at equal load "
        "(writes results/remote-overhead.json unless --out)",
    )
    bench.set_defaults(func=cmd_bench)

    load = sub.add_parser(
        "load",
        help="load-test the server on loopback (results/server-load.json)",
        description="Start the engines and the server on a loopback port, send REQUESTS chat requests at "
        "CONCURRENCY (a strategy mix, then Best-of-N only) and write latency percentiles and throughput "
        "against the raw engine throughput.",
    )
    load.add_argument("--models", type=Path, default=DEFAULT_MODELS)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # `ponder train` owns all of its flags, --help included
        from training.pipeline import main as train_main

        return train_main(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM unwinds like Ctrl-C, so `finally` blocks shut the vLLM engines down instead of leaving their
    # worker processes spinning without a parent.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    extra: list[str] = []
    if argv[:1] == ["engine"] and "--" in argv:  # `ponder engine ROLE ... -- <vLLM flags>`
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    if extra:
        args.vllm_args = extra
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
