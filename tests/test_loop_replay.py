"""The loop's PRM refit replays what the PRM was fitted on before: `training.iterate.replay_records` draws
`prm_replay` x the new labels from OUT/prm_data.jsonl and earlier rounds only, never the round's own or
later rounds', and reproducibly."""

from __future__ import annotations

import json
from pathlib import Path

from training.iterate import replay_records


def labelled(source: str, count: int) -> list[dict[str, object]]:
    return [{"prompt": f"{source} {i}", "completions": ["x\n"], "soft_labels": [1.0]} for i in range(count)]


def write(path: Path, records: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def run_dir(tmp_path: Path) -> Path:
    write(tmp_path / "prm_data.jsonl", [*labelled("base", 10), {"prompt": "empty", "completions": []}])
    for number in (1, 2, 3):
        write(tmp_path / "rounds" / str(number) / "prm_data.jsonl", labelled(f"round{number}", 10))
    return tmp_path


def sources(records: list[dict[str, object]]) -> set[str]:
    return {str(r["prompt"]).split()[0] for r in records}


def test_replay_draws_its_share_from_earlier_labels_only(tmp_path: Path) -> None:
    out = run_dir(tmp_path)
    replayed = replay_records(out, 3, 4, {"prm_replay": 3.0})
    assert len(replayed) == 12
    assert sources(replayed) <= {"base", "round1", "round2"}
    assert all(r["completions"] for r in replayed)
    assert replayed == replay_records(out, 3, 4, {"prm_replay": 3.0})
    assert sources(replay_records(out, 1, 5, {"prm_replay": 1.0})) == {"base"}


def test_no_replay_by_default_and_never_more_than_there_is(tmp_path: Path) -> None:
    out = run_dir(tmp_path)
    assert replay_records(out, 2, 8, {}) == []
    assert len(replay_records(out, 2, 8, {"prm_replay": 100.0})) == 20
