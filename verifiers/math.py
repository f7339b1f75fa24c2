"""Mathematical answer checking (GSM8K, MATH) through the `math-verify` package.

Contract:
- `check_math_answer(reference, completion)` is True when the final answer of `completion` is
  mathematically equivalent to `reference` ("1/2", "0.5" and "\\frac{1}{2}" all match). It never raises:
  any failure to parse or compare is False.
- It is safe in any thread. math-verify bounds parsing and comparison with `signal.alarm`, which only
  works in the main thread; there it runs with a `TIMEOUT_S` limit, elsewhere with the limit switched
  off (math-verify then logs one warning per process), so callers running it in worker threads should
  bound the length of the completions they pass.
- `extract_final_answer(text)` is the answer a completion commits to, as a short normalised string for
  majority voting: the last `\\boxed{...}`, else the text after the last `####`, else the last number;
  None when there is none.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Final

from math_verify import parse, verify
from math_verify.errors import TimeoutException

from tasks.datasets import last_boxed

TIMEOUT_S: Final = 5  # per parse / per comparison, main thread only

_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _timeout() -> int:
    """The math-verify timeout for this thread: 0 (off) wherever signal.alarm cannot be used."""
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else 0


def _parse_reference(reference: str, timeout: int) -> list[Any]:
    """A reference answer is bare (e.g. `\\sqrt{2}`): box it so math-verify reads it as LaTeX."""
    text = reference.strip()
    if "\\boxed" not in text and "$" not in text:
        boxed: list[Any] = parse(f"\\boxed{{{text}}}", parsing_timeout=timeout)
        if boxed:
            return boxed
    result: list[Any] = parse(text, parsing_timeout=timeout)
    return result


def check_math_answer(reference: str, completion: str) -> bool:
    """Does the completion's final answer equal the reference answer? False on any error."""
    try:
        if not reference.strip() or not completion.strip():
            return False
        timeout = _timeout()
        gold = _parse_reference(reference, timeout)
        predicted = parse(completion, parsing_timeout=timeout)
        if not gold or not predicted:
            return False
        return bool(verify(gold, predicted, timeout_seconds=timeout))
    except (Exception, TimeoutException):  # TimeoutException is a BaseException
        return False


def _normalise(answer: str) -> str:
    answer = answer.strip().removesuffix(".").strip().strip("$").strip()
    return _THOUSANDS.sub("", answer)


def extract_final_answer(text: str) -> str | None:
    """The completion's final answer: last \\boxed{}, else after the last ####, else the last number."""
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return _normalise(boxed)
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        if tail:
            return _normalise(tail.splitlines()[0])
    numbers = _NUMBER.findall(text)
    return _normalise(numbers[-1]) if numbers else None
