"""Step boundaries: where a policy's solution is cut into steps, as the text of its step delimiter says.

Contract: `StepBoundary(tokenizer, delimiter)` tells the engines how to stop a sample at the end of a step
(`stop_kwargs`, vLLM `SamplingParams` fields) and whether a finished sample stopped there
(`stopped_at_step`), and cuts a completion's token ids into steps (`split`): a step ends with the token
whose text completes the delimiter, so steps still travel as token ids and the prefix cache keeps
working.

Why text and not one token id: byte-level BPE tokenizers (Qwen2, Llama-3) merge a delimiter such as
"\n\n" with the punctuation before it (`.ĊĊ`, `:ĊĊ`), so no single id marks every boundary. Where the
delimiter is one token that no other token contains (our own character-level models), the boundary is
that id (`exact_id`): vLLM stops on it without detokenizing, and splitting is a scan for the id.
Elsewhere vLLM stops on the delimiter string (which needs detokenizing) and splitting decodes each
token once. Decoding token by token is exact for a delimiter of whole characters that a token boundary
never cuts inside; the delimiters that matter ("\n", "\n\n") are such.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engines.spec import SpecError


class StepBoundary:
    def __init__(self, tokenizer: Any, delimiter: str) -> None:
        ids = tokenizer.encode(delimiter, add_special_tokens=False)
        if tokenizer.decode(ids, skip_special_tokens=False) != delimiter:
            raise SpecError(f"this tokenizer cannot write the step delimiter {delimiter!r}")
        self.tokenizer = tokenizer
        self.delimiter = delimiter
        self.exact_id = exact_token_id(tokenizer, delimiter)

    def stop_kwargs(self) -> dict[str, Any]:
        """The `SamplingParams` (or OpenAI completion) fields that stop a sample after one step."""
        if self.exact_id is not None:
            return {"stop_token_ids": [self.exact_id]}
        return {"stop": [self.delimiter], "include_stop_str_in_output": True}

    @property
    def needs_text(self) -> bool:
        """vLLM must detokenize to see the boundary (stop strings are matched on text)."""
        return self.exact_id is None

    def stopped_at_step(self, stop_reason: int | str | None) -> bool:
        return stop_reason is not None and stop_reason in (self.exact_id, self.delimiter)

    def split(self, token_ids: Sequence[int]) -> list[tuple[int, ...]]:
        """Token ids cut after each boundary (a trailing unfinished step is kept)."""
        if self.exact_id is not None:
            return split_steps_ids(token_ids, self.exact_id)
        steps: list[tuple[int, ...]] = []
        current: list[int] = []
        text = ""
        for token in token_ids:
            current.append(token)
            text += self.tokenizer.decode([token], skip_special_tokens=False)
            if self.delimiter in text:
                steps.append(tuple(current))
                current, text = [], ""
        if current:
            steps.append(tuple(current))
        return steps


def exact_token_id(tokenizer: Any, delimiter: str) -> int | None:
    """The delimiter's id when it is one token and no other token's text contains it, else None."""
    ids = tokenizer.encode(delimiter, add_special_tokens=False)
    if len(ids) != 1:
        return None
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
    if any(delimiter in piece for i, piece in enumerate(pieces) if i != ids[0]):
        return None
    return int(ids[0])


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
