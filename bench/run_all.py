"""Run every bench in ``bench/`` and print one table.

    python bench/run_all.py [--quick] [--only NAME ...] [--partitions] [--json]

Each ``bench/*.py`` with a ``main`` (everything except this file and ``common.py``) is run as its own
process, one after the other (never in parallel: they measure throughput on a small machine), with
``--quick`` when given. Benches that accept ``--json`` print one JSON object; the table shows, per
bench, its headline figure, the same-run baseline, the ratio and whether its target is met (keys
``target_*``). Other benches' output is shown as their last lines. ``--partitions`` also runs the
two-worker partition split (``bench/common.py:two_worker_split``, see docs/partitioning.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SKIP = {"run_all.py", "common.py"}
JSON_BENCHES = {"stream_bench", "latency_bench", "actuator_bench", "memory_bench", "planner_bench"}
# headline (figure, baseline, ratio) keys of the benches that print JSON
HEADLINES = {
    "stream": ("worker_samples_per_s", "baseline_samples_per_s", "ratio"),
    "latency": ("p99_s", None, None),
    "actuator": ("actuator_evictions_per_s", "baseline_evictions_per_s", "ratio"),
    "memory": ("rss_mb", "idle_rss_mb", None),
    "planner": ("plan_tick_cpu_ms_p99", "baseline_stateless_cpu_ms_p50", "ratio_baseline_over_kubetide"),
}


def benches(only: list[str] | None) -> list[Path]:
    out = sorted(p for p in HERE.glob("*.py") if p.name not in SKIP)
    if only:
        out = [p for p in out if p.stem in only or p.stem.removesuffix("_bench") in only]
    return out


def run_one(path: Path, quick: bool, timeout: float) -> dict[str, Any]:
    args = [sys.executable, str(path)]
    if quick:
        args.append("--quick")
    if path.stem in JSON_BENCHES:
        args.append("--json")
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        code, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as exc:
        code, out, err = -1, (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), \
            f"timed out after {timeout:.0f}s"
    res: dict[str, Any] = {"bench": path.stem, "exit": code, "seconds": round(time.monotonic() - t0, 1)}
    if path.stem in JSON_BENCHES and code == 0:
        for line in reversed(out.strip().splitlines()):
            if line.startswith("{"):
                res["result"] = orjson.loads(line)
                break
    if "result" not in res:
        res["tail"] = "\n".join(out.strip().splitlines()[-12:])
        if code != 0:
            res["stderr"] = "\n".join(err.strip().splitlines()[-12:])
    return res


def table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'bench':<18} {'figure':>16} {'baseline':>16} {'ratio':>7}  {'targets':<40} {'load':<18} {'secs':>6}",
             "-" * 130]
    for r in results:
        res = r.get("result")
        if res:
            fig_k, base_k, ratio_k = HEADLINES.get(res.get("bench", ""), (None, None, None))
            fig = f"{res.get(fig_k)} {fig_k}" if fig_k else ""
            base = str(res.get(base_k, "")) if base_k else "-"
            ratio = str(res.get(ratio_k, "")) if ratio_k else "-"
            targets = ", ".join(f"{k.removeprefix('target_')}={'MET' if v else 'NOT met'}"
                                for k, v in res.items() if k.startswith("target_"))
            load = "/".join(str(x) for x in res.get("loadavg", []))
            lines.append(f"{r['bench']:<18} {(fig_k and str(res.get(fig_k))) or '':>16} {base:>16} {ratio:>7}  "
                         f"{targets:<40} {load:<18} {r['seconds']:>6}")
            if fig_k:
                lines.append(f"{'':<18} ({fig})")
        else:
            status = "ok" if r["exit"] == 0 else f"FAILED (exit {r['exit']})"
            lines.append(f"{r['bench']:<18} {status:>16} {'':>16} {'':>7}  {'':<40} {'':<18} {r['seconds']:>6}")
            for t in (r.get("tail") or "").splitlines():
                lines.append(f"{'':<20}| {t}")
            for t in (r.get("stderr") or "").splitlines():
                lines.append(f"{'':<20}! {t}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every bench")
    p.add_argument("--only", nargs="*", default=None, help="bench names (stem, with or without _bench)")
    p.add_argument("--partitions", action="store_true", help="also run the two-worker partition split")
    p.add_argument("--timeout", type=float, default=None, help="per bench (default 120 s with --quick, else 900 s)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    a = p.parse_args(argv)
    timeout = a.timeout or (120.0 if a.quick else 900.0)
    results = []
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    for path in benches(a.only):
        print(f"running {path.name} …", file=sys.stderr, flush=True)
        results.append(run_one(path, a.quick, timeout))
    if a.partitions:
        import tempfile

        sys.path.insert(0, str(HERE))
        from common import two_worker_split

        t0 = time.monotonic()
        split = two_worker_split(Path(tempfile.mkdtemp(prefix="kt-two-workers-")))
        results.append({"bench": "two-workers", "exit": 0, "seconds": round(time.monotonic() - t0, 1),
                        "tail": orjson.dumps(split, option=orjson.OPT_INDENT_2).decode()})
    if a.json:
        print(orjson.dumps(results).decode())
    else:
        print(table(results))
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
