"""`kubetide streams` / `python -m streams`: run one stream-processing worker.

Workers with the same ``--app-id`` form one consumer group; run more to scale out. The topics
must exist first (``kubetide topics create``); this command creates them too when asked with
``--create-topics``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from kubetide.metrics import add_metrics_argument, start_worker_metrics

log = logging.getLogger("kubetide.streams")

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def default_embedded(bootstrap: str | None) -> bool:
    """Embedded-broker workarounds on by default when every bootstrap host is on this machine.

    The embedded broker (Tansu) always runs on loopback; a real cluster almost never does. The
    workaround is harmless on a real Kafka (one extra small fetch per table recovery).
    ``$KUBETIDE_EMBEDDED`` (1/0) overrides this guess, and ``--[no-]embedded`` overrides both.
    """
    env = os.environ.get("KUBETIDE_EMBEDDED", "").strip().lower()
    if env:
        return env in ("1", "true", "yes", "on")
    if not bootstrap:
        return True
    hosts = [p.strip().split("://")[-1].rsplit(":", 1)[0] for p in bootstrap.split(",") if p.strip()]
    return all(h in LOOPBACK for h in hosts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KUBETIDE_BOOTSTRAP"),
                        help="Kafka bootstrap servers (default $KUBETIDE_BOOTSTRAP; required)")
    parser.add_argument("--config", default=os.environ.get("KUBETIDE_CONFIG"),
                        help="kubetide YAML config file (its `streams:` section; default $KUBETIDE_CONFIG)")
    parser.add_argument("--app-id", default="kubetide-streams",
                        help="faust app id = consumer group (default kubetide-streams)")
    parser.add_argument("--web-port", type=int, default=0,
                        help="port of the worker's web server with /metrics (default 0: a free port)")
    parser.add_argument("--data-dir", default=".kubetide/streams", help="faust data directory")
    parser.add_argument("--worker-id", default=None, help="name of this worker in dead letters and logs")
    parser.add_argument("--log-level", default=os.environ.get("KUBETIDE_LOG_LEVEL", "INFO"))
    add_metrics_argument(parser)
    parser.add_argument("--embedded", dest="embedded", action="store_true", default=None,
                        help="apply the embedded-broker workarounds (default: when every bootstrap host is "
                             "loopback, or $KUBETIDE_EMBEDDED)")
    parser.add_argument("--no-embedded", dest="embedded", action="store_false",
                        help="talk to a real Kafka cluster: no workarounds")
    parser.add_argument("--create-topics", action="store_true",
                        help="create kubetide's topics (ensure_topics) before starting")
    parser.add_argument("--ready-file", default=None,
                        help="write this JSON file once partitions are assigned and tables recovered")


def run(args: argparse.Namespace) -> int:
    from kubetide.config import ConfigError, load
    from kubetide.log import setup_logging

    setup_logging(args.log_level)
    if not args.bootstrap_servers:
        print("streams: give --bootstrap-servers or set KUBETIDE_BOOTSTRAP", file=sys.stderr)
        return 2
    embedded = default_embedded(args.bootstrap_servers) if args.embedded is None else args.embedded
    try:
        from streams.core.settings import StreamsSettings

        settings = StreamsSettings.from_config(load(args.config))
    except ConfigError as exc:
        print(f"streams: bad configuration: {exc}", file=sys.stderr)
        return 2
    if args.create_topics:
        from kubetide.kafka import ensure_topics
        from kubetide.topics import TOPICS

        asyncio.run(ensure_topics(args.bootstrap_servers, TOPICS))

    import faust

    from streams.app import create_app

    # faust.Worker runs its own loop; give it a fresh one (asyncio.run above closed its loop).
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app(args.bootstrap_servers, embedded=embedded, app_id=args.app_id, data_dir=args.data_dir,
                     web_port=args.web_port, config=settings, worker_id=args.worker_id, ready_file=args.ready_file)
    log.info("starting streams worker: bootstrap %s, embedded=%s, web port %s, strategies %s",
             args.bootstrap_servers, embedded, app.conf.web_port,
             ", ".join(f"{s.name}{'' if getattr(c, 'enabled', True) else ' (disabled)'}"
                       for s, c in settings.strategies))
    start_worker_metrics("streams", args.metrics_port)
    worker = faust.Worker(app, loglevel=args.log_level.upper(), override_logging=False, quiet=True,
                          redirect_stdouts=False)
    # faust.Worker handles SIGINT/SIGTERM itself: it stops the app (commits offsets, leaves the
    # group) and ends its loop.
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        log.info("streams worker stopped (exit %s)", code)
        return code
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams", description="run a kubetide stream worker")
    add_arguments(parser)
    return run(parser.parse_args(argv))
