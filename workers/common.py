"""What the collector and the actuator share: CLI arguments, settings loading, Kafka clients,
signal handling."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kubetide import config as ktconfig
from kubetide.kafka import consumer_config, ensure_topics, producer_config
from kubetide.metrics import add_metrics_argument, start_worker_metrics
from kubetide.topics import spec

log = logging.getLogger("kubetide.workers")

T = TypeVar("T")


def worker_id(name: str) -> str:
    return f"{name}@{socket.gethostname()}:{os.getpid()}"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KUBETIDE_BOOTSTRAP"),
                        help="Kafka bootstrap servers (default: $KUBETIDE_BOOTSTRAP)")
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, then in-cluster config)")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: the current context)")
    parser.add_argument("--config", default=None, help="kubetide YAML config file (default: $KUBETIDE_CONFIG)")
    parser.add_argument("--embedded-broker", action="store_true",
                        default=os.environ.get("KUBETIDE_EMBEDDED_BROKER", "") in ("1", "true"),
                        help="the Kafka cluster is kubetide's embedded broker (Tansu); default "
                             "$KUBETIDE_EMBEDDED_BROKER")
    parser.add_argument("--no-create-topics", dest="create_topics", action="store_false",
                        help="do not create this worker's topics at start (they must exist)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: $KUBETIDE_LOG_LEVEL or INFO)")
    add_metrics_argument(parser)


def load_settings(args: argparse.Namespace, cls: type[T], section: str) -> T:
    """Build ``cls`` from the ``section`` of the config file (+ KUBETIDE__ env overrides)."""
    data = ktconfig.load(getattr(args, "config", None))
    return ktconfig.build(cls, ktconfig.section(data, section), section)


def bootstrap_from(args: argparse.Namespace) -> str:
    bootstrap = getattr(args, "bootstrap_servers", None)
    if not bootstrap:
        data = ktconfig.load(getattr(args, "config", None))
        bootstrap = ktconfig.section(data, "kafka").get("bootstrap_servers")
    if not bootstrap:
        raise ktconfig.ConfigError("no Kafka bootstrap servers: pass --bootstrap-servers or set KUBETIDE_BOOTSTRAP")
    return str(bootstrap)


async def make_producer(bootstrap: str, *, embedded: bool, client_id: str) -> Any:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**producer_config(bootstrap, embedded, client_id=client_id))
    await producer.start()
    return producer


def make_consumer(bootstrap: str, *, embedded: bool, group_id: str | None, client_id: str, **kw: Any) -> Any:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(**consumer_config(bootstrap, embedded, group_id=group_id, client_id=client_id, **kw))


async def create_topics(bootstrap: str, names: list[str]) -> None:
    result = await ensure_topics(bootstrap, [spec(n) for n in names])
    created = [n for n, s in result.items() if s == "created"]
    if created:
        log.info("created topics %s", ", ".join(sorted(created)))


def setup_logging_once(level: str | None) -> None:
    if not logging.getLogger().handlers:
        from kubetide.log import setup_logging

        setup_logging(level)


def run_main(main: Callable[[asyncio.Event], Awaitable[int]], name: str,
             args: argparse.Namespace | None = None) -> int:
    """Run ``main(stop_event)`` in a fresh event loop; SIGINT/SIGTERM set ``stop_event``.

    A second signal cancels the main task (hard stop). With ``args``, /metrics is served on
    ``args.metrics_port`` while it runs.
    """
    if args is not None:
        start_worker_metrics(name, getattr(args, "metrics_port", None))

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.current_task()
        hits = 0

        def on_signal(signame: str) -> None:
            nonlocal hits
            hits += 1
            if hits == 1:
                log.info("%s: %s received, shutting down", name, signame)
                stop.set()
            elif task is not None:
                log.warning("%s: second %s, stopping now", name, signame)
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal, sig.name)
        try:
            return await main(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    try:
        return asyncio.run(runner())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    finally:
        if args is not None:
            from kubetide import metrics

            metrics.set_worker_down()


def run_worker(args: argparse.Namespace, name: str, validate: Callable[[argparse.Namespace], object],
               amain: Callable[[argparse.Namespace, asyncio.Event], Awaitable[int]]) -> int:
    """The blocking entry point shared by the workers: exit 2 on configuration problems (with a
    clear message), 1 on a runtime failure, else what ``amain`` returns."""
    setup_logging_once(getattr(args, "log_level", None))
    try:  # configuration problems: a clear message, exit code 2
        validate(args)
        bootstrap_from(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:
        return run_main(lambda stop: amain(args, stop), name, args)
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 2
    except Exception as exc:
        from aiokafka.errors import KafkaError

        if isinstance(exc, KafkaError):
            log.error("%s: Kafka problem: %s", name, exc)
        else:
            log.exception("%s failed", name)
        return 1
