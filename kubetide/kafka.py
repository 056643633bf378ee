"""Kafka plumbing every kubetide process shares: topic creation, client settings, broker checks.

- :func:`ensure_topics` creates topics with their partition count, replication and configs
  (an existing topic is fine: error 36), then verifies through metadata that each exists with
  the partition count asked for.
- :func:`producer_config` / :func:`consumer_config`: aiokafka keyword arguments. On the
  embedded broker (Tansu 0.6.0) there is no idempotent producer and no transactions
  (InitProducerId fails with UnknownError), so idempotence stays off everywhere: kubetide is
  at-least-once, and consumers are idempotent on deterministic ids.
- :func:`topics_present` asks which topics exist **without creating any**. A Metadata request
  that names a topic auto-creates it on Tansu (4 partitions, no configs), and aiokafka sends
  ``allow_auto_topic_creation=True`` whenever it names topics (``AIOKafkaAdminClient.describe_topics``,
  a consumer's ``end_offsets``/subscription, a producer's send). Measured on Tansu 0.6.0
  (``tests/test_broker.py::test_metadata_auto_creation_behaviour``): with the flag False it answers
  UNKNOWN_TOPIC_OR_PARTITION (3) and creates nothing. This module does not rely on that: it asks
  for *all* topics (a null topic list) and filters locally, which creates nothing on any broker.
- :class:`BrokerRestartDetector`: the embedded broker keeps everything in memory, so a restart
  silently loses every topic, record and committed offset while clients reconnect as if
  nothing happened. The detector notices (a topic it relies on is gone, or its partitions'
  end offsets went backwards) so the worker can exit and be restarted cleanly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("kubetide.kafka")

TOPIC_ALREADY_EXISTS = 36


class TopicSpecLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def partitions(self) -> int: ...
    @property
    def configs(self) -> Mapping[str, str]: ...


class TopicSetupError(RuntimeError):
    """A topic could not be created, or exists with a different partition count."""


class BrokerRestartedError(RuntimeError):
    """The broker lost its state (restart of the in-memory embedded broker): restart this worker."""


# -- client settings -------------------------------------------------------------------------
def producer_config(bootstrap: str, embedded: bool, *, client_id: str | None = None, linger_ms: int = 5,
                    **overrides: Any) -> dict[str, Any]:
    """aiokafka ``AIOKafkaProducer`` kwargs: acks=all, no idempotence (the embedded broker has none).

    ``embedded`` is accepted so callers state which broker they talk to; the settings are the
    same either way today (idempotence off is also right for at-least-once on real Kafka).
    """
    cfg: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": linger_ms,
        "max_batch_size": 1 << 20,
        "request_timeout_ms": 30_000,
        "retry_backoff_ms": 100,
    }
    if client_id:
        cfg["client_id"] = client_id
    cfg.update(overrides)
    if embedded and cfg.get("enable_idempotence"):
        raise ValueError("the embedded broker has no idempotent producer (InitProducerId fails): "
                         "leave enable_idempotence off")
    return cfg


def consumer_config(bootstrap: str, embedded: bool, *, group_id: str | None = None, client_id: str | None = None,
                    auto_offset_reset: str = "earliest", **overrides: Any) -> dict[str, Any]:
    """aiokafka ``AIOKafkaConsumer`` kwargs for kubetide's plain (non-faust) consumers.

    Offsets are committed by the caller after processing (at-least-once). Session timeout 6 s /
    heartbeat 1 s: a joining member is held for session_timeout / 2 on the embedded broker, so
    the default 45-60 s sessions make start-up and failover take half a minute or more.
    """
    cfg: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "auto_offset_reset": auto_offset_reset,
        "enable_auto_commit": False,
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 1_000,
        "max_poll_interval_ms": 300_000,
        "isolation_level": "read_uncommitted",  # no transactions on the embedded broker
        "metadata_max_age_ms": 30_000,
    }
    if client_id:
        cfg["client_id"] = client_id
    cfg.update(overrides)
    return cfg


# -- metadata ------------------------------------------------------------------------------
async def _all_topics(admin: Any) -> dict[str, int]:
    """{topic: partition count} for every topic, from a Metadata request with a null topic list."""
    from aiokafka.protocol.metadata import MetadataRequest

    resp = await admin._send_request(MetadataRequest(None))
    out: dict[str, int] = {}
    for t in resp.to_object()["topics"]:
        if t["error_code"] == 0:
            out[t["topic"]] = len(t["partitions"])
    return out


async def _admin(bootstrap: str, timeout: float) -> Any:  # noqa: ASYNC109
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await asyncio.wait_for(admin.start(), timeout)
    return admin


async def topic_partitions(bootstrap: str, *, timeout: float = 10.0) -> dict[str, int]:  # noqa: ASYNC109
    """Every topic on the cluster with its partition count (creates nothing)."""
    admin = await _admin(bootstrap, timeout)
    try:
        return await asyncio.wait_for(_all_topics(admin), timeout)
    finally:
        await admin.close()


async def topics_present(bootstrap: str, names: Iterable[str], *, timeout: float = 10.0) -> set[str]:  # noqa: ASYNC109
    """Which of ``names`` exist. Never auto-creates a topic (asks for all topics, filters locally)."""
    wanted = set(names)
    return wanted & set(await topic_partitions(bootstrap, timeout=timeout))


# -- topic creation ------------------------------------------------------------------------------
async def ensure_topics(bootstrap: str, specs: Sequence[TopicSpecLike], *, replication: int = 1,
                        timeout: float = 30.0) -> dict[str, str]:  # noqa: ASYNC109
    """Create each topic that is missing, with its partitions and configs; verify them all.

    Returns ``{name: "created" | "exists"}``. Raises :class:`TopicSetupError` naming the topic
    if creation fails with anything but "already exists" (error 36), or if afterwards a topic is
    missing or has a partition count other than the one asked for (an existing topic is never
    altered: a partition-count mismatch has to be fixed by hand, since it changes key placement).
    """
    from aiokafka.admin import NewTopic

    if not specs:
        return {}
    admin = await _admin(bootstrap, timeout)
    try:
        existing = await asyncio.wait_for(_all_topics(admin), timeout)
        todo = [s for s in specs if s.name not in existing]
        result = {s.name: "exists" for s in specs if s.name in existing}
        if todo:
            new = [NewTopic(name=s.name, num_partitions=s.partitions, replication_factor=replication,
                            topic_configs={k: str(v) for k, v in s.configs.items()}) for s in todo]
            resp = await asyncio.wait_for(admin.create_topics(new, timeout_ms=int(timeout * 1000)), timeout)
            errors = []
            for item in resp.topic_errors:
                name, code = item[0], item[1]
                msg = item[2] if len(item) > 2 else None
                if code == 0:
                    result[name] = "created"
                elif code == TOPIC_ALREADY_EXISTS:
                    result[name] = "exists"
                else:
                    errors.append(f"{name}: error {code} {msg or ''}".strip())
            if errors:
                raise TopicSetupError(f"could not create topics on {bootstrap}: " + "; ".join(errors))
        # Verify: each exists with the partition count asked for (metadata may lag creation briefly).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            actual = await asyncio.wait_for(_all_topics(admin), timeout)
            problems = []
            for s in specs:
                if s.name not in actual:
                    problems.append(f"{s.name}: missing")
                elif actual[s.name] != s.partitions:
                    problems.append(f"{s.name}: has {actual[s.name]} partitions, expected {s.partitions}")
            if not problems:
                break
            if loop.time() > deadline or all("partitions" in p for p in problems):
                raise TopicSetupError(f"topics on {bootstrap} do not match kubetide's specs: " + "; ".join(problems)
                                      + " (a topic auto-created by the broker before `kubetide topics create` ran "
                                        "gets the broker's default partition count: delete it, or restart the "
                                        "embedded broker, and create the topics first)")
            await asyncio.sleep(0.1)
        for name, state in sorted(result.items()):
            log.debug("topic %s: %s", name, state)
        return result
    finally:
        await admin.close()


# -- broker restart detection ----------------------------------------------------------------
@dataclass
class RestartCheck:
    restarted: bool
    reason: str = ""


class BrokerRestartDetector:
    """Notice that the broker lost its state (the embedded broker keeps everything in memory).

    Call :meth:`baseline` once the topics exist, then :meth:`check` periodically (e.g. every
    few seconds, and whenever an offset commit fails with UnknownTopicOrPartitionError). A
    restart shows as: a topic the worker relies on is missing, its partition count changed, or a
    partition's end offset went backwards (records were lost). ``check`` never creates topics.
    End offsets are only compared when ``watch_offsets`` is true (it costs a ListOffsets request).
    """

    def __init__(self, bootstrap: str, topics: Iterable[str], *, watch_offsets: bool = True,
                 timeout: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.topics = sorted(set(topics))
        self.watch_offsets = watch_offsets
        self.timeout = timeout
        self._partitions: dict[str, int] = {}
        self._ends: dict[tuple[str, int], int] = {}

    async def baseline(self) -> None:
        parts = await topic_partitions(self.bootstrap, timeout=self.timeout)
        missing = [t for t in self.topics if t not in parts]
        if missing:
            raise BrokerRestartedError(f"topics missing on {self.bootstrap}: {', '.join(missing)}")
        self._partitions = {t: parts[t] for t in self.topics}
        self._ends = await self._end_offsets() if self.watch_offsets else {}

    async def check(self) -> RestartCheck:
        if not self._partitions:
            await self.baseline()
            return RestartCheck(False)
        parts = await topic_partitions(self.bootstrap, timeout=self.timeout)
        for t, n in self._partitions.items():
            if t not in parts:
                return RestartCheck(True, f"topic {t} disappeared from {self.bootstrap}")
            if parts[t] != n:
                return RestartCheck(True, f"topic {t} now has {parts[t]} partitions (was {n})")
        if self.watch_offsets:
            ends = await self._end_offsets()
            for tp, end in ends.items():
                before = self._ends.get(tp)
                if before is not None and end < before:
                    return RestartCheck(True, f"{tp[0]}[{tp[1]}] end offset went back from {before} to {end}")
            self._ends = ends
        return RestartCheck(False)

    async def raise_if_restarted(self) -> None:
        res = await self.check()
        if res.restarted:
            raise BrokerRestartedError(f"the broker lost its state ({res.reason}); restart this worker")

    async def _end_offsets(self) -> dict[tuple[str, int], int]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        tps = [TopicPartition(t, p) for t, n in self._partitions.items() for p in range(n)]
        if not tps:
            return {}
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                             request_timeout_ms=int(self.timeout * 1000))
        await c.start()
        try:
            ends = await asyncio.wait_for(c.end_offsets(tps), self.timeout)
        finally:
            await c.stop()
        return {(tp.topic, tp.partition): int(v) for tp, v in ends.items()}
