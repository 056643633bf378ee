"""``kubetide.kafka.gapless_getmany``: a reader never moves past an offset it has not returned.

On the embedded broker a record written by one producer can be readable before an earlier-offset
record a second producer wrote concurrently to the same partition; a plain reader then jumps over
the late records for good. The logic tests drive the guard with a scripted fetch sequence; the
broker test tails one partition while several producers write it and requires every record, in
offset order, without holes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kubetide.kafka import consumer_config, ensure_topics, forget_gaps, gap_stats, gapless_getmany, producer_config
from tests.broker_fixtures import BrokerHandle, broker  # noqa: F401

TP = TopicPartition("t", 0)


@dataclass
class Rec:
    offset: int


class Scripted:
    """A consumer whose fetches follow a script of readable offsets, honouring seeks like aiokafka."""

    def __init__(self, log: list[int], visible: list[set[int]]) -> None:
        self.log, self.visible, self.pos, self.fetches, self.seeks = log, visible, 0, 0, []

    async def getmany(self, *tps: Any, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Rec]]:
        vis = self.visible[min(self.fetches, len(self.visible) - 1)]
        self.fetches += 1
        recs = [Rec(o) for o in self.log if o >= self.pos and o in vis][: max_records or None]
        if recs:
            self.pos = recs[-1].offset + 1
        return {TP: recs} if recs else {}

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append(offset)
        self.pos = offset


async def read_all(c: Scripted, fetches: int, **kw: Any) -> list[int]:
    out: list[int] = []
    for _ in range(fetches):
        for recs in (await gapless_getmany(c, **kw)).values():
            out += [r.offset for r in recs]
    return out


async def test_a_jump_is_read_again_once_the_records_are_readable() -> None:
    log = list(range(10))
    # offsets 3 and 4 become readable only on the third fetch; a plain reader would never see them
    c = Scripted(log, [set(range(3)), set(log) - {3, 4}, set(log)])
    assert await read_all(c, 4) == log
    assert c.seeks == [3]
    assert gap_stats(c) == {"gaps": 1, "refetched": 1, "allowed": 0}


async def test_a_hole_that_stays_is_let_through_after_the_settle_time() -> None:
    log = [0, 1, 2, 5, 6]  # a compacted topic: 3 and 4 never come back
    c = Scripted(log, [set(log)])
    got = await read_all(c, 3, settle_s=0.05)
    assert got == [0, 1, 2]  # held while the hole may still fill
    await asyncio.sleep(0.06)
    got += await read_all(c, 2, settle_s=0.05)
    assert got == log
    assert gap_stats(c)["allowed"] == 1


async def test_a_seek_back_or_a_forgotten_partition_restarts_tracking() -> None:
    log = list(range(6))
    c = Scripted(log, [set(log)])
    assert await read_all(c, 1) == log
    c.seek(TP, 2)  # the caller re-reads: not a gap
    assert await read_all(c, 1) == [2, 3, 4, 5]
    forget_gaps(c, [TP])
    c.log, c.visible = list(range(20)), [set(range(20))]
    c.seek(TP, 15)  # the caller moves forward (e.g. a rebalance to a committed offset)
    assert await read_all(c, 1) == [15, 16, 17, 18, 19]
    assert gap_stats(c)["gaps"] == 0


async def test_tailing_a_partition_several_producers_write(broker: BrokerHandle) -> None:  # noqa: F811
    topic = broker.unique("gapless")
    await ensure_topics(broker.bootstrap, [_Spec(topic)])
    tp = TopicPartition(topic, 0)
    writers, per_writer = 6, 1500
    c = AIOKafkaConsumer(**consumer_config(broker.bootstrap, broker.embedded, group_id=None, fetch_max_wait_ms=20))
    await c.start()
    c.assign([tp])
    await c.seek_to_beginning(tp)
    done = asyncio.Event()
    offsets: list[int] = []
    values: list[bytes] = []

    async def read() -> None:
        idle = 0
        while idle < 10:
            got = await gapless_getmany(c, timeout_ms=100)
            if not got:
                idle += done.is_set()
            for r in got.get(tp, []):
                offsets.append(r.offset)
                values.append(r.value)

    async def write(i: int) -> None:
        p = AIOKafkaProducer(**producer_config(broker.bootstrap, broker.embedded, linger_ms=2))
        await p.start()
        try:
            for k in range(per_writer):
                await p.send(topic, f"{i}-{k}".encode(), partition=0)
                if k % 5 == 0:
                    await asyncio.sleep(0.002)
            await p.flush()
        finally:
            await p.stop()

    reader = asyncio.create_task(read())
    try:
        await asyncio.gather(*(write(i) for i in range(writers)))
        done.set()
        await asyncio.wait_for(reader, 60)
    finally:
        reader.cancel()
        await c.stop()
    assert offsets == list(range(writers * per_writer)), "a hole or a repeat in what the reader returned"
    assert len(set(values)) == writers * per_writer
    assert gap_stats(c)["allowed"] == 0


@dataclass(frozen=True)
class _Spec:
    name: str
    partitions: int = 1
    configs: dict[str, str] = field(default_factory=dict)


def test_hole_clock_settles_forces_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetide import kafka

    now = [100.0]
    monkeypatch.setattr(kafka.time, "monotonic", lambda: now[0])
    h = kafka.HoleClock(cap=3)
    assert h.settled("tp", 5, 2.0) == (False, 0.0)
    now[0] += 1.5
    assert h.settled("tp", 5, 2.0) == (False, 1.5)
    now[0] += 0.5
    assert h.settled("tp", 5, 2.0) == (True, 2.0) and not h.first_seen  # let through, then forgotten
    assert h.settled("tp", 9, 2.0, force=True) == (True, 0.0)
    for off in range(5):
        h.settled("tp", off, 2.0)
    assert len(h.first_seen) <= 3
