"""How a PRM reads a candidate solution: its own input format, rendered from the policy's steps.

Contract: `prm_format(spec, tokenizer)` returns the `PRMFormat` the spec names (`engines.spec.PRMSpec`):
- `render(candidate)` gives the PRM's input ids, in the PRM's own format and with its own tokenizer,
  whatever the policy's template is: our `ponder` format extends the policy's token ids (it shares the
  policy's vocabulary, so the PRM's prefix cache sees the policy's prefixes token for token); `qwen` and
  `math-shepherd` render the question and the step texts exactly as their model cards do.
- Text the policy wrote that holds the PRM's step tag is neutralised first (the tag is removed), so a
  policy cannot forge step boundaries or verdicts.
- `tag_positions(ids, steps)` finds the step tags in a rendered input and raises `PRMInputError` unless
  there is exactly one per step: a score row that does not match the steps is an error, never a 0.
- `good_column` is the value of a pooled row that is P(good).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from engines.spec import PRMSpec, prm_tag_id, verdict_tokens
from verifiers.prm import Candidate, prm_input_ids


class PRMInputError(RuntimeError):
    """A rendered PRM input whose step tags do not match its candidate's steps."""


class PRMFormat(Protocol):
    spec: PRMSpec
    step_tag_id: int
    good_column: int  # in vLLM's pooled output, the value per position that is P(good)
    reads_policy_ids: bool  # inputs are the policy's own token ids (prefix caching carries over)

    def render(self, candidate: Candidate) -> list[int]: ...


def prm_format(spec: PRMSpec, tokenizer: Any) -> PRMFormat:
    formats: dict[str, Callable[[PRMSpec, Any], PRMFormat]] = {
        "ponder": PonderFormat,
        "qwen": QwenFormat,
        "math-shepherd": MathShepherdFormat,
    }
    return formats[spec.format](spec, tokenizer)


class PonderFormat:
    """The policy's prompt ids, then each step's ids followed by the tag id."""

    good_column = 0
    reads_policy_ids = True

    def __init__(self, spec: PRMSpec, tokenizer: Any) -> None:
        self.spec = spec
        self.step_tag_id = prm_tag_id(tokenizer, spec)
        verdict_tokens(tokenizer, spec)

    def render(self, candidate: Candidate) -> list[int]:
        tag = self.step_tag_id
        prompt = [t for t in candidate.prompt_ids if t != tag]
        return prm_input_ids(prompt, [[t for t in step if t != tag] for step in candidate.steps], tag)


class MathShepherdFormat:
    """`f"{question} {output}"`, the output's steps each followed by " ки", one per line (model card)."""

    good_column = 0
    reads_policy_ids = False

    def __init__(self, spec: PRMSpec, tokenizer: Any) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self.step_tag_id = prm_tag_id(tokenizer, spec)
        verdict_tokens(tokenizer, spec)

    def render(self, candidate: Candidate) -> list[int]:
        tag = str(self.spec.step_tag)
        steps = [f"{neutral(text, tag)} {tag}" for text in step_texts(candidate)]
        text = f"{neutral(candidate.question, tag)} " + "\n".join(steps)
        return list(self.tokenizer.encode(text))  # with the tokenizer's BOS, as the card encodes


class QwenFormat:
    """Qwen2.5-Math-PRM's chat: its system prompt, the question, then the steps joined by the tag with
    one after the last (model card); the tokenizer's chat template renders it."""

    good_column = 1
    reads_policy_ids = False

    def __init__(self, spec: PRMSpec, tokenizer: Any) -> None:
        self.spec = spec
        self.tokenizer = tokenizer
        self.step_tag_id = prm_tag_id(tokenizer, spec)

    def render(self, candidate: Candidate) -> list[int]:
        tag = str(self.spec.step_tag)
        answer = "".join(f"{neutral(text, tag)}{tag}" for text in step_texts(candidate))
        system = (
            []
            if self.spec.system_prompt is None
            else [{"role": "system", "content": self.spec.system_prompt}]
        )
        messages = [
            *system,
            {"role": "user", "content": neutral(candidate.question, tag)},
            {"role": "assistant", "content": answer},
        ]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        return list(self.tokenizer.encode(text))


def step_texts(candidate: Candidate) -> tuple[str, ...]:
    if len(candidate.step_texts) != len(candidate.steps):
        raise PRMInputError(
            f"a candidate with {len(candidate.steps)} steps carries {len(candidate.step_texts)} step texts; "
            "this PRM reads text"
        )
    return candidate.step_texts


def neutral(text: str, tag: str) -> str:
    """The text without the PRM's tag (so the policy cannot forge a step boundary), stripped of the
    whitespace and delimiter around it (the format puts its own separators)."""
    return text.replace(tag, "").strip()


def tag_positions(format: PRMFormat, ids: Sequence[int], steps: int) -> list[int]:
    positions = [i for i, token in enumerate(ids) if token == format.step_tag_id]
    if len(positions) != steps:
        raise PRMInputError(
            f"the {format.spec.format} PRM input holds {len(positions)} step tags for {steps} steps"
        )
    return positions
