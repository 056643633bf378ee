"""Command line for kubesim; the kubetide CLI wires ``add_arguments`` and ``run`` in.

    python -m kubesim --scenario demo --port 0 --speed 60 --kubeconfig-out /tmp/kubesim.kubeconfig
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path

from .scenario import ScenarioError, load_scenario
from .server import KubeSim

log = logging.getLogger("kubesim")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="demo", help="scenario name (kubesim/scenarios) or YAML path")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--speed", type=float, default=None,
                        help="virtual seconds per real second; 0 = manual clock (default: scenario's)")
    parser.add_argument("--seed", type=int, default=None, help="override the scenario seed")
    parser.add_argument("--nodes", type=int, default=None, help="override: about this many initial nodes")
    parser.add_argument("--hours", type=float, default=None, help="override the scenario duration_h")
    parser.add_argument("--token", default="kubesim-token", help="bearer token written to the kubeconfig")
    parser.add_argument("--kubeconfig-out", default=None, help="write a kubeconfig for the server here")
    parser.add_argument("--ready-file", default=None,
                        help='write {"url","port","kubeconfig"} JSON here once listening')
    parser.add_argument("--history-size", type=int, default=1000, help="watch events kept for resumption")
    parser.add_argument("--log-file", default=None)


async def _serve(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario, seed=args.seed, nodes=getattr(args, "nodes", None),
                             hours=getattr(args, "hours", None))
    sim = KubeSim(scenario, speed=args.speed, host=args.host, port=args.port, token=args.token,
                  kubeconfig_path=args.kubeconfig_out, history_size=args.history_size,
                  access_log=bool(args.log_file))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await sim.start()
    try:
        c = sim.cluster
        print(f"kubesim listening on {sim.url} (scenario {scenario.name}, {len(c.nodes)} nodes, "
              f"{len(c.pods)} pods, speed {sim.speed:g})", flush=True)
        if args.ready_file:
            ready = Path(args.ready_file)
            tmp = ready.with_name(ready.name + ".tmp")
            tmp.write_text(json.dumps({"url": sim.url, "port": sim.port, "kubeconfig": str(sim.kubeconfig_path)}))
            tmp.replace(ready)
        await stop.wait()
    finally:
        await sim.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM. Returns the process exit code."""
    if args.log_file:
        logging.basicConfig(filename=args.log_file, level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return asyncio.run(_serve(args))
    except ScenarioError as e:
        print(f"kubesim: invalid scenario: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubesim", description="Simulated Kubernetes API on a virtual clock")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
