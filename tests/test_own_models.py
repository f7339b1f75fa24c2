"""Users' own models end to end: tiny random-weight models of real architectures (`tests/tiny_models.py`).

`ponder serve --policy P --prm R --prm-format F --step-delimiter "\\n\\n"` answers every strategy through the
official openai client, for a Qwen-style pair (ChatML template, steps on blank lines that the tokenizer
merges with the punctuation before them, the `qwen` PRM) and a Llama-3-style policy with a Math-Shepherd
PRM of another vocabulary; the step scores it reports equal the format's transformers reference; vLLM's
PRM scores equal the reference through Ponder's own adapters; bad settings are refused at start-up.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from tiny_models import llama3_policy, math_problems, math_shepherd_prm, qwen2_policy, qwen2_prm

from engines.spec import read_prm_spec
from ponder.defaults import DEFAULT_PRM
from verifiers.hf_prm import TransformersPRM
from verifiers.prm import Candidate

STRATEGIES = ("greedy", "best_of_n", "beam", "dvts", "mcts", "particle_filter", "revision", "auto")
SERVE_LIMITS = ["--max-step-tokens", "48", "--max-solution-tokens", "160", "--kv-cache-gib", "0.25"]
TERMINATION_GRACE_S = 120
# Enough for several PRM-scored samples of the longest solution after the greedy one, whose 160 tokens of
# random text take a good part of a smaller budget: the reference checks need at least two to compare.
REFERENCE_BUDGET = 4000
QUESTION = next(iter(math_problems(1)))[0]


@pytest.fixture(scope="module")
def qwen_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("qwen")
    return qwen2_policy(root / "policy"), qwen2_prm(root / "prm")


@pytest.fixture(scope="module")
def llama_shepherd_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("llama")
    return llama3_policy(root / "policy"), math_shepherd_prm(root / "prm")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(argv: list[str], log: Path) -> Iterator[str]:
    """`ponder serve` with these flags in its own process; yields its URL once /health says both are up."""
    port = free_port()
    command = [sys.executable, "-m", "ponder.cli", "serve", "--port", str(port), *argv]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while not healthy(url):
            assert process.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(1)
        yield url
    finally:
        stop(process, log)


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, a grace period, then SIGKILL, as Kubernetes stops a pod. Under heavy CPU load vLLM's CPU
    workers can outlive uvicorn's clean shutdown by minutes; that is no failure of ours. A server that never
    finished its own shutdown is."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(TERMINATION_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        assert "Finished server process" in log.read_text(errors="replace"), (
            f"the server did not shut down within {TERMINATION_GRACE_S} s of SIGTERM"
        )


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def qwen_server(qwen_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policy, prm = qwen_pair
    flags = ["--policy", str(policy), "--prm", str(prm), "--prm-format", "qwen", "--step-delimiter", "\\n\\n"]
    log = tmp_path_factory.mktemp("logs") / "qwen.log"
    yield from serve([*flags, "--model-name", "qwen2.5-math:1.5b", *SERVE_LIMITS], log)


@pytest.fixture(scope="module")
def llama_server(
    llama_shepherd_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    policy, prm = llama_shepherd_pair
    flags = ["--policy", str(policy), "--prm", str(prm), "--prm-format", "math-shepherd"]
    log = tmp_path_factory.mktemp("logs") / "llama.log"
    yield from serve(
        [*flags, "--step-delimiter", "\\n\\n", "--model-name", "llama-3:tiny", *SERVE_LIMITS], log
    )


def ask(url: str, model: str, strategy: str, budget: int = 1500) -> dict[str, Any]:
    client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTION}],
        seed=3,
        extra_body={"search": {"strategy": strategy, "budget": budget, "return_candidates": True}},
    )
    return response.model_dump()


def steps_of(text: str) -> tuple[str, ...]:
    """A completion's steps as the server cut them: each ends with the blank line that closes it."""
    return tuple(step for step in re.split(r"(?<=\n\n)", text) if step)


def reported_scores_equal_the_reference(report: dict[str, Any], prm: Path, format: str) -> int:
    """Every scored candidate's step scores against the format's transformers reference; how many."""
    reference = TransformersPRM(prm, read_prm_spec(prm, format=format))
    checked = 0
    for candidate in report["candidate_texts"] or []:
        steps = steps_of(candidate["text"])
        if not candidate["scores"] or len(steps) != len(candidate["scores"]):
            continue  # unscored, or a step the tokenizer cut differently from the text (not compared)
        ids = tuple(() for _ in steps)  # text formats read the texts, not the policy's ids
        scores = reference.score_ids(
            [reference.format.render(Candidate((), ids, question=QUESTION, step_texts=steps))], [len(steps)]
        )[0]
        assert scores == pytest.approx(candidate["scores"], abs=1e-3)
        checked += 1
    return checked


@pytest.mark.engine
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_qwen_pair_answers_every_strategy(qwen_server: str, strategy: str) -> None:
    body = ask(qwen_server, "qwen2.5-math:1.5b", strategy)
    assert body["model"] == "qwen2.5-math:1.5b"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] > 0
    assert body["search"]["budget"] == 1500 and body["search"]["stop_reason"] in {"done", "budget"}


@pytest.mark.engine
def test_the_qwen_pair_reports_the_qwen_reference_scores(
    qwen_server: str, qwen_pair: tuple[Path, Path]
) -> None:
    body = ask(qwen_server, "qwen2.5-math:1.5b", "best_of_n", REFERENCE_BUDGET)
    assert body["usage"]["scored_tokens"] > 0
    assert reported_scores_equal_the_reference(body["search"], qwen_pair[1], "qwen") >= 2


@pytest.mark.engine
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_llama_policy_with_a_math_shepherd_prm_answers_every_strategy(
    llama_server: str, strategy: str
) -> None:
    body = ask(llama_server, "llama-3:tiny", strategy)
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] > 0


@pytest.mark.engine
def test_the_math_shepherd_prm_reports_its_reference_scores(
    llama_server: str, llama_shepherd_pair: tuple[Path, Path]
) -> None:
    body = ask(llama_server, "llama-3:tiny", "best_of_n", REFERENCE_BUDGET)
    assert reported_scores_equal_the_reference(body["search"], llama_shepherd_pair[1], "math-shepherd") >= 2


def refused(argv: list[str]) -> str:
    """`ponder serve` with these flags exits at once with a clear error; returns what it said."""
    command = [sys.executable, "-m", "ponder.cli", "serve", "--port", str(free_port()), *argv]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    return result.stderr


def test_bad_settings_are_refused_at_start_up(qwen_pair: tuple[Path, Path]) -> None:
    policy, prm = (str(p) for p in qwen_pair)
    pair = ["--policy", policy, "--prm", prm]
    assert "unknown PRM format 'skywork'" in refused([*pair, "--prm-format", "skywork"])
    missing = refused([*pair, "--prm-format", "qwen", "--prm-step-tag", "<extra_9>"])
    assert "step tag '<extra_9>' is not a token" in missing
    assert "name both models" in refused(["--policy", policy])
    # our own format reads the policy's ids: a PRM of another vocabulary cannot be read that way
    assert "another vocabulary" in refused(["--policy", policy, "--prm", str(DEFAULT_PRM)])
    # the embedded models' character tokenizer has no snowman (a byte-level BPE can write anything)
    assert "cannot write the step delimiter" in refused(["--step-delimiter", "\u2603"])
