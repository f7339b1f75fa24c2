"""Task-set files, the shipped eval sets, the math loader, math answer checking and outcome grading."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tasks.countdown import Problem, SolutionCounter
from tasks.datasets import (
    Task,
    countdown_problem,
    countdown_task,
    last_boxed,
    load_math_jsonl,
    load_task_file,
    math_reference_answer,
    read_tasks,
    task_file_format,
    write_tasks,
)
from tasks.sets import (
    DATA_DIR,
    EVAL_TIERS,
    SET_SIZE,
    eval_set_path,
    load_dev_set,
    load_eval_set,
    split_problems,
)
from tasks.split import split_of_key
from verifiers.math import check_math_answer, extract_final_answer
from verifiers.outcome import final_answer, grade

MATH_EXAMPLE = DATA_DIR / "math-example.jsonl"
COUNTDOWN = countdown_task(Problem((3, 7, 9, 13), 16), "countdown-4-test")
MATH = Task("m-1", "What is 1/2 + 1/4?", "\\frac{3}{4}", None, "math")


# --- the JSONL format ---------------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path: Path) -> None:
    tasks = [
        COUNTDOWN,
        MATH,
        Task("u", "Ünïcödé ∑ prompt\nwith two lines", "42", 3, "math"),
    ]
    path = tmp_path / "sub" / "tasks.jsonl"
    write_tasks(path, tasks)
    assert read_tasks(path) == tasks
    assert read_tasks(str(path)) == tasks
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3


def test_read_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    write_tasks(path, [MATH])
    path.write_text("\n" + path.read_text(encoding="utf-8") + "\n  \n", encoding="utf-8")
    assert read_tasks(path) == [MATH]


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ("{not json", "line 3"),
        ('{"id": "x", "prompt": "p", "answer": "1", "tier": null}', "missing key(s): kind"),
        (
            '{"id": "x", "prompt": "p", "answer": 1, "tier": null, "kind": "math"}',
            "'answer' must be a string",
        ),
        ('{"id": "x", "prompt": "p", "answer": "1", "tier": "3", "kind": "math"}', "'tier' must be"),
        ('{"id": "x", "prompt": "p", "answer": "1", "tier": null, "kind": "chess"}', "'kind' must be"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, bad_line: str, fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    write_tasks(path, [MATH, COUNTDOWN])
    path.write_text(path.read_text(encoding="utf-8") + bad_line + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as error:
        read_tasks(path)
    assert str(path) in str(error.value)
    assert "line 3" in str(error.value)
    assert fragment in str(error.value)


def test_countdown_task_round_trip() -> None:
    problem = Problem((3, 7, 9, 13), 16)
    task = countdown_task(problem, "t")
    assert (task.prompt, task.answer, task.tier, task.kind) == ("3 7 9 13 -> 16\n", "16", 4, "countdown")
    assert countdown_problem(task) == problem


@pytest.mark.parametrize(
    "task",
    [
        Task("a", "not a prompt", "16", 4, "countdown"),
        Task("b", "3 7 9 13 -> 16\n", "17", 4, "countdown"),
        Task("c", "3 7 9 13 -> 16\n", "16", 4, "math"),
    ],
)
def test_countdown_problem_rejects_bad_tasks(task: Task) -> None:
    with pytest.raises(ValueError, match=task.id):
        countdown_problem(task)


# --- the shipped eval sets ----------------------------------------------------------------------------


@pytest.mark.parametrize("tier", EVAL_TIERS)
@pytest.mark.parametrize("split", ["eval", "dev"])
def test_shipped_eval_and_dev_sets(tier: int, split: str) -> None:
    tasks = load_eval_set(tier) if split == "eval" else load_dev_set(tier)
    name = f"countdown-{tier}" if split == "eval" else f"countdown-{tier}-dev"
    assert len(tasks) == SET_SIZE
    assert [task.id for task in tasks] == [f"{name}-{index:04d}" for index in range(SET_SIZE)]
    problems = [countdown_problem(task) for task in tasks]
    assert len({p.key for p in problems}) == SET_SIZE  # distinct by meaning, not only by string
    assert problems == split_problems(split, tier)  # type: ignore[arg-type]
    assert all(split_of_key(p.key) == split for p in problems)
    assert all(task.tier == tier and task.kind == "countdown" for task in tasks)
    counters: dict[int, SolutionCounter] = {}
    for problem in problems:
        counter = counters.setdefault(problem.target, SolutionCounter(problem.target))
        assert counter.count(problem.numbers) > 0, problem


def test_eval_and_dev_sets_share_no_problem_and_limit_works() -> None:
    evals = {countdown_problem(t).key for tier in EVAL_TIERS for t in load_eval_set(tier)}
    devs = {countdown_problem(t).key for tier in EVAL_TIERS for t in load_dev_set(tier)}
    assert len(evals) == len(devs) == SET_SIZE * len(EVAL_TIERS) and not evals & devs
    assert eval_set_path(4).is_file() and load_eval_set(4, limit=7) == load_eval_set(4)[:7]


# --- math loading -------------------------------------------------------------------------------------


def test_math_example_file() -> None:
    tasks = load_math_jsonl(MATH_EXAMPLE)
    assert len(tasks) >= 5
    assert all(task.kind == "math" and task.prompt for task in tasks)
    by_id = {task.id: task for task in tasks}
    assert by_id["math-example-0001"].answer == "27"
    assert by_id["math-example-0001"].tier is None
    assert by_id["math-example-0004"].answer == "1/2"
    assert by_id["example/sum-of-fractions"].answer == "\\frac{5}{6}"
    assert by_id["example/sum-of-fractions"].tier == 1
    nested = by_id["math-example-0006"]
    assert nested.answer == "\\frac{\\sqrt{3}}{2}"  # nested braces inside \boxed{}
    assert nested.tier == 2


def test_math_loader_variants(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [
        {"question": "q1", "answer": "work\n#### 1,000"},
        {"problem": "q2", "solution": "so $\\boxed{x^{2}}$ and not \\boxed{3}, then $\\boxed{\\{1,2\\}}$"},
        {"problem": "q3", "answer": "\\dfrac{1}{3}", "solution": "... \\boxed{ignored}", "level": "Level 4"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    tasks = load_math_jsonl(path)
    assert [task.answer for task in tasks] == ["1,000", "\\{1,2\\}", "\\dfrac{1}{3}"]
    assert [task.tier for task in tasks] == [None, None, 4]
    assert [task.id for task in tasks] == ["mixed-0001", "mixed-0002", "mixed-0003"]


def test_math_loader_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        load_math_jsonl(path)


def test_a_task_file_is_read_by_the_format_of_its_first_line(tmp_path: Path) -> None:
    assert task_file_format(MATH_EXAMPLE) == "math"
    assert load_task_file(MATH_EXAMPLE) == load_math_jsonl(MATH_EXAMPLE)
    own = tmp_path / "own.jsonl"
    write_tasks(own, [MATH, COUNTDOWN])
    own.write_text("\n" + own.read_text(encoding="utf-8"), encoding="utf-8")  # blank lines are skipped
    assert task_file_format(own) == "tasks"
    assert load_task_file(own) == [MATH, COUNTDOWN]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "empty"),
        ("not json\n", "first line"),
        ('{"text": "q", "label": "1"}\n', "found 'text', 'label'"),
        ("[1, 2]\n", "found list"),
    ],
)
def test_a_file_in_neither_format_is_refused_by_name(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"odd\.jsonl") as error:
        load_task_file(path)
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    ("text", "boxed"),
    [
        ("\\boxed{1}", "1"),
        ("a \\boxed{1} b \\boxed{\\frac{a}{b^{2}}} c", "\\frac{a}{b^{2}}"),
        ("\\boxed{{2}}", "{2}"),
        ("\\boxed{7} then \\boxed{unclosed", "7"),
        ("no box", None),
        ("\\boxed{", None),
    ],
)
def test_last_boxed(text: str, boxed: str | None) -> None:
    assert last_boxed(text) == boxed


def test_math_reference_answer() -> None:
    assert math_reference_answer("a\n#### 72 ") == "72"
    assert math_reference_answer("so \\boxed{\\sqrt{2}}.") == "\\sqrt{2}"
    assert math_reference_answer(" 5 ") == "5"


# --- math answer checking -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "completion"),
    [
        ("1/2", "0.5"),
        ("0.5", "1/2"),
        ("\\frac{1}{2}", "The answer is $\\boxed{0.5}$."),
        ("1/2", "so the result is $\\frac{1}{2}$"),
        ("72", "She has 72 apples.\n#### 72"),
        ("1000", "The total is \\boxed{1,000}"),
        ("\\frac{\\sqrt{3}}{2}", "Hence $\\boxed{\\frac{\\sqrt 3}{2}}$"),
        ("3", "$\\boxed{\\frac{6}{2}}$"),
    ],
)
def test_check_math_answer_equivalent(reference: str, completion: str) -> None:
    assert check_math_answer(reference, completion)


@pytest.mark.parametrize(
    ("reference", "completion"),
    [
        ("1/2", "0.6"),
        ("72", "#### 73"),
        ("\\frac{5}{6}", "\\boxed{\\frac{6}{5}}"),
        ("27", ""),
        ("27", "I don't know."),
        ("", "27"),
        ("27", "\\boxed{"),
        ("27", "\x00\xff" * 50),
    ],
)
def test_check_math_answer_wrong(reference: str, completion: str) -> None:
    assert not check_math_answer(reference, completion)


def test_check_math_answer_in_a_thread() -> None:
    results: list[bool] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(check_math_answer("1/2", "\\boxed{0.5}"))
            results.append(check_math_answer("1/2", "\\boxed{0.25}"))
        except BaseException as error:  # pragma: no cover - the assertion below reports it
            errors.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=60)
    assert not errors
    assert results == [True, False]


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so \\boxed{\\frac{1}{2}}. Also 7.", "\\frac{1}{2}"),
        ("work 3 + 4 = 7\n#### 1,234\n", "1234"),
        ("#### $5$.", "5"),
        ("there are 3 cats and 12 dogs.", "12"),
        ("the loss was -4.5 points", "-4.5"),
        ("a total of 2,500,000 people", "2500000"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_final_answer(text: str, answer: str | None) -> None:
    assert extract_final_answer(text) == answer


# --- outcome grading ----------------------------------------------------------------------------------


def test_grade_countdown() -> None:
    correct = "13-9=4 [3 7 4]\n7-3=4 [4 4]\n4*4=16 [16]\n"
    assert grade(COUNTDOWN, correct)
    assert final_answer(COUNTDOWN, correct) == "16"
    wrong = "13-7=6 [3 9 6]\n9-3=6 [6 6]\n6*6=36 [36]\n"
    assert not grade(COUNTDOWN, wrong)
    assert final_answer(COUNTDOWN, wrong) == "36"
    assert not grade(COUNTDOWN, "garbage")
    assert final_answer(COUNTDOWN, "13-9=4 [3 7 4]\n") is None
    # a faked step still commits to its claimed number: voting does not check arithmetic
    faked = "13-9=4 [3 7 4]\n7-3=4 [4 4]\n4*4=17 [17]\n"
    assert not grade(COUNTDOWN, faked)
    assert final_answer(COUNTDOWN, faked) == "17"


def test_grade_math() -> None:
    assert grade(MATH, "1/2 + 1/4 = \\boxed{0.75}")
    assert not grade(MATH, "\\boxed{0.5}")
    assert final_answer(MATH, "1/2 + 1/4 = \\boxed{0.75}") == "0.75"


def test_grade_shipped_tasks() -> None:
    task = load_eval_set(3, limit=1)[0]
    assert not grade(task, "")
    math_task = load_math_jsonl(MATH_EXAMPLE)[0]
    assert grade(math_task, "12 + 3 * 5 = 27\n#### 27")
    assert not grade(math_task, "#### 26")


def test_grade_unknown_kind() -> None:
    task = Task("x", "p", "1", None, "chess")
    with pytest.raises(ValueError, match="unknown kind"):
        grade(task, "1")
    with pytest.raises(ValueError, match="unknown kind"):
        final_answer(task, "1")
