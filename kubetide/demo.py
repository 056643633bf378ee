"""`kubetide demo`: the whole pipeline on one machine, with a summary table at the end.

Starts (each as its own process, logs under ``--run-dir``): the embedded broker (unless
``--bootstrap-servers`` names a Kafka cluster), kubesim with the ``demo`` scenario on a
manual virtual clock, the collector, one stream worker and the actuator. It then advances
kubesim's clock ``--tick`` virtual seconds at a time, pausing ``--pace`` real seconds per
tick, for ``--hours`` virtual hours. Progress is shown while it runs. It stops everything
it started at the end, on Ctrl-C and on any error; a component that dies ends the demo
with its log tail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kubetide import topics
from kubetide.codec import DecodeError, decode
from kubetide.kafka import gapless_getmany
from kubetide.log import setup_logging
from kubetide.procs import ManagedProcess, ProcessGroup, add_pipeline, kubetide_argv

log = logging.getLogger("kubetide.demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hours", type=float, default=3.0, help="virtual hours to simulate (default 3)")
    parser.add_argument("--tick", type=float, default=10.0, help="virtual seconds per clock step (default 10)")
    parser.add_argument("--pace", type=float, default=0.1,
                        help="real seconds to wait per clock step (default 0.1: 3 virtual hours in ~2 min)")
    parser.add_argument("--scenario", default="demo", help="kubesim scenario name or YAML path (default demo)")
    parser.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KUBETIDE_BOOTSTRAP"),
                        help="use this Kafka cluster instead of starting the embedded broker "
                             "(default: $KUBETIDE_BOOTSTRAP, else embedded)")
    parser.add_argument("--run-dir", default=".kubetide/demo",
                        help="where logs, the kubeconfig and state go (emptied first; default .kubetide/demo)")
    parser.add_argument("--dry-run", action="store_true", help="run the actuator in dry-run mode")
    parser.add_argument("--no-bad-input", action="store_true",
                        help="do not inject the two bad messages that show the dead-letter path")
    parser.add_argument("--log-level", default="INFO")


@dataclass
class Tally:
    decisions: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    deadletters: Counter[str] = field(default_factory=Counter)
    profiles: set[str] = field(default_factory=set)
    last_record_at: float = 0.0


async def _tally_topics(bootstrap: str, tally: Tally, stop: asyncio.Event) -> None:
    """Read decisions, actions, dead letters and profiles from the beginning, counting them."""
    from aiokafka import AIOKafkaConsumer

    names = [topics.DECISIONS_DESCHEDULE, topics.ACTIONS, topics.DEADLETTER, topics.PROFILES]
    consumer = AIOKafkaConsumer(*names, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await gapless_getmany(consumer, timeout_ms=200, max_records=2000)
            for tp, records in batch.items():
                for rec in records:
                    tally.last_record_at = time.monotonic()
                    try:
                        msg: Any = decode(tp.topic, rec.value)
                    except DecodeError:
                        continue
                    if tp.topic == topics.DECISIONS_DESCHEDULE:
                        tally.decisions[msg.strategy] += 1
                    elif tp.topic == topics.ACTIONS:
                        tally.actions[msg.summary] += 1
                    elif tp.topic == topics.DEADLETTER:
                        tally.deadletters[msg.reason] += 1
                    else:
                        tally.profiles.add(f"{msg.namespace}/{msg.app}")
    finally:
        await consumer.stop()


async def _inject_bad_input(bootstrap: str) -> int:
    """Two messages the pipeline must dead-letter (malformed JSON, unknown schema version)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topics.CLUSTER_METRICS, b'{"schema": {"name": "cluster.metrics", "vers',
                                     key=b"demo-bad-input")
        await producer.send_and_wait(
            topics.CLUSTER_METRICS, b'{"schema": {"name": "cluster.metrics", "version": 99}, "ts": 0}',
            key=b"demo-bad-input")
    finally:
        await producer.stop()
    return 2


