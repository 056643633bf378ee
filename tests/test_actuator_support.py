"""Helpers for the collector and actuator tests (no tests here).

Each test gets its own embedded broker (Tansu over TCP, ~0.2 s to start) with kubetide's topics
created, so tests never see each other's records, groups or offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kubetide.broker import EmbeddedBroker
from kubetide.codec import DecodeError, decode
from kubetide.kafka import ensure_topics, gapless_getmany, producer_config
from kubetide.topics import TOPICS


@pytest_asyncio.fixture
async def kafka(tmp_path) -> AsyncIterator[str]:
    """Bootstrap of a private embedded broker with every kubetide topic created."""
    b = EmbeddedBroker(log_file=tmp_path / "broker.log")
    await asyncio.to_thread(b.start)
    try:
        await ensure_topics(b.bootstrap, TOPICS)
        yield b.bootstrap
    finally:
        await asyncio.to_thread(b.stop)


@pytest_asyncio.fixture
async def producer(kafka: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(**producer_config(kafka, True))
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


class TopicReader:
    """Reads a whole topic from the beginning in the background, decoding each record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[tuple[bytes | None, Any]] = []  # (key, decoded message or raw bytes)
        self._task: asyncio.Task | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._new = asyncio.Event()

    async def __aenter__(self) -> TopicReader:
        c = self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await c.start()
        await c.topics()
        tps = [TopicPartition(self.topic, p) for p in sorted(c.partitions_for_topic(self.topic) or [])]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._loop())
        return self

    async def _loop(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await gapless_getmany(self._consumer, timeout_ms=100)
            for recs in batches.values():
                for r in recs:
                    try:
                        value: Any = decode(self.topic, r.value)
                    except DecodeError:
                        value = r.value
                    self.records.append((r.key, value))
            if batches:
                self._new.set()
                self._new = asyncio.Event()

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def matching(self, pred: Callable[[Any], bool]) -> list[Any]:
        return [v for _, v in self.records if pred(v)]

    async def wait_for(self, pred: Callable[[Any], bool], n: int = 1, within: float = 20.0) -> list[Any]:
        """The messages matching ``pred`` once there are at least ``n`` of them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            found = self.matching(pred)
            if len(found) >= n:
                return found
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"{self.topic}: {len(found)} of {n} expected messages after {within}s "
                                     f"({len(self.records)} records read)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), min(left, 0.5))


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a worker process with its output in ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


@contextlib.asynccontextmanager
async def running(coro_fn: Callable[[asyncio.Event], Any]) -> AsyncIterator[asyncio.Task]:
    """Run ``coro_fn(stop)`` as a task; on exit set stop and wait for it (bounded), re-raising its error."""
    stop = asyncio.Event()
    task = asyncio.create_task(coro_fn(stop))
    try:
        yield task
    finally:
        stop.set()
        done, _ = await asyncio.wait([task], timeout=20)
        if not done:
            task.cancel()
            raise AssertionError("worker did not stop within 20 s of being asked to")
    if task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
