"""The model spec: what the serving path must know about a policy and a PRM, read from their checkpoints.

Contract:
- `PolicySpec` says how the policy writes a solution: the step delimiter (the unit of search and of PRM
  scoring), the longest step and the longest solution in tokens, and how prompts are rendered (the
  tokenizer's chat template, or the last user message as a plain completion prompt, optionally after a
  system prompt). `PRMSpec` says how the PRM reads one: its input format (ours, Qwen2.5-Math-PRM's or
  Math-Shepherd's), the step tag it reads a verdict at and the two verdict tokens compared there.
- Each is read from `ponder_spec.json` in its checkpoint directory (`read_policy_spec`, `read_prm_spec`;
  Ponder's own training writes it) and any field can be overridden (the command line does). A policy
  without the file gets defaults that suit chat models. A PRM without it is read by the format its
  architecture names (`Qwen2ForProcessRewardModel`: qwen) or the one it is told (`--prm-format`), with
  that format's model-card defaults (its tag and verdict tokens, its system prompt).
- `prm_tag_id` and `verdict_tokens` resolve a PRM spec against the PRM's tokenizer, refusing a token
  its vocabulary lacks. Where a step ends is `engines.steps`'.

Nothing here imports another Ponder package: every layer above reads the spec, none defines it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

SPEC_FILE = "ponder_spec.json"
PromptFormat = Literal["chat_template", "plain"]
PRMFormat = Literal["ponder", "qwen", "math-shepherd"]
PROMPT_FORMATS: tuple[str, ...] = ("chat_template", "plain")
PRM_FORMATS: tuple[str, ...] = ("ponder", "qwen", "math-shepherd")
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
# What each public format's model card fixes; a spec file or the command line may still override them.
FORMAT_DEFAULTS: dict[str, dict[str, Any]] = {
    "ponder": {},
    "qwen": {"step_tag": "<extra_0>", "system_prompt": QWEN_PRM_SYSTEM},
    "math-shepherd": {"step_tag": "ки", "good_token": "+", "bad_token": "-"},
}
# Architectures that name their format: a PRM directory without a spec file is read by it.
ARCHITECTURE_FORMATS = {"Qwen2ForProcessRewardModel": "qwen"}


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
    """How a PRM reads a solution and where it gives its verdicts (`verifiers.prm_format` renders it).

    - `ponder`: a causal LM reading the policy's own token ids (prompt, then each step followed by the
      `step_tag` token); P(good) = softmax over the logits of `good_token` and `bad_token` at each tag.
      It shares the policy's vocabulary, so its inputs extend the policy's prefixes token for token.
    - `qwen` (Qwen2.5-Math-PRM, `Qwen2ForProcessRewardModel`): its chat template with `system_prompt`,
      the question as the user turn, the steps joined by `step_tag` (`<extra_0>`) with one after the
      last as the assistant turn; P(good) = the 2-class head's probability of class 1 at each tag.
    - `math-shepherd`: the question, a space, then the steps each followed by " " + `step_tag` (`ки`),
      one per line; P(good) = softmax over the logits of `good_token` (`+`) and `bad_token` (`-`).
    """

    format: PRMFormat = "ponder"
    step_tag: str | None = None
    good_token: str | None = None
    bad_token: str | None = None
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.format not in PRM_FORMATS:
            raise SpecError(f"unknown PRM format {self.format!r}; valid: {', '.join(PRM_FORMATS)}")
        if not self.step_tag:
            raise SpecError(f"a {self.format} PRM needs its step tag")
        if self.format != "qwen":
            tokens = (self.step_tag, self.good_token, self.bad_token)
            if not all(tokens) or len(set(tokens)) < 3:
                raise SpecError(
                    f"a {self.format} PRM's step tag and two verdict tokens must be three different tokens"
                )

    @classmethod
    def of_format(cls, format: str, **fields: Any) -> PRMSpec:
        """A spec of `format`, its model card's defaults filled in where `fields` gives none."""
        if format not in FORMAT_DEFAULTS:
            raise SpecError(f"unknown PRM format {format!r}; valid: {', '.join(PRM_FORMATS)}")
        chosen = {**FORMAT_DEFAULTS[format], **{k: v for k, v in fields.items() if v is not None}}
        return cls(format=format, **chosen)  # type: ignore[arg-type]


