"""`ponder train`: recipe in, checkpoints out.

Stages, each resumable on its own with `--stages`:
  policy    tokenizer + Llama config + behaviour cloning on solver traces   -> OUT/policy
  prm_data  Math-Shepherd Monte-Carlo step labels with the policy on vLLM  -> OUT/prm_data.jsonl (TRL)
            (+ exact-only labels of more policy samples, if the recipe asks)    -> OUT/prm_data_exact.jsonl
  prm       PRM training from those labels (step tag + good/bad tokens)     -> OUT/prm
  prm_refine  the PRM taught to check arithmetic (if the recipe has [prm_refine]) -> OUT/prm
  iterate   the learning loop (if the recipe has [iterate]): search -> verify -> fine-tune the policy,
            relabel, refit the PRM, round by round (`training.iterate`)  -> OUT/rounds/r, OUT/policy, OUT/prm

`--base DIR` starts from an existing Hugging Face policy (copied to OUT/policy, with a spec) instead of
training one, and `--prm-base DIR` from an existing PRM in a format `ponder serve` reads (ponder or
math-shepherd), which the loop refits in that same format: a user's own pair, improved on their own tasks.

`ponder train` adds a last stage, `card` (held-out metrics of both checkpoints on vLLM, written to their
ponder_card.json), through `later_stages`: measuring belongs to `evaluation`, which training does not import.

Every stage draws its problems from the train split alone (`tasks.split`; `training.problems` lists them),
so the eval and dev sets are held out by meaning.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.iterate import LoopHooks

Stage = Callable[[dict[str, Any], Path], None]  # (recipe, output directory)
RECIPES = Path(__file__).parent / "recipes"
log = logging.getLogger("ponder.train")


def load_recipe(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.exists():
        path = RECIPES / f"{name_or_path}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.toml")))
        raise SystemExit(
            f"unknown recipe {name_or_path!r}; known recipes: {known}, or a path to a .toml file"
        )
    with path.open("rb") as handle:
        recipe = tomllib.load(handle)
    recipe.setdefault("name", path.stem)
    return recipe


def tiers(table: dict[str, int]) -> dict[int, int]:
    return {int(k): int(v) for k, v in table.items()}


def stage_policy(recipe: dict[str, Any], out: Path) -> None:
    import torch

    from training.checkpoint import save_checkpoint
    from training.loop import FitConfig, MetricsLog, resume_path
    from training.sft import train_policy
    from training.tokenizer import POLICY_SPEC, build_tokenizer
    from training.traces import build_traces

    torch.set_num_threads(os.cpu_count() or 1)
    sft = recipe["sft"]
    tokenizer = build_tokenizer()
    traces = build_traces(
        tiers(sft["problems_per_tier"]),
        int(sft["solutions_per_problem"]),
        int(recipe["seed"]),
        sft.get("distinct", "order"),
    )
    fit_config = FitConfig.from_table(sft, int(recipe["seed"]))
    started = time.time()
    model = train_policy(
        tokenizer,
        traces,
        recipe["policy"],
        fit_config,
        MetricsLog(out / "metrics.jsonl"),
        resume_path(out, "policy_sft"),
    )
    card = {
        "kind": "policy",
        "recipe": recipe,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(time.time() - started, 1),
        "traces": len(traces),
    }
    save_checkpoint(model, tokenizer, out / "policy", card, POLICY_SPEC)


def stage_prm_data(recipe: dict[str, Any], out: Path) -> None:
    from training.prm_data import label_steps

    label_steps(recipe, out / "policy", out)


def stage_prm(recipe: dict[str, Any], out: Path) -> None:
    from training.prm import train_prm

    train_prm(recipe, out)


def stage_prm_refine(recipe: dict[str, Any], out: Path) -> None:
    if "prm_refine" not in recipe:
        log.info("recipe %s has no [prm_refine]: the PRM stays as trained", recipe["name"])
        return
    from training.prm_refine import refine_prm

    refine_prm(recipe, out)


def stage_iterate(hooks: LoopHooks | None) -> Stage:
    def run(recipe: dict[str, Any], out: Path) -> None:
        if "iterate" not in recipe:
            log.info("recipe %s has no [iterate]: no learning loop", recipe["name"])
            return
        if hooks is None:
            raise SystemExit("the iterate stage runs through `ponder train`, which starts its engines")
        from training.iterate import iterate

        iterate(recipe, out, hooks)

    return run


def copy_base(source: Path, target: Path, stage: str) -> Stage:
    """A stage that takes an existing checkpoint instead of training one."""

    def run(recipe: dict[str, Any], out: Path) -> None:
        from training.iterate import copy_checkpoint

        log.info("stage %s: starting from %s", stage, source)
        copy_checkpoint(source, out / target)

    return run


def main(
    argv: list[str] | None = None,
    later_stages: Mapping[str, Stage] | None = None,
    loop_hooks: LoopHooks | None = None,
) -> int:
    """`later_stages` run after the training stages, in order (the command line's `card`);
    `loop_hooks` start engines and measure a pair for the iterate stage."""
    args = parser(later_stages).parse_args(argv)
    runners: dict[str, Stage] = {
        "policy": stage_policy if args.base is None else copy_base(args.base, Path("policy"), "policy"),
        "prm_data": stage_prm_data,
        "prm": stage_prm,
        "prm_refine": stage_prm_refine,
        "iterate": stage_iterate(loop_hooks),
        **(later_stages or {}),
    }
    if args.prm_base is not None:  # an existing PRM replaces the three stages that would make one
        runners.pop("prm_data")
        runners.pop("prm_refine")
        runners["prm"] = copy_base(args.prm_base, Path("prm"), "prm")
    return run_stages(args, runners)


STAGE_NAMES = ("policy", "prm_data", "prm", "prm_refine", "iterate")


def parser(later_stages: Mapping[str, Stage] | None) -> argparse.ArgumentParser:
    names = [*STAGE_NAMES, *(later_stages or {})]
    parser = argparse.ArgumentParser(
        prog="ponder train",
        description="Train the policy and the PRM that Ponder serves, from a recipe (see training/recipes/).",
        epilog="Docs: docs/training.md",
    )
    parser.add_argument("--recipe", default="micro", help="recipe name (default, micro) or a .toml path")
    parser.add_argument("--out", type=Path, help="output directory (default: runs/<recipe name>)")
    parser.add_argument(
        "--stages",
        help=f"comma-separated subset of {','.join(names)} (default: all, in order)",
    )
    parser.add_argument(
        "--base",
        type=Path,
        help="start from this Hugging Face policy instead of training one (no policy SFT)",
    )
    parser.add_argument(
        "--prm-base",
        type=Path,
        help="start from this PRM (ponder or math-shepherd format) instead of training one; "
        "the loop refits it in that format",
    )
    return parser


def run_stages(args: argparse.Namespace, runners: dict[str, Stage]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    recipe = load_recipe(args.recipe)
    out: Path = args.out or Path("runs") / recipe["name"]
    stages = [s.strip() for s in (args.stages or ",".join(runners)).split(",") if s.strip()]
    unknown = sorted(set(stages) - set(runners))
    if unknown:
        raise SystemExit(f"ponder train: unknown stage(s) {', '.join(unknown)}; valid: {', '.join(runners)}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    for stage in runners:
        if stage in stages:
            log.info("stage %s: recipe %s -> %s", stage, recipe["name"], out)
            started = time.time()
            runners[stage](recipe, out)
            log.info("stage %s done in %.1f s", stage, time.time() - started)
            record_wall_time(out, stage, time.time() - started)
    from training.plots import plot_training

    plot = plot_training(out)
    if plot:
        log.info("training curves: %s", plot)
    return 0


def record_wall_time(out: Path, stage: str, seconds: float) -> None:
    """Each stage's last wall time, in OUT/stage_seconds.json and in both checkpoints' cards."""
    from training.checkpoint import update_card

    path = out / "stage_seconds.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    times[stage] = round(seconds, 1)
    path.write_text(json.dumps(times, indent=2) + "\n")
    for name in ("policy", "prm"):
        if (out / name / "config.json").exists():
            update_card(out / name, stage_seconds=times)


if __name__ == "__main__":
    sys.exit(main())
