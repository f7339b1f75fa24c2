"""`ponder eval search` on a user's own task file: in-process on the fake engines, against a real HTTP
server on loopback (the fake engines behind `create_app`), the HTTP solver's requests and errors, and one
small sweep on the real vLLM engines."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fake_engine import FakeEngine
from fake_prm import FakePRM

from engines.base import InvalidPrompt
from evaluation.load import free_port
from evaluation.report import read_points, read_problem_results
from evaluation.search import evaluate
from evaluation.solver import Attempt, SearchFailed
from evaluation.solver_http import HttpSolver, ServerAddress, ServerError
from evaluation.solver_local import InProcessSolver
from evaluation.sweep import sweep
from evaluation.sweep_records import SWEEP_ENTRIES, ProblemResult
from evaluation.task_source import file_sha256, file_source, source_of
from ponder.cli import main
from searchers.auto import AutoTable
from server.engines import Engines
from server.main import create_app
from server.settings import ServerSettings
from tasks.datasets import Task, write_tasks
from tasks.sets import DATA_DIR, load_eval_set

MATH_EXAMPLE = DATA_DIR / "math-example.jsonl"
LABELS = ["majority_vote", "best_of_n_prm"]


def fake_engines() -> Engines:
    return Engines(FakeEngine(), FakePRM())


@contextmanager
def served(model_name: str = "ponder-default", api_key: str | None = None) -> Iterator[str]:
    """A Ponder server on the fake engines, on uvicorn on a free loopback port in a thread: its URL."""
    settings = ServerSettings(models=Path("/nonexistent"), model_name=model_name, api_key=api_key)
    app = create_app(settings, FakeEngine(), FakePRM())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def check_reports(out: Path, labels: list[str], multiples: list[float], n: int) -> dict[str, Any]:
    """The reports at `out` are complete and agree with each other; returns the meta."""
    meta: dict[str, Any] = json.loads(out.with_name(out.stem + "-meta.json").read_text())
    points = read_points(out)
    expected = [("greedy", 1.0)] + [(label, m) for label in [*labels, "auto"] for m in multiples]
    assert [(p.strategy, p.budget_multiple) for p in points] == expected
    results = [r for r, _ in read_problem_results(out.with_name(out.stem + "-problems.jsonl"))]
    assert len(results) == len(points) * n
    for point in points:
        mine = [r for r in results if (r.label, r.multiple) == (point.strategy, point.budget_multiple)]
        assert point.n_problems == len(mine) == n
        assert point.accuracy == round(sum(r.correct for r in mine) / n, 4)
        assert point.oracle_accuracy == round(sum(r.oracle for r in mine) / n, 4)
        assert point.ci_low <= point.accuracy <= point.ci_high
    assert meta["n_problems"] == n
    markdown = out.with_suffix(".md").read_text()
    assert markdown.count("\n| ") == len(points) + 1  # the header row and one row per point
    assert out.with_suffix(".png").stat().st_size > 1000
    assert not out.with_name(out.stem + "-progress.jsonl").exists()
    return meta


# --- the task source ----------------------------------------------------------------------------------


def test_a_task_file_source_names_the_file_its_hash_and_split(tmp_path: Path) -> None:
    source = file_source(MATH_EXAMPLE, 4, "dev")
    assert [t.kind for t in source.tasks] == ["math"] * 4
    digest = file_sha256(MATH_EXAMPLE)
    assert source.meta == {
        "task_file": str(MATH_EXAMPLE),
        "task_format": "math",
        "task_sha256": digest,
        "split": "dev",
    }
    assert source.described == f"4 problems of math-example.jsonl (sha256 {digest[:12]}, split dev)"
    assert source_of({**source.meta, "n_problems": 4}, 4) == source
    assert source_of({"tier": 3}, 2).tasks == load_eval_set(3, limit=2)
    changed = tmp_path / "changed.jsonl"
    changed.write_text(MATH_EXAMPLE.read_text())
    meta = file_source(changed, None).meta
    changed.write_text(MATH_EXAMPLE.read_text() + MATH_EXAMPLE.read_text())
    with pytest.raises(ValueError, match="has changed"):
        source_of(meta, None)


# --- in-process, on the fake engines ------------------------------------------------------------------


async def test_a_math_file_is_evaluated_in_process_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results" / "search.json"
    table_out = tmp_path / "models" / "auto_table.json"
    source = file_source(MATH_EXAMPLE, 5, "dev")
    where = {"models": "fake"}
    report = await evaluate(
        InProcessSolver(fake_engines()), where, source, out, LABELS, [1.0, 2.0], 3, table_out
    )
    meta = check_reports(out, LABELS, [1.0, 2.0], 5)
    assert meta["task_file"] == str(MATH_EXAMPLE) and meta["split"] == "dev"
    assert meta["task_sha256"] == file_sha256(MATH_EXAMPLE) and meta["prompt_style"] == "chat"
    assert meta["models"] == "fake" and meta["engine_generated_tokens_per_s"] > 0
    assert report["table"] == str(table_out)
    header = out.with_suffix(".md").read_text().splitlines()[0]
    assert header == f"# Compute versus accuracy: {source.described.split(' of ', 1)[1]}, 5 problems"
    table = AutoTable.load(table_out)
    assert table.budgets == [1.0, 2.0] and set(table.choices) == {"0", "1", "2"}
    assert json.loads(table_out.read_text())["fitted_on"] == source.described
    # the fake policy cannot read math: it ends at once, and math-verify grades the empty answers wrong
    assert all(p.accuracy == 0.0 for p in read_points(out))


async def test_a_math_problem_is_sent_as_a_chat_and_countdown_as_a_completion_prompt() -> None:
    engines = fake_engines()
    solver = InProcessSolver(engines)
    math, countdown = file_source(MATH_EXAMPLE, 1).tasks[0], load_eval_set(4, limit=1)[0]
    chat = engines.policy.render_chat([{"role": "user", "content": math.prompt}])
    assert solver.prompt_ids(math) == tuple(chat)
    assert solver.prompt_ids(countdown) == tuple(engines.policy.encode(countdown.prompt))
    forced = InProcessSolver(engines, style="completion")
    assert forced.prompt_ids(math) == tuple(engines.policy.encode(math.prompt))


class RefusingEngine(FakeEngine):
    async def rollout(self, prefixes: Any, n: int, sampling: Any, request_id: str) -> Any:
        raise InvalidPrompt("prefix 0 has 600 tokens; the model's context is 513")


async def test_a_prompt_the_engines_refuse_fails_the_search_by_name() -> None:
    solver = InProcessSolver(Engines(RefusingEngine(), FakePRM()))
    with pytest.raises(SearchFailed, match="eval-greedy-q-1: prefix 0 has 600 tokens"):
        await solver.greedy([MATH_TASK])


# --- the HTTP solver, against a mock transport --------------------------------------------------------

ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "so \\boxed{27}"}}],
    "usage": {
        "prompt_tokens": 30,
        "completion_tokens": 90,
        "prompt_tokens_details": {"cached_tokens": 12},
        "scored_tokens": 140,
    },
    "search": {
        "strategy": "best_of_n",
        "stop_reason": "budget",
        "budget": 250,
        "candidates": 2,
        "score": 0.7,
        "candidate_texts": [{"text": "\\boxed{26}"}, {"text": "so \\boxed{27}"}],
    },
}
MATH_TASK = Task("q-1", "Mia has 12 apples ...", "27", None, "math")
ATTEMPT = Attempt("eval-best_of_n_prm-2.0-q-1", "best_of_n", {"select": "prm"}, 250, 0.8, 3)


async def test_the_http_solver_sends_the_search_and_reads_usage_and_candidates() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    address = ServerAddress("http://server:8000/", "qwen2.5-math:1.5b", api_key="secret")
    async with HttpSolver.connect(address, 2, transport=httpx.MockTransport(handler)) as solver:
        solved = await solver.solve(MATH_TASK, ATTEMPT)
        assert solver.with_auto_table(AutoTable([], [])) is None
        assert await solver.engine_tokens_per_s() is None
    request = seen[0]
    assert str(request.url) == "http://server:8000/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer secret"
    assert request.headers["x-request-id"] == ATTEMPT.request_id
    assert json.loads(request.content) == {
        "model": "qwen2.5-math:1.5b",  # passed through, ':' and all
        "temperature": 0.8,
        "seed": 3,
        "search": {
            "strategy": "best_of_n",
            "budget": 250,
            "knobs": {"select": "prm"},
            "return_candidates": True,
        },
        "messages": [{"role": "user", "content": MATH_TASK.prompt}],
    }
    assert solved.text == "so \\boxed{27}" and solved.candidate_texts == ("\\boxed{26}", "so \\boxed{27}")
    assert (solved.generated, solved.prompt, solved.cached, solved.scored) == (90, 30, 12, 140)
    assert solved.stop_reason == "budget"


@pytest.mark.parametrize(
    ("response", "fragments"),
    [
        (
            httpx.Response(
                400,
                json={
                    "error": {
                        "message": "budget must be between 1 and 100 tokens, got 250",
                        "type": "invalid_request_error",
                        "param": "search.budget",
                        "code": "invalid_search",
                    }
                },
            ),
            ["answered 400", ATTEMPT.request_id, "budget must be between 1 and 100", "code invalid_search"],
        ),
        (httpx.Response(502, text="<html>bad gateway</html>"), ["answered 502", "bad gateway"]),
        (httpx.Response(200, json={"choices": []}), ["without Ponder's `search` report"]),
    ],
)
async def test_a_server_error_is_raised_with_its_message(
    response: httpx.Response, fragments: list[str]
) -> None:
    address = ServerAddress("http://server:8000", "m")
    async with HttpSolver.connect(address, 1, transport=httpx.MockTransport(lambda r: response)) as solver:
        with pytest.raises(ServerError) as error:
            await solver.solve(MATH_TASK, ATTEMPT)
    for fragment in fragments:
        assert fragment in str(error.value)


async def test_a_full_queue_is_retried_and_an_unreachable_server_named() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"message": "busy"}})])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, httpx.Response(200, json=ANSWER))

    address = ServerAddress("http://server:8000", "m")
    async with HttpSolver.connect(address, 1, transport=httpx.MockTransport(handler)) as solver:
        assert (await solver.solve(MATH_TASK, ATTEMPT)).text == "so \\boxed{27}"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with HttpSolver.connect(address, 1, transport=httpx.MockTransport(refuse)) as solver:
        with pytest.raises(ServerError, match="cannot reach http://server:8000/v1/chat/completions"):
            await solver.solve(MATH_TASK, ATTEMPT)


# --- against a running server -------------------------------------------------------------------------


def test_the_cli_evaluates_a_task_file_on_a_running_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PONDER_API_KEY", raising=False)
    tasks = tmp_path / "dev.jsonl"
    tasks.write_text(MATH_EXAMPLE.read_text())
    out = tmp_path / "search.json"
    table_out = tmp_path / "auto_table.json"
    argv = ["eval", "search", "--tasks", str(tasks), "--problems", "4", "--split", "dev", "--out", str(out)]
    argv += ["--strategies", ",".join(LABELS), "--multiples", "1,2", "--concurrency", "3"]
    with served(api_key="secret") as url:
        argv += ["--server", url, "--model", "ponder-default"]
        assert main([*argv, "--api-key", "secret", "--table-out", str(table_out)]) == 0
        meta = check_reports(out, LABELS, [1.0, 2.0], 4)
        assert meta["server"] == url and meta["model"] == "ponder-default" and "models" not in meta
        assert meta["task_file"] == str(tasks) and meta["task_sha256"] == file_sha256(tasks)
        assert meta["split"] == "dev" and meta["engine_generated_tokens_per_s"] is None
        assert AutoTable.load(table_out).budgets == [1.0, 2.0]
        markdown = out.with_suffix(".md").read_text()
        assert markdown.startswith(f"# Compute versus accuracy: dev.jsonl (sha256 {meta['task_sha256'][:12]}")
        assert f"Searched on the server {url}" in markdown and "not measured" in markdown
        assert all(p.engine_efficiency is None for p in read_points(out))

        before = read_points(out)
        assert main([*argv, "--api-key", "secret", "--auto-only"]) == 0  # auto again, from the same files
        assert (
            read_points(out)[:-2] == before[:-2]
            and [p.strategy for p in read_points(out)[-2:]] == ["auto"] * 2
        )
        assert json.loads(out.with_name("search-meta.json").read_text()) == meta

        table_out.unlink()
        assert main([*argv, "--api-key", "secret"]) == 0
        assert not table_out.exists()  # with --server, auto's table is written only where --table-out says
        assert "give --table-out" in capsys.readouterr().err

        assert main(argv) == 1  # no key: the server's 401, in its own words
        assert "answered 401" in capsys.readouterr().err


def test_the_server_and_in_process_paths_search_alike(tmp_path: Path) -> None:
    """The same Countdown tasks, in the project's own format, through both solvers on the same fakes: every
    searched point (auto is cross-fitted in-process and served on a server; greedy is auto's probe on a
    server) and its per-problem results agree."""
    import asyncio

    path = tmp_path / "countdown.jsonl"
    write_tasks(path, load_eval_set(4, limit=6))
    tasks = file_source(path, None).tasks
    entries = [e for e in SWEEP_ENTRIES if e.label in ("best_of_n_prm", "beam")]

    async def run_on(solver: Any) -> list[ProblemResult]:
        run = await sweep(solver, tasks, entries, [1.0, 4.0], concurrency=3, temperature=0.8)
        assert run.auto_cross_fitted == isinstance(solver, InProcessSolver)
        # the prefix cache's hits depend on which request came first; auto differs by design, and so does
        # greedy, which a server answers through auto's greedy probe (another seed on the fake policy)
        searched = (r for r in run.results if r.label not in ("auto", "greedy"))
        return sorted((replace(r, cached=0) for r in searched), key=str)

    local = asyncio.run(run_on(InProcessSolver(fake_engines())))
    with served() as url:

        async def remote() -> list[ProblemResult]:
            async with HttpSolver.connect(ServerAddress(url, "ponder-default"), 3) as solver:
                return await run_on(solver)

        over_http = asyncio.run(remote())
    assert over_http == local
    # the fake policy plays Countdown (random legal moves), so these searches did real work
    assert all(r.generated > 5 for r in local) and any(r.scored > 0 for r in local)


# --- the real engines ---------------------------------------------------------------------------------


@pytest.mark.engine
async def test_a_math_file_sweeps_on_the_real_engines(
    policy_engine: Any, prm_engine: Any, tmp_path: Path
) -> None:
    out = tmp_path / "search.json"
    table_out = tmp_path / "auto_table.json"
    source = file_source(MATH_EXAMPLE, 3, "example")
    solver = InProcessSolver(Engines(policy_engine, prm_engine))
    # majority vote reads no PRM: the Countdown-trained policy answers a math question until its 256-token
    # context is full, which no PRM-guided strategy can score (`solver_local` gives such a probe 0.0)
    await evaluate(solver, {"models": "default"}, source, out, ["majority_vote"], [1.0], 3, table_out)
    meta = check_reports(out, ["majority_vote"], [1.0], 3)
    assert meta["task_file"] == str(MATH_EXAMPLE) and meta["greedy_cost_units"] > 0
    assert AutoTable.load(table_out).budgets == [1.0]
