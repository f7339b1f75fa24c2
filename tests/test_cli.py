import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ponder.cli import ServeSettings, build_parser, main
from ponder.defaults import DEFAULT_MODELS
from searchers.controller import Limits


def test_help_lists_every_subcommand() -> None:
    text = build_parser().format_help()
    for command in ("serve", "train", "eval", "bench"):
        assert command in text


def test_train_help_is_owned_by_the_training_entrypoint() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ponder.cli", "train", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "--recipe" in result.stdout and "--stages" in result.stdout


def test_unknown_recipe_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ponder.cli", "train", "--recipe", "nope"], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "unknown recipe 'nope'" in result.stderr and "micro" in result.stderr


def test_serve_help_names_its_settings() -> None:
    text = subprocess.run(
        [sys.executable, "-m", "ponder.cli", "serve", "--help"], capture_output=True, text=True
    ).stdout
    for flag in ("--models", "--port", "--api-key", "--default-strategy", "--default-budget", "--max-queued"):
        assert flag in text


def test_eval_search_refuses_unknown_strategies() -> None:
    assert main(["eval", "search", "--strategies", "nope", "--problems", "1"]) == 2


def serve_settings(argv: list[str]) -> ServeSettings:
    args = build_parser().parse_args(["serve", *argv])
    settings = args.settings_of(args)
    assert isinstance(settings, ServeSettings)
    return settings


def test_serve_takes_remote_replicas() -> None:
    settings = serve_settings(
        ["--policy-url", "http://p1:8001", "--policy-url", "http://p2:8001", "--prm-url", "http://r:8002"]
    )
    assert settings.policy_url == ["http://p1:8001", "http://p2:8001"] and settings.prm_url == [
        "http://r:8002"
    ]
    assert serve_settings([]).policy_url == []  # in-process engines


def test_serve_settings_are_declared_once() -> None:
    """The command line, the server's settings and the controller's limits share one default each."""
    settings = serve_settings([])
    assert Limits.of(settings) == Limits()
    assert settings.default_strategy == "auto" and settings.models == DEFAULT_MODELS
    assert serve_settings(["--default-strategy", "beam", "--max-budget", "99", "--default-budget", "9"]) == (
        ServeSettings(default_strategy="beam", max_budget=99, default_budget=9)
    )


def test_serve_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_API_KEY", "secret")
    monkeypatch.setenv("PONDER_PORT", "9001")
    settings = serve_settings(["--port", "9002"])
    assert settings.api_key == "secret" and settings.port == 9002  # the command line wins


def test_serve_refuses_a_default_budget_over_the_max() -> None:
    with pytest.raises(ValidationError, match="exceeds max budget"):
        serve_settings(["--default-budget", "100", "--max-budget", "10"])


def test_engine_prints_the_vllm_command_with_the_in_process_settings(capsys: object) -> None:
    assert main(["engine", "prm", "--port", "9002", "--print", "--", "--max-num-batched-tokens", "4096"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    for part in (
        "--port 9002",
        "--block-size 32",
        "--no-enable-chunked-prefill",
        "--runner pooling",
        '"tok_pooling_type": "STEP"',
        "--no-enable-prefix-caching",
        "--max-num-batched-tokens 4096",
    ):
        assert part in out
    main(["engine", "policy", "--print"])
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "--enable-prompt-tokens-details" in out and "--enable-prefix-caching" in out
    assert "VLLM_CPU_OMP_THREADS_BIND" not in out  # vLLM's own binding unless told
    main(["engine", "prm", "--cpu-cores", "1", "--print"])
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert out.startswith("taskset -c 1 env VLLM_CPU_OMP_THREADS_BIND=1 ")


def test_eval_search_parses_a_task_file_and_a_server() -> None:
    from ponder.cli import search_table_out

    argv = ["eval", "search", "--tasks", "dev.jsonl", "--problems", "50", "--split", "dev"]
    args = build_parser().parse_args(
        [*argv, "--server", "http://gpu:8000", "--model", "qwen2.5-math:1.5b", "--api-key", "k"]
    )
    assert (args.tasks, args.problems, args.split, args.tier) == (Path("dev.jsonl"), 50, "dev", None)
    assert (args.server, args.model, args.api_key) == ("http://gpu:8000", "qwen2.5-math:1.5b", "k")
    assert args.request_timeout == 600.0 and args.prompt_style is None
    assert search_table_out(args) is None  # a server's models are not here: only --table-out writes it
    args = build_parser().parse_args([*argv, "--server", "http://gpu:8000", "--table-out", "t.json"])
    assert search_table_out(args) == Path("t.json") and args.model == "ponder-default"
    args = build_parser().parse_args([*argv, "--models", "m", "--prompt-style", "completion"])
    assert args.server is None and args.prompt_style == "completion"
    assert search_table_out(args) == Path("m") / "auto_table.json"  # in-process: beside the models
    assert search_table_out(build_parser().parse_args([*argv, "--no-table"])) is None
    defaults = build_parser().parse_args(["eval", "search"])
    assert defaults.tasks is None and defaults.tier is None and defaults.problems is None  # tier 4, all


def test_eval_search_fits_auto_on_dev_and_reports_eval_with_that_table(tmp_path: Path) -> None:
    from ponder.cli import search_auto_from, search_table_out

    models = tmp_path / "m"
    models.mkdir()
    dev = build_parser().parse_args(["eval", "search", "--split", "dev", "--models", str(models)])
    assert search_table_out(dev) == models / "auto_table.json" and search_auto_from(dev) is None
    evaluated = build_parser().parse_args(["eval", "search", "--models", str(models)])
    assert search_table_out(evaluated) is None  # never fitted on the eval split
    assert search_auto_from(evaluated) is None  # no dev table yet: cross-fitted, as the report says
    (models / "auto_table.json").write_text("{}")
    assert search_auto_from(evaluated) == models / "auto_table.json"
    on_server = build_parser().parse_args(["eval", "search", "--server", "http://x", "--auto-table", "t"])
    assert search_auto_from(on_server) is None  # the server's own table is what auto runs with there
    assert main(["eval", "search", "--server", "http://x", "--auto-table", "t"]) == 2  # refused, not ignored


def test_eval_search_refuses_a_tier_with_a_task_file_and_a_missing_file(capsys: object) -> None:
    assert main(["eval", "search", "--tasks", "x.jsonl", "--tier", "3"]) == 2
    assert main(["eval", "search", "--tasks", "/nonexistent/x.jsonl", "--no-table"]) == 2
    assert "/nonexistent/x.jsonl" in capsys.readouterr().err  # type: ignore[attr-defined]
