"""The model spec: what the serving path must know about a policy and a PRM, read from their checkpoints.

Contract:
- `PolicySpec` says how the policy writes a solution: the step delimiter (the unit of search and of PRM
  scoring), the longest step and the longest solution in tokens, and how prompts are rendered (the
  tokenizer's chat template, or the last user message as a plain completion prompt, optionally after a
  system prompt). `PRMSpec` says how the PRM reads one: its input format, the step tag it reads a verdict
  at and the two verdict tokens compared there.
- Each is read from `ponder_spec.json` in its checkpoint directory (`read_policy_spec`, `read_prm_spec`;
  Ponder's own training writes it) and any field can be overridden (the command line does). A policy
  without the file gets defaults that suit chat models; a PRM without it must be told its tokens, since
  no default could be right for an unknown PRM.
- `split_steps_ids` cuts a completion's token ids into steps: the one definition of "a step" that the
  engines, the searchers and the PRM adapters share.

Nothing here imports another Ponder package: every layer above reads the spec, none defines it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

SPEC_FILE = "ponder_spec.json"
PromptFormat = Literal["chat_template", "plain"]
PRMFormat = Literal["ponder"]
PROMPT_FORMATS: tuple[str, ...] = ("chat_template", "plain")
PRM_FORMATS: tuple[str, ...] = ("ponder",)
Spec = TypeVar("Spec", "PolicySpec", "PRMSpec")


class SpecError(ValueError):
    """A model spec that cannot be right for its checkpoint (missing, malformed or contradictory)."""


@dataclass(frozen=True)
class PolicySpec:
    step_delimiter: str = "\n\n"  # chat models separate reasoning steps by blank lines
    max_step_tokens: int = 512  # one step longer than this is cut (finish "length")
    max_solution_tokens: int = 2048  # one whole solution, all steps
    prompt_format: PromptFormat = "chat_template"
    system_prompt: str | None = None  # put before the conversation when it has no system message

    def __post_init__(self) -> None:
        if not self.step_delimiter:
            raise SpecError("the step delimiter must not be empty")
        if not 0 < self.max_step_tokens <= self.max_solution_tokens:
            raise SpecError(
                f"need 0 < max_step_tokens ({self.max_step_tokens}) <= max_solution_tokens "
                f"({self.max_solution_tokens})"
            )
        if self.prompt_format not in PROMPT_FORMATS:
            raise SpecError(
                f"unknown prompt format {self.prompt_format!r}; valid: {', '.join(PROMPT_FORMATS)}"
            )


@dataclass(frozen=True)
class PRMSpec:
    """A PRM that reads `prompt, step, tag, step, tag, ...` and, at each tag, compares the logits of its
    two verdict tokens: P(step good) = softmax([good, bad])[good] (Math-Shepherd's reading)."""

    step_tag: str
    good_token: str
    bad_token: str
    format: PRMFormat = "ponder"

    def __post_init__(self) -> None:
        if self.format not in PRM_FORMATS:
            raise SpecError(f"unknown PRM format {self.format!r}; valid: {', '.join(PRM_FORMATS)}")
        if len({self.step_tag, self.good_token, self.bad_token}) < 3 or not all(
            (self.step_tag, self.good_token, self.bad_token)
        ):
            raise SpecError("the PRM's step tag and its two verdict tokens must be three different tokens")


def write_spec(directory: Path, spec: PolicySpec | PRMSpec) -> None:
    """Record a checkpoint's spec beside its weights (Ponder's training does this for what it trains)."""
    (Path(directory) / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n")


def read_policy_spec(directory: str | Path, **overrides: Any) -> PolicySpec:
    """The policy's spec: its file's fields (defaults where it has none), then the non-None overrides."""
    return _read(PolicySpec, directory, overrides)


def read_prm_spec(directory: str | Path, **overrides: Any) -> PRMSpec:
    """The PRM's spec: its file's fields, then the non-None overrides; it fails with the fields it lacks."""
    return _read(PRMSpec, directory, overrides)


def _read(kind: type[Spec], directory: str | Path, overrides: dict[str, Any]) -> Spec:
    path = Path(directory) / SPEC_FILE
    recorded: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(recorded) - names) + sorted(set(overrides) - names)
    if unknown:
        raise SpecError(f"{path}: unknown {kind.__name__} fields {unknown}; valid: {sorted(names)}")
    chosen = {**recorded, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return kind(**chosen)
    except TypeError as error:  # a required field neither recorded nor given
        raise SpecError(
            f"{directory}: no complete {kind.__name__} ({error}); write {SPEC_FILE} there or pass the "
            "missing fields on the command line"
        ) from None


def with_overrides(spec: Spec, **overrides: Any) -> Spec:
    """The spec with the given non-None fields replaced."""
    return replace(spec, **{k: v for k, v in overrides.items() if v is not None})


def split_steps_ids(token_ids: Sequence[int], delimiter_id: int) -> list[tuple[int, ...]]:
    """Token ids of a completion cut after each delimiter (a trailing unfinished step is kept)."""
    steps: list[tuple[int, ...]] = []
    current: list[int] = []
    for token in token_ids:
        current.append(token)
        if token == delimiter_id:
            steps.append(tuple(current))
            current = []
    if current:
        steps.append(tuple(current))
    return steps