def write_spec(directory: Path, spec: PolicySpec | PRMSpec) -> None:
    """Record a checkpoint's spec beside its weights (Ponder's training does this for what it trains)."""
    (Path(directory) / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n")


def read_policy_spec(directory: str | Path, **overrides: Any) -> PolicySpec:
    """The policy's spec: its file's fields (defaults where it has none), then the non-None overrides."""
    return PolicySpec(**recorded_fields(PolicySpec, directory, overrides))


def read_prm_spec(directory: str | Path, **overrides: Any) -> PRMSpec:
    """The PRM's spec: its file's fields, else the format its architecture names, then the non-None
    overrides, with the format's model-card defaults where neither gives a field."""
    chosen = recorded_fields(PRMSpec, directory, overrides)
    format = chosen.pop("format", None) or architecture_format(Path(directory))
    if format is None:
        raise SpecError(
            f"{directory}: no {SPEC_FILE} and no known PRM architecture; name its format "
            f"({', '.join(PRM_FORMATS)}) with --prm-format, and its tokens where the format has no default"
        )
    return PRMSpec.of_format(format, **chosen)


def recorded_fields(kind: type[Any], directory: str | Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """A spec's fields from its checkpoint's file, with the non-None overrides on top."""
    path = Path(directory) / SPEC_FILE
    recorded: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(recorded) - names) + sorted(set(overrides) - names)
    if unknown:
        raise SpecError(f"{path}: unknown {kind.__name__} fields {unknown}; valid: {sorted(names)}")
    return {**recorded, **{k: v for k, v in overrides.items() if v is not None}}


def architecture_format(directory: Path) -> str | None:
    config = directory / "config.json"
    if not config.exists():
        return None
    architectures = json.loads(config.read_text()).get("architectures") or []
    return next((ARCHITECTURE_FORMATS[a] for a in architectures if a in ARCHITECTURE_FORMATS), None)


# --- the spec against a tokenizer ----------------------------------------------------------------------
def prm_tag_id(tokenizer: Any, spec: PRMSpec) -> int:
    """The id the PRM's inputs carry after each step. Math-Shepherd writes " ки" after a step, so its id is
    the last one of that text as it is tokenized there (the model card's `encode("ки")[-1]` for its
    sentencepiece vocabulary); the other formats' tags are tokens of their own."""
    assert spec.step_tag is not None  # PRMSpec refuses a spec without one
    if spec.format != "math-shepherd":
        return token_id(tokenizer, spec.step_tag, "step tag")
    ids = tokenizer.encode(f"x {spec.step_tag}", add_special_tokens=False)
    if not ids or tokenizer.decode(ids[-1:]).strip() != spec.step_tag:
        raise SpecError(
            f"the PRM's step tag {spec.step_tag!r} is not one token of its tokenizer after a space"
        )
    return int(ids[-1])


def verdict_tokens(tokenizer: Any, spec: PRMSpec) -> tuple[str, str]:
    """The vocabulary tokens of the good and the bad verdict. Ours are tokens of their own; Math-Shepherd's
    are the two tokens of `encode("+ -")` without BOS, as its model card takes them (`▁+`, `▁-` in a
    sentencepiece vocabulary, not the bare characters)."""
    assert spec.good_token is not None and spec.bad_token is not None
    if spec.format != "math-shepherd":
        token_id(tokenizer, spec.good_token, "good verdict token")
        token_id(tokenizer, spec.bad_token, "bad verdict token")
        return spec.good_token, spec.bad_token
    ids = tokenizer.encode(f"{spec.good_token} {spec.bad_token}", add_special_tokens=False)
    if len(ids) != 2:
        raise SpecError(
            f"the PRM's verdicts {spec.good_token!r} and {spec.bad_token!r} are {len(ids)} tokens of its "
            "tokenizer, not one each"
        )
    good, bad = tokenizer.convert_ids_to_tokens(ids)
    return str(good), str(bad)


def token_id(tokenizer: Any, token: str, role: str) -> int:
    """The id of a token the PRM spec names, refused at start-up when the vocabulary lacks it."""
    found = tokenizer.convert_tokens_to_ids(token)
    if found is None or found == tokenizer.unk_token_id:
        raise SpecError(f"the PRM's {role} {token!r} is not a token of its tokenizer")
    return int(found)
