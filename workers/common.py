"""What the collector and the actuator share: CLI arguments, settings loading, Kafka clients,
signal handling, and surviving a broker that lost its state.

Broker restarts (:class:`BrokerWatch`, :func:`run_sessions`): the embedded broker keeps everything
in memory, and after a restart clients do not notice (writes to vanished topics seem to succeed,
commits fail forever). While a worker runs, a :class:`~kubetide.kafka.BrokerRestartDetector`
checks every ``--broker-check-interval`` seconds (default 5 on the embedded broker or a loopback
bootstrap, else off; ``$KUBETIDE_BROKER_CHECK_S``) that the worker's topics still exist with their
partition counts and that no partition's end offset went back. When the broker lost its state: the
loss (records per topic at the last check) is logged at ERROR and counted
(``kubetide_broker_restarts_total``, ``kubetide_broker_records_lost_total``), the topics are created
again (:func:`~kubetide.kafka.recreate_topics`), and the worker's session — its Kafka clients and
consumer group membership — is stopped and started again (rejoin). What must outlive a session
(the actuator's applied decision ids, ledger and rate limits) is handed from one session to the next.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
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
    parser.add_argument("--broker-check-interval", type=float, default=None, metavar="SECONDS",
                        help="check every SECONDS that the broker has not lost its state (restart of the "
                             "in-memory embedded broker); 0 = never (default $KUBETIDE_BROKER_CHECK_S, else 5 on "
                             "the embedded broker or a loopback bootstrap, else 0)")
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
        from kubetide.kafka import configure_security

        configure_security(getattr(args, "config", None))  # the kafka: section's TLS / SASL for every client
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


# -------------------------------------------------------------------- broker restarts

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def broker_check_interval(args: argparse.Namespace, bootstrap: str) -> float:
    """Seconds between broker-restart checks (0 = off): ``--broker-check-interval``, else
    ``$KUBETIDE_BROKER_CHECK_S``, else 5 on the embedded broker (``--embedded-broker`` or every
    bootstrap host on loopback), else 0."""
    explicit = getattr(args, "broker_check_interval", None)
    if explicit is not None:
        return max(0.0, float(explicit))
    env = os.environ.get("KUBETIDE_BROKER_CHECK_S", "").strip()
    if env:
        try:
            return max(0.0, float(env))
        except ValueError:
            raise ValueError(f"KUBETIDE_BROKER_CHECK_S={env!r}: not a number of seconds") from None
    hosts = [p.strip().split("://")[-1].rsplit(":", 1)[0] for p in bootstrap.split(",") if p.strip()]
    local = bool(hosts) and all(h in LOOPBACK for h in hosts)
    return 5.0 if getattr(args, "embedded_broker", False) or local else 0.0


class BrokerWatch:
    """Notices that the broker lost its state, reports the loss and creates the topics again.

    ``restarts``, ``lost`` (records per topic, cumulative) and ``events`` (one dict per restart:
    reason, lost, detected_at) say what happened.
    """

    def __init__(self, bootstrap: str, topics: Iterable[str], *, worker: str, interval_s: float = 5.0) -> None:
        from kubetide.kafka import EPOCH_TOPIC, BrokerRestartDetector

        self.bootstrap, self.worker, self.interval_s = bootstrap, worker, interval_s
        self.topics = sorted(set(topics))
        self.detector = BrokerRestartDetector(bootstrap, self.topics, exact_ends=True, epoch_topic=EPOCH_TOPIC)
        self.restarts = 0
        self.lost: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []

    async def baseline(self, stop: asyncio.Event | None = None) -> None:
        """Take the baseline (creating missing topics); retried while the broker cannot be reached."""
        while True:
            try:
                await self.detector.baseline()
                return
            except Exception as exc:
                from kubetide.kafka import BrokerRestartedError

                if isinstance(exc, BrokerRestartedError):  # topics missing: create them, then measure
                    await create_topics(self.bootstrap, self.topics)
                    continue
                log.warning("%s: cannot read the broker's topics yet (%s); retrying", self.worker, exc)
                if stop is not None and stop.is_set():
                    return
                await asyncio.sleep(min(self.interval_s, 2.0))

    async def check_once(self) -> str | None:
        """One check; when the broker lost its state, handle it and return the reason."""
        res = await self.detector.check()
        if not res.restarted:
            return None
        await self._handle(res.reason)
        return res.reason

    async def _handle(self, reason: str) -> None:
        from kubetide import metrics
        from kubetide.kafka import recreate_topics

        lost = {t: n for t, n in self.detector.records_held().items() if n > 0}
        self.restarts += 1
        self.lost.update(lost)
        self.events.append({"reason": reason, "lost": lost, "detected_at": time.time()})
        metrics.observe_broker_restart(lost)
        log.error("%s: the Kafka broker at %s lost its state (%s): %d records it held are lost (%s); creating "
                  "the topics again and rejoining", self.worker, self.bootstrap, reason, sum(lost.values()),
                  ", ".join(f"{t} {n}" for t, n in sorted(lost.items())) or "none written yet")
        while True:
            try:
                result = await recreate_topics(self.bootstrap, [spec(t) for t in self.topics])
                log.info("%s: topics after the broker restart: %s", self.worker,
                         ", ".join(f"{t} {s}" for t, s in sorted(result.items())))
                await self.detector.baseline()
                return
            except Exception as exc:
                log.warning("%s: cannot create the topics again yet (%s); retrying", self.worker, exc)
                await asyncio.sleep(1.0)

    async def wait_restart(self, stop: asyncio.Event) -> str | None:
        """Check every ``interval_s`` until the broker lost its state (handled; returns the reason) or
        ``stop`` is set (returns None). While the broker cannot be reached, keep checking."""
        failures = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s if not failures else min(self.interval_s, 1.0))
            if stop.is_set():
                return None
            try:
                reason = await self.check_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker down, restarting: cannot tell yet
                failures += 1
                if failures in (1, 10) or failures % 60 == 0:
                    log.warning("%s: broker check failed (%d in a row): %s", self.worker, failures, exc)
                continue
            if reason is not None:
                return reason
        return None


async def run_sessions(name: str, bootstrap: str, topics: Iterable[str],
                       session: Callable[[asyncio.Event], Awaitable[int]], stop: asyncio.Event, *,
                       interval_s: float, watch: BrokerWatch | None = None) -> int:
    """Run ``session(session_stop)`` until ``stop``; when the broker lost its state, stop the session,
    report the loss, create the topics again and start a new session (new clients: rejoin).

    A session that fails is checked against the broker once: a failure caused by a restart (commits
    failing, unknown topics) starts a new session; any other failure is raised. ``interval_s`` <= 0:
    no checks, the session simply runs.
    """
    if interval_s <= 0:
        return await session(stop)
    watch = watch or BrokerWatch(bootstrap, topics, worker=name, interval_s=interval_s)
    await watch.baseline(stop)
    while not stop.is_set():
        session_stop = asyncio.Event()
        relay = asyncio.create_task(_relay(stop, session_stop), name="stop-relay")
        sess = asyncio.create_task(session(session_stop), name=f"{name}-session")
        checker = asyncio.create_task(watch.wait_restart(session_stop), name="broker-watch")
        try:
            done, _ = await asyncio.wait({sess, checker}, return_when=asyncio.FIRST_COMPLETED)
            if sess in done:
                checker.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await checker
                exc = sess.exception()
                if exc is None:
                    return sess.result()
                try:
                    reason = await watch.check_once()
                except Exception:
                    reason = None
                if reason is None:
                    raise exc
                log.warning("%s: the session ended (%s) because the broker lost its state; starting again",
                            name, exc)
                continue
            if checker.result() is None:  # stopped
                return await sess
            log.warning("%s: restarting the Kafka session after the broker restart", name)
            session_stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(sess), 60)
            except Exception as exc:
                log.info("%s: the old session ended with %s", name, describe_exc(exc))
                sess.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sess
        finally:
            relay.cancel()
    return 0


def describe_exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _relay(src: asyncio.Event, dst: asyncio.Event) -> None:
    await src.wait()
    dst.set()
