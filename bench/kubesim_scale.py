"""kubesim scale benchmark: the model alone (no HTTP) over the ``mixed`` scenario.

    python bench/kubesim_scale.py            # 24 h, 100 nodes, ~2,000 pods, 10 s ticks
    python bench/kubesim_scale.py --quick    # 2 h
    python bench/kubesim_scale.py --hours 6 --nodes 60 --seed 3 --profile

Prints the wall time of the build and of the run, ticks per second, and the day's accounting
(node-hours, ideal node-hours, under-provisioned pod-minutes, interference episodes).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubesim.model import Cluster
from kubesim.scenario import load_scenario


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="mixed")
    ap.add_argument("--quick", action="store_true", help="simulate 2 h instead of 24 h")
    ap.add_argument("--hours", type=float, default=None)
    ap.add_argument("--nodes", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of the run")
    args = ap.parse_args(argv)
    hours = args.hours if args.hours is not None else (2.0 if args.quick else None)
    sc = load_scenario(args.scenario, seed=args.seed, nodes=args.nodes, hours=hours)
    c0 = time.process_time()
    t0 = time.perf_counter()
    c = Cluster(sc)
    t1 = time.perf_counter()
    pods0 = len(c.pods)
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    c.advance(sc.duration_h * 3600.0)
    if prof:
        prof.disable()
    t2 = time.perf_counter()
    c2 = time.process_time()
    st = c.status()
    out = {
        "scenario": sc.name, "seed": c.seed, "virtual_hours": sc.duration_h, "resolution_s": sc.resolution_s,
        "ticks": c.tick, "nodes_start": len(sc.nodes), "nodes_end": len(c.nodes), "pods_start": pods0,
        "pods_end": len(c.pods), "build_wall_s": round(t1 - t0, 3), "run_wall_s": round(t2 - t1, 3),
        "cpu_s": round(c2 - c0, 3),  # process CPU time (less sensitive to a busy machine than wall time)
        "ticks_per_s": round(c.tick / max(t2 - t1, 1e-9), 1),
        "accounting": c.accounting(),
        "counts": st["counts"],
        "interference_episodes": len(c.truth["episodes"]),
    }
    print(json.dumps(out, indent=2))
    print(f"kubesim {sc.name}: {sc.duration_h:g} h / {len(sc.nodes)} nodes / {pods0} pods at {sc.resolution_s:g} s "
          f"-> {t2 - t1:.1f} s wall, {c2 - c0:.1f} s CPU (build {t1 - t0:.2f} s)")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
