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
