"""Which CPU cores each in-process vLLM engine computes on, when the engines run on the CPU backend.

Contract: `engine_cores()` returns the cores for the policy's and the PRM's worker threads, in vLLM's
`VLLM_CPU_OMP_THREADS_BIND` format ("0", "0,2-3"), or `(None, None)` to keep vLLM's own binding;
`cpu_binding(cores)` sets that variable for the engine processes started inside the block and confines
those processes (scheduler and workers) to the cores; `pin(cores)` does the latter for whatever the
calling thread spawns next (a `vllm serve` replica).

Why: vLLM's automatic binding gives every engine the same cores (all but the last, which it reserves
for the frontend). Two engines in one process therefore compute on one shared core on a 2-core
machine while the other core idles between frontend work, and every PRM call stalls the policy.
Splitting the cores gave Best-of-N traffic +21% throughput on 2 cores (README, "Server under load").
vLLM leaves each engine's scheduler process (EngineCore) unbound, so it also ran on the other engine's
core, where it competed with that engine's worker. Keeping it on its engine's cores gave Best-of-N
traffic +6% generated tokens/s and a p95 of 1.96 s instead of 2.66 s (two load runs each way); with
the PRM idle (raw benchmark, Best-of-N by vote) it cost about 4%, as the scheduler no longer borrows
the idle core.
Threads the frontend starts while an engine starts (the engine client's ZMQ I/O threads) inherit that
engine's cores too. Handing them back to the caller's cores measured no better (two `ponder load
--no-breakdown` runs each way: Best-of-N 2,076 against 2,035 generated tokens/s, mixed traffic 12.8
against 14.0 requests/s, within run-to-run noise), so they stay.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

BIND_VARIABLE = "VLLM_CPU_OMP_THREADS_BIND"
SYSFS_CPUS = Path("/sys/devices/system/cpu")


def physical_cores(cpus: Sequence[int], sysfs: Path = SYSFS_CPUS) -> list[int]:
    """One logical CPU per physical core (as vLLM's auto binding uses on x86), in order; a CPU whose
    topology is unreadable counts as its own core."""
    seen: set[tuple[str, str]] = set()
    chosen: list[int] = []
    for cpu in sorted(cpus):
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            core = (
                (topology / "physical_package_id").read_text().strip(),
                (topology / "core_id").read_text().strip(),
            )
        except OSError:
            core = ("cpu", str(cpu))
        if core not in seen:
            seen.add(core)
            chosen.append(cpu)
    return chosen


def split_cores(cores: Sequence[int]) -> tuple[str, str] | None:
    """The policy's and the PRM's cores: the first half (rounded up) and the rest. With 4 or more
    cores the last stays free for the frontend, as vLLM's binding keeps it; with fewer, nothing is
    spare and the frontend shares. None when there is only one core to give."""
    usable = list(cores[:-1]) if len(cores) >= 4 else list(cores)
    if len(usable) < 2:
        return None
    half = (len(usable) + 1) // 2
    return cpu_list(usable[:half]), cpu_list(usable[half:])


def cpu_list(cores: Sequence[int]) -> str:
    return ",".join(str(core) for core in cores)


def parse_cpu_list(cores: str) -> set[int] | None:
    """The CPUs of a list in that format ("0,2-3" -> {0, 2, 3}; ranks' lists joined by "|" count
    together); None for the keywords ("auto", "nobind", "all")."""
    chosen: set[int] = set()
    for part in cores.replace("|", ",").split(","):
        first, _, last = part.strip().partition("-")
        if not (first.isdigit() and (last.isdigit() or not last)):
            return None
        chosen.update(range(int(first), int(last or first) + 1))
    return chosen or None


def pin(cores: str | None) -> None:
    """Confine the calling thread, and so every process it spawns from now on, to `cores`; a no-op for
    None, a keyword, or CPUs this process may not use."""
    cpus = parse_cpu_list(cores) if cores else None
    if cpus and cpus <= os.sched_getaffinity(0):
        os.sched_setaffinity(0, cpus)


def on_cpu_backend() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def engine_cores() -> tuple[str | None, str | None]:
    """The split for a policy and a PRM in this process; vLLM's own binding where the user set one,
    on GPUs, or on a single core."""
    if BIND_VARIABLE in os.environ or not on_cpu_backend():
        return None, None
    split = split_cores(physical_cores(sorted(os.sched_getaffinity(0))))
    return split if split else (None, None)


@contextmanager
def cpu_binding(cores: str | None) -> Iterator[None]:
    """Engine processes spawned inside the block inherit `cores` as their binding (None: unchanged)."""
    if cores is None:
        yield
        return
    before = os.environ.get(BIND_VARIABLE)
    affinity = os.sched_getaffinity(0)
    os.environ[BIND_VARIABLE] = cores
    # Children inherit the spawning thread's CPU mask, so the engine's scheduler process shares the
    # engine's cores with its workers instead of preempting the other engine's: on CPU the two run
    # in lockstep (no async scheduling), and each busy-waits with sched_yield while the other works.
    pin(cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, affinity)
        if before is None:
            del os.environ[BIND_VARIABLE]
        else:
            os.environ[BIND_VARIABLE] = before