def _spread(status: dict[str, Any]) -> dict[str, float]:
    """Node CPU usage % figures from kubesim's status."""
    pcts = []
    for n in status.get("nodes", []):
        alloc = n.get("cpu_allocatable") or 0
        if alloc:
            pcts.append(100.0 * n.get("cpu_usage_cores", 0.0) / alloc)
    if not pcts:
        return {"max_min": 0.0, "p95_p5": 0.0, "max": 0.0, "mean": 0.0}
    import numpy as np

    a = np.asarray(pcts)
    return {"max_min": float(a.max() - a.min()),
            "p95_p5": float(np.percentile(a, 95) - np.percentile(a, 5)),
            "max": float(a.max()), "mean": float(a.mean())}


def _node_pcts(status: dict[str, Any]) -> dict[str, float]:
    return {n["name"]: 100.0 * n.get("cpu_usage_cores", 0.0) / max(n.get("cpu_allocatable") or 1, 1e-9)
            for n in status.get("nodes", [])}


async def _drive(args: argparse.Namespace, sim_url: str, bootstrap: str, group: ProcessGroup,
                 console: Console) -> dict[str, Any]:
    tally = Tally()
    stop = asyncio.Event()
    reader = asyncio.create_task(_tally_topics(bootstrap, tally, stop))
    injected = 0
    steps = max(1, int(args.hours * 3600 / args.tick))
    async with aiohttp.ClientSession(base_url=sim_url) as http:
        async def status() -> dict[str, Any]:
            async with http.get("/kubesim/v1/status") as r:
                r.raise_for_status()
                return await r.json()

        async def advance() -> None:
            async with http.post("/kubesim/v1/clock", json={"advance_s": args.tick}) as r:
                r.raise_for_status()

        # One step so that every pod has usage, then the "before" picture.
        await advance()
        before = await status()
        hot_node = max(_node_pcts(before).items(), key=lambda kv: kv[1])[0]
        if not args.no_bad_input:
            injected = await _inject_bad_input(bootstrap)
        started = time.monotonic()
        cols = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                TimeElapsedColumn()]
        with Progress(*cols, console=console, transient=False) as progress:
            task = progress.add_task("simulating", total=steps, info="")
            for i in range(steps):
                t0 = time.monotonic()
                await advance()
                if i % 10 == 0 or i == steps - 1:
                    if dead := group.dead():
                        raise RuntimeError(f"{dead[0].name} died (code {dead[0].returncode()}):\n{dead[0].tail()}")
                    st = await status()
                    sp = _spread(st)
                    info = (f"{st.get('virtual_time', '')[:16]}  spread {sp['max_min']:.0f} pts  "
                            f"hot node {_node_pcts(st).get(hot_node, 0):.0f}%  "
                            f"decisions {sum(tally.decisions.values())}  actions {sum(tally.actions.values())}")
                    progress.update(task, completed=i + 1, info=info)
                    if not console.is_terminal and (i % max(1, steps // 10) < 10 or i == steps - 1):
                        print(f"[{100 * (i + 1) // steps:3d}%] {info}", flush=True)
                await asyncio.sleep(max(0.0, args.pace - (time.monotonic() - t0)))
        # Let the pipeline drain: wait until no new records for 2 s (at most 20 s).
        drain_deadline = time.monotonic() + 20
        while time.monotonic() < drain_deadline and time.monotonic() - tally.last_record_at < 2:
            await asyncio.sleep(0.2)
        after = await status()
    stop.set()
    await reader
    return {"before": before, "after": after, "hot_node": hot_node, "tally": tally, "injected": injected,
            "wall_s": time.monotonic() - started, "steps": steps}


def _table(res: dict[str, Any], args: argparse.Namespace) -> Table:
    b, a = _spread(res["before"]), _spread(res["after"])
    hb, ha = _node_pcts(res["before"]).get(res["hot_node"], 0), _node_pcts(res["after"]).get(res["hot_node"], 0)
    t: Tally = res["tally"]
    ev_b, ev_a = res["before"].get("counts", {}), res["after"].get("counts", {})
    t_out = Table(title=f"kubetide demo — {args.hours:g} virtual hours of scenario '{args.scenario}' "
                        f"in {res['wall_s']:.0f} s")
    t_out.add_column("measure")
    t_out.add_column("before", justify="right")
    t_out.add_column("after", justify="right")
    t_out.add_row("node CPU usage spread, max−min (points)", f"{b['max_min']:.1f}", f"{a['max_min']:.1f}")
    t_out.add_row("node CPU usage spread, p95−p5 (points)", f"{b['p95_p5']:.1f}", f"{a['p95_p5']:.1f}")
    t_out.add_row(f"hot node {res['hot_node']} CPU usage (%)", f"{hb:.1f}", f"{ha:.1f}")
    t_out.add_row("descheduling decisions", "", str(sum(t.decisions.values())))
    applied = t.actions.get("applied", 0) + t.actions.get("dry-run", 0)
    t_out.add_row("evictions applied (actions topic)", "", str(applied))
    t_out.add_row("evictions seen by kubesim", "", str(ev_a.get("evictions", 0) - ev_b.get("evictions", 0)))
    t_out.add_row("PDB refusals (429 → skipped: pdb)", "", str(t.actions.get("skipped: pdb", 0)))
    other = {k: v for k, v in t.actions.items() if k not in ("applied", "dry-run", "skipped: pdb")}
    t_out.add_row("other outcomes", "", ", ".join(f"{k} {v}" for k, v in sorted(other.items())) or "0")
    dl = sum(t.deadletters.values())
    t_out.add_row("dead letters", "", f"{dl} ({', '.join(f'{k} {v}' for k, v in sorted(t.deadletters.items()))};"
                                      f" {res['injected']} injected on purpose)" if dl else "0")
    t_out.add_row("apps with a profile", "", str(len(t.profiles)))
    return t_out


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    console = Console(width=None if sys.stdout.isatty() else 110)
    run_dir = Path(args.run_dir).resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    group = ProcessGroup()
    broker = None
    # Ctrl-C and SIGTERM both raise KeyboardInterrupt so the same clean-up runs (set SIGINT
    # explicitly: a process started in the background by a shell inherits it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        bootstrap = args.bootstrap_servers
        if not bootstrap:
            from kubetide.broker import EmbeddedBroker

            console.print("starting the embedded broker (Tansu, memory storage)…")
            broker = EmbeddedBroker(log_file=str(run_dir / "broker.log"))
            broker.start()
            bootstrap = broker.bootstrap
        console.print(f"broker at {bootstrap}; creating topics…")
        from kubetide.kafka import ensure_topics

        asyncio.run(ensure_topics(bootstrap, topics.TOPICS))

        sim_ready = run_dir / "kubesim.json"
        kubeconfig = run_dir / "kubeconfig"
        sim_args = ["kubesim", "--scenario", args.scenario, "--speed", "0", "--kubeconfig-out", str(kubeconfig),
                    "--ready-file", str(sim_ready)]
        if args.seed is not None:
            sim_args += ["--seed", str(args.seed)]
        sim = group.add(ManagedProcess("kubesim", kubetide_argv(*sim_args), run_dir / "kubesim.log"))
        sim.wait_for_file(sim_ready, 60)
        import orjson

        sim_url = orjson.loads(sim_ready.read_bytes())["url"]
        console.print(f"kubesim at {sim_url} (kubeconfig {kubeconfig})")

        env = {"KUBETIDE_LOG_LEVEL": args.log_level,
               "KUBETIDE_METRICS_PORT": os.environ.get("KUBETIDE_METRICS_PORT", "0")}
        streams, streams_ready = add_pipeline(group, bootstrap, run_dir, kubeconfig, env=env,
                                              metrics_interval_s=max(args.pace / 2, 0.02),
                                              actuator_extra=["--dry-run"] if args.dry_run else [])
        console.print(f"collector, stream worker and actuator started; logs in {run_dir}")
        with console.status("waiting for the stream worker to join its consumer group…"):
            streams.wait_for_file(streams_ready, 90)
        res = asyncio.run(_drive(args, sim_url, bootstrap, group, console))
        console.print(_table(res, args))
        return 0
    except KeyboardInterrupt:
        console.print("interrupted: stopping everything the demo started…")
        return 130
    except Exception as exc:  # a clear message, then clean up
        console.print(f"[red]demo failed:[/red] {exc}")
        log.debug("demo failure", exc_info=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with contextlib.suppress(Exception):
            group.stop()
        if broker is not None:
            with contextlib.suppress(Exception):
                broker.stop()
        console.print(f"stopped; logs kept in {run_dir}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="kubetide demo")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
