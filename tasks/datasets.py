"""The JSONL task-set format shared by evaluation, training and the server.

Contract:
- A task set is a JSONL file, one object per line with exactly these keys:
  `id` (str), `prompt` (str), `answer` (str: the reference answer, or the target for Countdown),
  `tier` (int or null) and `kind` ("countdown" or "math"). Blank lines are skipped.
- `read_tasks(path)` returns the tasks in file order and raises `ValueError` naming the file and the
  1-based line number on any malformed line; `write_tasks(path, tasks)` writes a file `read_tasks` reads
  back to the same list.
- `countdown_task` / `countdown_problem` convert between a Countdown `Problem` and its `Task`
  (`prompt` is `Problem.prompt()`, `answer` is the target); `countdown_problem` raises `ValueError`
  when the task is not a well-formed Countdown task.
- `load_math_jsonl(path)` reads GSM8K / MATH-style JSONL (`question` or `problem`; `answer` or
  `solution`) into `math` tasks: the reference answer is the text after the last `####` if there is one,
  else the last `\\boxed{...}` (nested braces allowed), else the whole answer field, stripped.
- `load_task_file(path)` reads either format, told apart by the first non-blank line: the task-set keys
  mean `read_tasks` ("tasks"), `question` / `problem` mean `load_math_jsonl` ("math"); `task_file_format`
  says which, and anything else is a `ValueError` naming the file and the keys it found.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from tasks.countdown import Problem, parse_prompt

T = TypeVar("T")

KINDS: Final = ("countdown", "math")
_KEYS: Final = ("id", "prompt", "answer", "tier", "kind")


@dataclass(frozen=True)
class Task:
    id: str
    prompt: str
    answer: str  # the reference answer (math) or the target (countdown), as text
    tier: int | None  # Countdown: how many numbers; MATH: the difficulty level; else None
    kind: str  # one of KINDS


def _task_from_json(record: Any) -> Task:
    """A Task from one decoded JSON line; ValueError (without location) when it is not one."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    missing = [key for key in _KEYS if key not in record]
    if missing:
        raise ValueError(f"missing key(s): {', '.join(missing)}")
    for key in ("id", "prompt", "answer", "kind"):
        if not isinstance(record[key], str):
            raise ValueError(f"{key!r} must be a string, got {type(record[key]).__name__}")
    tier = record["tier"]
    if tier is not None and (not isinstance(tier, int) or isinstance(tier, bool)):
        raise ValueError(f"'tier' must be an integer or null, got {tier!r}")
    if record["kind"] not in KINDS:
        raise ValueError(f"'kind' must be one of {', '.join(KINDS)}, got {record['kind']!r}")
    return Task(record["id"], record["prompt"], record["answer"], tier, record["kind"])


def read_jsonl(path: str | Path, convert: Callable[[int, dict[str, Any]], T]) -> list[T]:
    """`convert(line_number, object)` for every non-blank line of a JSONL file; any ValueError (bad JSON,
    not an object, or raised by `convert`) comes back naming the file and the line."""
    results: list[T] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)  # json.JSONDecodeError is a ValueError too
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
                results.append(convert(number, record))
            except ValueError as error:
                raise ValueError(f"{path}, line {number}: {error}") from error
    return results


def read_tasks(path: str | Path) -> list[Task]:
    """Every task in the JSONL file at `path`, in order."""
    return read_jsonl(path, lambda _, record: _task_from_json(record))


def write_tasks(path: str | Path, tasks: list[Task]) -> None:
    """Write `tasks` as JSONL to `path` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for task in tasks:
            handle.write(json.dumps(asdict(task), ensure_ascii=False) + "\n")


def countdown_task(problem: Problem, id: str) -> Task:
    return Task(
        id=id, prompt=problem.prompt(), answer=str(problem.target), tier=problem.tier, kind="countdown"
    )


def countdown_problem(task: Task) -> Problem:
    """The Countdown problem a task states; ValueError if it is not a consistent Countdown task."""
    if task.kind != "countdown":
        raise ValueError(f"task {task.id} is a {task.kind!r} task, not a countdown task")
    problem = parse_prompt(task.prompt)
    if problem is None:
        raise ValueError(f"task {task.id}: cannot parse a Countdown problem from {task.prompt!r}")
    if str(problem.target) != task.answer.strip():
        raise ValueError(f"task {task.id}: answer {task.answer!r} differs from target {problem.target}")
    return problem


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` in `text` (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, begin = 0, start + len("\\boxed{")
        for index in range(begin - 1, len(text)):
            if text[index] == "{":
                depth += 1
            elif text[index] == "}":
                depth -= 1
                if depth == 0:
                    return text[begin:index].strip()
        start = text.rfind("\\boxed{", 0, start)  # unbalanced: try the one before
    return None


def math_reference_answer(answer: str) -> str:
    """The final answer in a GSM8K answer (after `####`), a MATH solution (last box) or a bare answer."""
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip()
    boxed = last_boxed(answer)
    return boxed if boxed is not None else answer.strip()


def _level(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.startswith("Level ") and value[6:].strip().isdigit():
        return int(value[6:])  # the original MATH data set writes "Level 3"
    return None


def load_math_jsonl(path: str | Path) -> list[Task]:
    """GSM8K / MATH-500-style JSONL as `math` tasks (ids from `id` / `unique_id`, else `<stem>-<line>`)."""
    stem = Path(path).stem

    def math_task(number: int, record: dict[str, Any]) -> Task:
        question = record.get("question", record.get("problem"))
        answer = record.get("answer", record.get("solution"))
        if not isinstance(question, str) or not isinstance(answer, str):
            raise ValueError("needs string 'question' (or 'problem') and 'answer' (or 'solution')")
        task_id = record.get("id", record.get("unique_id"))
        return Task(
            id=str(task_id) if task_id is not None else f"{stem}-{number:04d}",
            prompt=question,
            answer=math_reference_answer(answer),
            tier=_level(record.get("level")),
            kind="math",
        )

    return read_jsonl(path, math_task)


TASK_FILE_FORMATS: Final = ("tasks", "math")


def task_file_format(path: str | Path) -> str:
    """The format of a JSONL task file, from its first non-blank line: "tasks" (this module's task-set
    format) or "math" (GSM8K / MATH style); ValueError naming the file when it is neither."""
    with open(path, encoding="utf-8") as handle:
        first = next((line for line in handle if line.strip()), None)
    if first is None:
        raise ValueError(f"{path}: no tasks (the file is empty)")
    try:
        record = json.loads(first)
    except ValueError as error:
        raise ValueError(f"{path}, first line: {error}") from error
    if isinstance(record, dict) and all(key in record for key in _KEYS):
        return "tasks"
    if isinstance(record, dict) and ("question" in record or "problem" in record):
        return "math"
    found = ", ".join(map(repr, record)) if isinstance(record, dict) else type(record).__name__
    raise ValueError(
        f"{path}: not a task file: its first line needs the keys {', '.join(_KEYS)} (a task set) or "
        f"'question' / 'problem' with 'answer' / 'solution' (GSM8K / MATH style); found {found}"
    )


def load_task_file(path: str | Path) -> list[Task]:
    """Every task of a task-set or GSM8K / MATH-style JSONL file, in file order."""
    return read_tasks(path) if task_file_format(path) == "tasks" else load_math_jsonl(path)
