import subprocess
import sys

from ponder.cli import build_parser, main


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


def test_serve_takes_remote_replicas() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--policy-url",
            "http://p1:8001",
            "--policy-url",
            "http://p2:8001",
            "--prm-url",
            "http://r:8002",
        ]
    )
    assert args.policy_url == ["http://p1:8001", "http://p2:8001"] and args.prm_url == ["http://r:8002"]
    assert build_parser().parse_args(["serve"]).policy_url is None  # in-process engines


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
