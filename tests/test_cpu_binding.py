"""The CPU-core split between the in-process policy and PRM engines (engines/cpu_binding.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engines import cpu_binding
from engines.cpu_binding import BIND_VARIABLE, parse_cpu_list, physical_cores, pin, split_cores
from engines.cpu_binding import cpu_binding as binding


def fake_sysfs(root: Path, topology: dict[int, tuple[int, int]]) -> Path:
    for cpu, (package, core) in topology.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return root


def test_hyperthread_siblings_count_once_and_unknown_cpus_count_alone(tmp_path: Path) -> None:
    # cpus 0-3 are four cores, 4-7 their siblings; cpu 8 has no topology folder
    sysfs = fake_sysfs(tmp_path, {c: (0, c % 4) for c in range(8)})
    assert physical_cores(range(9), sysfs) == [0, 1, 2, 3, 8]
    two_packages = fake_sysfs(tmp_path / "b", {0: (0, 0), 1: (1, 0)})  # same core id, other socket
    assert physical_cores([0, 1], two_packages) == [0, 1]


@pytest.mark.parametrize(
    ("cores", "split"),
    [
        ([0], None),
        ([0, 1], ("0", "1")),
        ([0, 1, 2], ("0,1", "2")),
        ([0, 1, 2, 3], ("0,1", "2")),  # the last stays free for the frontend
        ([0, 2, 4, 6, 8, 10, 12, 14], ("0,2,4,6", "8,10,12")),
    ],
)
def test_the_policy_gets_the_first_half_and_the_prm_the_rest(
    cores: list[int], split: tuple[str, str] | None
) -> None:
    assert split_cores(cores) == split


def test_binding_is_set_inside_the_block_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BIND_VARIABLE, raising=False)
    with binding("1"):
        assert os.environ[BIND_VARIABLE] == "1"
    assert BIND_VARIABLE not in os.environ
    monkeypatch.setenv(BIND_VARIABLE, "0-3")
    with binding("2"):
        assert os.environ[BIND_VARIABLE] == "2"
    assert os.environ[BIND_VARIABLE] == "0-3"
    with binding(None):
        assert os.environ[BIND_VARIABLE] == "0-3"


@pytest.mark.parametrize(
    "text, cpus",
    [
        ("0", {0}),
        ("0,2-3", {0, 2, 3}),
        ("0-1|4-5", {0, 1, 4, 5}),
        ("auto", None),
        ("nobind", None),
        ("", None),
    ],
)
def test_cpu_lists_parse_as_vllm_reads_them(text: str, cpus: set[int] | None) -> None:
    assert parse_cpu_list(text) == cpus


def test_engines_started_in_the_block_inherit_its_cores_and_the_caller_gets_its_own_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(BIND_VARIABLE, raising=False)
    allowed = os.sched_getaffinity(0)
    last = max(allowed)
    with binding(str(last)):
        assert os.sched_getaffinity(0) == {last}  # what a process spawned now inherits
    assert os.sched_getaffinity(0) == allowed
    with binding("nobind"), binding(str(max(allowed) + 1)):  # a keyword, a CPU we may not use
        assert os.sched_getaffinity(0) == allowed


def test_pin_confines_what_the_thread_spawns_next() -> None:
    allowed = os.sched_getaffinity(0)
    try:
        pin(str(min(allowed)))
        assert os.sched_getaffinity(0) == {min(allowed)}
        pin(None)
        assert os.sched_getaffinity(0) == {min(allowed)}
    finally:
        os.sched_setaffinity(0, allowed)


def test_a_binding_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_binding, "on_cpu_backend", lambda: True)
    monkeypatch.setenv(BIND_VARIABLE, "nobind")
    assert cpu_binding.engine_cores() == (None, None)
    monkeypatch.delenv(BIND_VARIABLE)
    monkeypatch.setattr(cpu_binding, "on_cpu_backend", lambda: False)  # GPUs: vLLM's business
    assert cpu_binding.engine_cores() == (None, None)
