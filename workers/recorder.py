"""``kubetide record``: record Kafka topics to a file (format: :mod:`kubetide.replay`, docs/recording-format.md).

Reads every partition of the chosen topics with a plain assigned consumer (no consumer group,
nothing committed), writes each record with its topic, partition, offset, key, value, headers
and Kafka timestamp, and stops on the first of: ``--until-end`` (caught up with the end of every
partition as it was at start), ``--until-idle S`` (no record for S seconds), ``--duration S``,
``--max-records N``, or Ctrl-C / SIGTERM. Every stop is clean: the file gets its footer and is
valid up to the last record. A summary of records per topic is printed at the end.

End offsets come from fetch high-water marks (:func:`kubetide.faustfix.fetch_high_waters`), not
from ListOffsets alone: the embedded broker answers ListOffsets(latest) with the base offset of
the last batch + 1 (see BROKER-NOTES.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kubetide.replay import RecordingWriter, make_record


@dataclass
class RecordOptions:
    topics: list[str]
    out: str
    bootstrap: str
    from_beginning: bool = True
    until_end: bool = False
    until_idle_s: float | None = None
    duration_s: float | None = None
    max_records: int | None = None
    embedded: bool = True


@dataclass
class RecordResult:
    counts: Counter[str] = field(default_factory=Counter)
    stopped: str = ""
    elapsed_s: float = 0.0


async def _end_offsets(consumer: Any, tps: list[Any]) -> dict[Any, int]:
    from kubetide.faustfix import fetch_high_waters

    listed = await consumer.end_offsets(tps)
    fixed = await fetch_high_waters(consumer, listed)
    return {tp: int(fixed.get(tp) or 0) for tp in tps}


async def record(opts: RecordOptions, stop: asyncio.Event | None = None, *, on_record: Any = None) -> RecordResult:
    """Record ``opts.topics`` into ``opts.out`` until a stop condition; returns counts and the reason."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from kubetide.kafka import consumer_config, gapless_getmany, topic_partitions

    stop = stop or asyncio.Event()
    parts = await topic_partitions(opts.bootstrap)
    missing = [t for t in opts.topics if t not in parts]
    if missing:
        raise LookupError(f"topics not on {opts.bootstrap}: {', '.join(missing)}")
    tps = [TopicPartition(t, p) for t in opts.topics for p in range(parts[t])]
    consumer = AIOKafkaConsumer(**consumer_config(opts.bootstrap, opts.embedded, group_id=None,
                                                  client_id="kubetide-recorder", max_poll_records=5000))
    await consumer.start()
    result = RecordResult()
    writer: RecordingWriter | None = None
    t0 = time.monotonic()
    try:
        consumer.assign(tps)
        ends = await _end_offsets(consumer, tps)
        if opts.from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            for tp in tps:
                consumer.seek(tp, ends[tp])
        starts = {tp: await consumer.position(tp) for tp in tps}
        targets = {tp: ends[tp] for tp in tps if ends[tp] > starts[tp]}
        source = {"bootstrap": opts.bootstrap, "start": "beginning" if opts.from_beginning else "now",
                  "start_offsets": {f"{tp.topic}/{tp.partition}": starts[tp] for tp in tps}}
        writer = RecordingWriter(opts.out, {t: parts[t] for t in opts.topics}, source=source)
        last_record = time.monotonic()
        total = 0
        while True:
            if stop.is_set():
                result.stopped = "signal"
                break
            now = time.monotonic()
            if opts.duration_s is not None and now - t0 >= opts.duration_s:
                result.stopped = "duration"
                break
            if opts.until_end and not targets:
                result.stopped = "end"
                break
            if opts.until_idle_s is not None and now - last_record >= opts.until_idle_s:
                result.stopped = "idle"
                break
            writer.maybe_flush()
            batches = await gapless_getmany(consumer, timeout_ms=200)
            for tp in sorted(batches, key=lambda tp: (tp.topic, tp.partition)):
                for r in batches[tp]:
                    writer.write(make_record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value,
                                             r.headers or (), r.timestamp_type or 0))
                    total += 1
                    last_record = time.monotonic()
                    if on_record is not None:
                        on_record(r.topic)
                    if tp in targets and r.offset + 1 >= targets[tp]:
                        del targets[tp]
                    if opts.max_records is not None and total >= opts.max_records:
                        break
                if opts.max_records is not None and total >= opts.max_records:
                    break
            if opts.max_records is not None and total >= opts.max_records:
                result.stopped = "max-records"
                break
    except asyncio.CancelledError:
        result.stopped = "cancelled"
        raise
    finally:
        if writer is not None:
            writer.close(result.stopped or "error")
            result.counts = Counter(writer.counts)
        result.elapsed_s = time.monotonic() - t0
        await consumer.stop()
    return result


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topics", required=True, help="comma-separated topics to record, e.g. "
                                                        "cluster.events,cluster.metrics")
    parser.add_argument("--out", required=True,
                        help="recording file (.gz: gzip JSON Lines; .zst: zstd, needs the zstandard package)")
    parser.add_argument("--bootstrap-servers", default=None,
                        help="Kafka bootstrap servers (default: $KUBETIDE_BOOTSTRAP, else kafka.bootstrap_servers)")
    parser.add_argument("--config", default=None, help="kubetide YAML config file (default: $KUBETIDE_CONFIG)")
    parser.add_argument("--embedded-broker", action="store_true",
                        default=os.environ.get("KUBETIDE_EMBEDDED_BROKER", "") in ("1", "true"),
                        help="the broker is kubetide's embedded broker")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", dest="from_beginning", action="store_true", default=True,
                       help="start at the first record of each partition (the default)")
    start.add_argument("--from-now", dest="from_beginning", action="store_false",
                       help="start at the end of each partition: record only new records")
    parser.add_argument("--until-end", action="store_true",
                        help="stop once every partition is read up to its end as it was at start")
    parser.add_argument("--until-idle", type=float, default=None, metavar="S",
                        help="stop after S seconds without a new record")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    parser.add_argument("--max-records", type=int, default=None, metavar="N", help="stop after N records")
    parser.add_argument("--quiet", action="store_true", help="no progress display and no summary")


