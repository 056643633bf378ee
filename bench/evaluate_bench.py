"""Wall and CPU time of `kubetide evaluate --offline` on the `mixed` scenario (100 nodes, ~2,000 pods, 24 h at 10 s).

    python bench/evaluate_bench.py            # 24 virtual hours
    python bench/evaluate_bench.py --quick    # 2 virtual hours
    python bench/evaluate_bench.py --scenario demo --hours 4
    python bench/evaluate_bench.py --quick --codec   # the faithful path: rendered JSON + Kafka codec

Runs the kubetide run and the baseline one after the other (in this process) and prints one JSON line:
scenario, virtual hours, ticks, nodes, wall and CPU seconds of each run, virtual seconds per wall
second, decisions, and the two scorecards. `kubetide evaluate --offline` itself runs the baseline in a
second process beside the kubetide run, so its wall time is about the longer of the two (on two
free cores). CPU seconds are the figure to compare on a busy machine. Exits 0 without measuring when
the scenario does not exist (yet).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubesim.scenario import ScenarioError, load_scenario
from kubetide import evaluate as ev


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", default="mixed")
    p.add_argument("--hours", type=float, default=None, help="virtual hours (default 24, or 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="2 virtual hours")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--nodes", type=int, default=None)
    p.add_argument("--codec", "--full", dest="codec", action="store_true",
                   help="the kubetide run renders every object to Kubernetes JSON and round-trips every message "
                        "through the codec, and emits profiles (`kubetide evaluate --codec`)")
    args = p.parse_args(argv)
    hours = args.hours if args.hours is not None else (2.0 if args.quick else 24.0)
    try:
        sc = load_scenario(args.scenario, seed=args.seed, nodes=args.nodes)
    except ScenarioError as exc:
        print(json.dumps({"scenario": args.scenario, "skipped": str(exc)}))
        return 0
    ticks = round(hours * 3600 / sc.resolution_s)
    t0, c0 = time.monotonic(), time.process_time()
    kt = ev.run_offline(sc, args.seed, ticks, None, codec=args.codec)
    t1, c1 = time.monotonic(), time.process_time()
    base = ev.run_baseline(sc, args.seed, ticks, None)
    t2, c2 = time.monotonic(), time.process_time()
    out = {
        "scenario": sc.name, "mode": "offline " + ("codec" if args.codec else "default"), "hours": hours,
        "ticks": ticks, "nodes": len(sc.nodes),
        "wall_s": {"kubetide_offline": round(t1 - t0, 2), "baseline": round(t2 - t1, 2)},
        "cpu_s": {"kubetide_offline": round(c1 - c0, 2), "baseline": round(c2 - c1, 2)},
        "virtual_s_per_wall_s": {"kubetide_offline": round(hours * 3600 / max(t1 - t0, 1e-9), 1),
                                 "baseline": round(hours * 3600 / max(t2 - t1, 1e-9), 1)},
        "decisions": len(kt["decisions"]), "outcomes": kt.get("outcomes", {}),
        "kubetide": kt["scores"], "baseline": base["scores"],
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
