"""The process-level benches run, in their smallest mode (figures, not tests: no target is asserted).

Each bench starts its own embedded broker and worker processes; they run concurrently here (the
figures of a smoke run mean nothing, only that every bench runs to the end and prints its result).
Also: two ``kubetide streams`` workers split the partitions and the table state between them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SMOKE = {
    "stream_bench": ["--smoke"],
    "latency_bench": ["--smoke"],
    "actuator_bench": ["--smoke"],
    "memory_bench": ["--smoke"],
    "planner_bench": ["--nodes", "20", "--hours", "0.05", "--baseline-every", "5"],
}
KEYS = {
    "stream_bench": ("worker_samples_per_s", "baseline_samples_per_s", "ratio", "loadavg"),
    "latency_bench": ("p50_s", "p99_s", "decisions", "loadavg"),
    "actuator_bench": ("actuator_evictions_per_s", "baseline_evictions_per_s", "ratio", "loadavg"),
    "memory_bench": ("rss_mb", "idle_rss_mb", "loadavg"),
    "planner_bench": ("plan_tick_cpu_ms_p50", "plan_tick_cpu_ms_p99", "baseline_stateless_cpu_ms_p50", "loadavg"),
}

pytestmark = pytest.mark.timeout(180)


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[int, str, str]]:
    procs = {name: _spawn([str(BENCH / f"{name}.py"), *args, "--json"]) for name, args in SMOKE.items()}
    procs["two_workers"] = _spawn([str(BENCH / "common.py"), "two-workers", "--nodes", "16", "--scrapes", "2"])
    out = {}
    try:
        for name, p in procs.items():
            stdout, stderr = p.communicate(timeout=150)
            out[name] = (p.returncode, stdout, stderr)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    return out


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_bench_runs_and_prints_its_figures(runs: dict[str, tuple[int, str, str]], name: str) -> None:
    code, stdout, stderr = runs[name]
    assert code == 0, f"{name} failed:\n{stdout[-2000:]}\n{stderr[-3000:]}"
    line = next(x for x in reversed(stdout.strip().splitlines()) if x.startswith("{"))
    res = orjson.loads(line)
    for k in KEYS[name]:
        assert k in res, f"{name}: no {k} in {res}"


def test_two_workers_split_partitions_and_state(runs: dict[str, tuple[int, str, str]]) -> None:
    code, stdout, stderr = runs["two_workers"]
    assert code == 0, f"two-workers failed:\n{stdout[-2000:]}\n{stderr[-3000:]}"
    res = orjson.loads(stdout)
    w1, w2 = res["workers"]
    assert res["disjoint"]
    for t in ("cluster.metrics", "kubetide.internal.app-samples"):
        got = sorted(w1["partitions"].get(t, []) + w2["partitions"].get(t, []))
        assert got == list(range(8)) and w1["partitions"].get(t) and w2["partitions"].get(t), res
    assert w1["counts_match"] and w2["counts_match"], res
    assert sum(res["apps_split"]) == res["apps"] and min(res["apps_split"]) > 0
    assert w1["runs_the_planner"] != w2["runs_the_planner"]  # one partition: exactly one planner
    assert sorted(w1["table_changelog_partitions"]["kubetide-streams-profile-state-changelog"]
                  + w2["table_changelog_partitions"]["kubetide-streams-profile-state-changelog"]) == list(range(8))