def run(args: argparse.Namespace) -> int:
    from kubetide.config import ConfigError
    from workers.common import bootstrap_from, run_main

    names = [t.strip() for t in args.topics.split(",") if t.strip()]
    if not names:
        print("kubetide record: --topics names no topic", file=sys.stderr)
        return 2
    for flag, v in (("--until-idle", args.until_idle), ("--duration", args.duration),
                    ("--max-records", args.max_records)):
        if v is not None and v <= 0:
            print(f"kubetide record: {flag} must be > 0", file=sys.stderr)
            return 2
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        print(f"kubetide record: directory {out_dir} does not exist", file=sys.stderr)
        return 2
    try:
        bootstrap = bootstrap_from(args)
    except ConfigError as exc:
        print(f"kubetide record: {exc}", file=sys.stderr)
        return 2
    opts = RecordOptions(topics=names, out=args.out, bootstrap=bootstrap, from_beginning=args.from_beginning,
                         until_end=args.until_end, until_idle_s=args.until_idle, duration_s=args.duration,
                         max_records=args.max_records, embedded=args.embedded_broker)
    from rich.console import Console

    console = Console(stderr=True)
    holder: dict[str, RecordResult] = {}

    async def main(stop: asyncio.Event) -> int:
        if args.quiet:
            holder["r"] = await record(opts, stop)
            return 0
        from rich.live import Live

        live_counts: Counter[str] = Counter()

        def view() -> Any:
            total = sum(live_counts.values())
            per = ", ".join(f"{t}: {n}" for t, n in sorted(live_counts.items())) or "waiting for records"
            return f"recording to {args.out}: {total} records ({per}) — Ctrl-C to stop"

        with Live(view(), console=console, refresh_per_second=4, transient=True) as live:
            def on_record(topic: str) -> None:
                live_counts[topic] += 1
                if sum(live_counts.values()) % 100 == 0:
                    live.update(view())

            holder["r"] = await record(opts, stop, on_record=on_record)
        return 0

    from aiokafka.errors import KafkaError

    try:
        rc = run_main(main, "recorder")
    except LookupError as exc:
        print(f"kubetide record: {exc}", file=sys.stderr)
        return 2
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"kubetide record: cannot read from {bootstrap}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    res = holder.get("r")
    if res is None:
        return rc or 1
    if not args.quiet:
        from rich.table import Table

        t = Table(title="records per topic")
        t.add_column("topic")
        t.add_column("records", justify="right")
        for name in names:
            t.add_row(name, str(res.counts.get(name, 0)))
        t.add_row("total", str(sum(res.counts.values())))
        console.print(t)
        console.print(f"stopped: {res.stopped} after {res.elapsed_s:.1f}s; written to {args.out}", soft_wrap=True)
    return rc
