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
- :func:`gapless_getmany`: ``consumer.getmany`` that never moves past an offset it has not
  returned. On the embedded broker, a record written by one producer can become readable before
  an earlier-offset record a second producer wrote concurrently to the same partition (measured:
  4 producers tailing one partition, a reader jumped 388 → 399; the 10 records are readable a
  moment later). Every plain consumer reads through it; faust's consumers get the same guard
  from :mod:`kubetide.faustfix`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Protocol

log = logging.getLogger("kubetide.kafka")

TOPIC_ALREADY_EXISTS = 36


#: How long an offset jump may persist before a reader accepts it as a real hole (compaction,
#: transaction markers) rather than records not yet readable on the broker.
GAP_SETTLE_S = 5.0


class HoleClock:
    """How long each offset hole (partition, first missing offset) has been seen, for the readers that
    hold records back until a hole fills or settles (:func:`gapless_getmany` and
    :func:`kubetide.faustfix.guarded_getmany`). Bounded: it forgets everything past ``cap`` holes."""

    def __init__(self, cap: int = 10_000) -> None:
        self.first_seen: dict[tuple[Any, int], float] = {}  # (tp, first missing offset) -> monotonic time
        self.cap = cap

    def settled(self, tp: Any, missing: int, settle_s: float, *, force: bool = False) -> tuple[bool, float]:
        """(whether the hole at ``missing`` has lasted ``settle_s`` — or ``force`` — and is to be let
        through, its age in seconds: 0.0 at its first sighting). A settled hole is forgotten."""
        now = time.monotonic()
        key = (tp, missing)
        age = now - self.first_seen.setdefault(key, now)
        if force or age >= settle_s:
            del self.first_seen[key]
            return True, age
        if len(self.first_seen) > self.cap:
            self.first_seen.clear()
        return False, age

    def clear(self) -> None:
        self.first_seen.clear()


@dataclass
class _GapState:
    read: dict[Any, int]  # tp -> last offset returned
    holes: HoleClock
    stats: dict[str, int]


def gap_stats(consumer: Any) -> dict[str, int]:
    """{"gaps", "refetched", "allowed"} of a consumer read through :func:`gapless_getmany`."""
    st = getattr(consumer, "_kt_gaps", None)
    return dict(st.stats) if st else {"gaps": 0, "refetched": 0, "allowed": 0}


def forget_gaps(consumer: Any, tps: Iterable[Any] | None = None) -> None:
    """Stop comparing ``tps`` (all partitions when None) with the offsets read before: call it after
    seeking a partition forward or when a rebalance assigns partitions."""
    st: _GapState | None = getattr(consumer, "_kt_gaps", None)
    if st is None:
        return
    if tps is None:
        st.read.clear()
        st.holes.clear()
        return
    for tp in tps:
        st.read.pop(tp, None)


async def gapless_getmany(consumer: Any, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None,
                          settle_s: float = GAP_SETTLE_S) -> dict[Any, list[Any]]:
    """``consumer.getmany(...)`` that returns each partition's records without holes.

    When a partition's next record is beyond the last one returned + 1, its records are held back
    and the partition is sought back to the first missing offset, so the next call reads the
    missing records once the broker serves them. A hole that persists for ``settle_s`` is real
    (a compacted or transactional topic) and is let through with a WARNING. A seek by the caller
    (``seek``, ``seek_to_beginning``, a rebalance) restarts tracking: this only compares records
    against the position they were fetched from.
    """
    st: _GapState | None = getattr(consumer, "_kt_gaps", None)
    if st is None:
        st = _GapState({}, HoleClock(), {"gaps": 0, "refetched": 0, "allowed": 0})
        consumer._kt_gaps = st
    batches = await consumer.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
    out: dict[Any, list[Any]] = {}
    for tp, recs in batches.items():
        if not recs:
            continue
        last = st.read.get(tp)
        first = recs[0].offset
        if last is not None and first <= last:  # the caller sought back (or a rebalance did): start again
            last = None
        keep: list[Any] = []
        for r in recs:
            if last is not None and r.offset > last + 1:
                st.stats["gaps"] += 1
                settled, age = st.holes.settled(tp, last + 1, settle_s)
                if not settled:
                    st.stats["refetched"] += 1
                    log.debug("offset jump on %s: last read %d, next %d: reading %d again", tp, last, r.offset,
                              last + 1)
                    consumer.seek(tp, last + 1)
                    break
                st.stats["allowed"] += 1
                log.warning("offset gap on %s: offsets %d..%d were not readable for %.0f s: skipping them",
                            tp, last + 1, r.offset - 1, age)
            keep.append(r)
            last = r.offset
        if keep:
            out[tp] = keep
            st.read[tp] = keep[-1].offset
    return out


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


# -- security (TLS, SASL) ---------------------------------------------------------------------
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaSettings:
    """The ``kafka:`` section of the config file: where the brokers are and how to reach them.

    ``security_protocol`` as Kafka names it. TLS (``SSL`` / ``SASL_SSL``): ``ssl_cafile`` verifies the
    brokers (else the system CAs), ``ssl_certfile`` + ``ssl_keyfile`` (and ``ssl_password`` for an
    encrypted key) authenticate this client (mutual TLS). SASL (``SASL_PLAINTEXT`` / ``SASL_SSL``):
    ``sasl_mechanism`` PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with ``sasl_username`` /
    ``sasl_password``. Every key can come from the environment, e.g.
    ``KUBETIDE__KAFKA__SASL_PASSWORD`` (see kubetide/config.py). Bad combinations (SASL settings
    without a SASL protocol, a key file without its certificate, a file that does not exist, ...)
    fail at start with a message naming the field.
    """

    bootstrap_servers: str | None = None
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def validate(self) -> None:
        ssl_fields = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password")
        if not self.uses_ssl:
            given = [f for f in ssl_fields if getattr(self, f)]
            if given:
                raise ValueError(f"{given[0]}: TLS settings need security_protocol SSL or SASL_SSL "
                                 f"(is {self.security_protocol})")
        if not self.uses_sasl:
            given = [f for f in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, f)]
            if given:
                raise ValueError(f"{given[0]}: SASL settings need security_protocol SASL_PLAINTEXT or SASL_SSL "
                                 f"(is {self.security_protocol})")
        else:
            if not self.sasl_mechanism:
                raise ValueError(f"sasl_mechanism: required with security_protocol {self.security_protocol} "
                                 "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(f"sasl_username: {self.sasl_mechanism} needs sasl_username and sasl_password")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("ssl_keyfile: given without ssl_certfile (the client certificate)")
        if self.ssl_password and not self.ssl_keyfile:
            raise ValueError("ssl_password: given without ssl_keyfile")
        for f in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, f)
            if path and not Path(path).is_file():
                raise ValueError(f"{f}: file {path} does not exist")

    def ssl_context(self) -> Any:
        """An ``ssl.SSLContext`` for TLS protocols (None otherwise)."""
        if not self.uses_ssl:
            return None
        from aiokafka.helpers import create_ssl_context

        ctx = create_ssl_context(cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile,
                                 password=self.ssl_password)
        ctx.check_hostname = self.ssl_check_hostname
        return ctx

    def client_kwargs(self) -> dict[str, Any]:
        """aiokafka keyword arguments (producer, consumer, admin client) for these settings."""
        out: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_ssl:
            out["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            out["sasl_mechanism"] = self.sasl_mechanism
            out["sasl_plain_username"] = self.sasl_username
            out["sasl_plain_password"] = self.sasl_password
        return out

    def faust_settings(self) -> dict[str, Any]:
        """``faust.App`` keyword arguments: ``broker_credentials`` (SASL or TLS credentials); {} for PLAINTEXT."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        import faust

        if self.uses_sasl:
            return {"broker_credentials": faust.SASLCredentials(
                username=self.sasl_username, password=self.sasl_password, ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism)}
        return {"broker_credentials": faust.SSLCredentials(self.ssl_context())}

    def __repr__(self) -> str:  # never print secrets
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for secret in ("ssl_password", "sasl_password"):
            if shown[secret] is not None:
                shown[secret] = "***"
        return "KafkaSettings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def kafka_settings(config: Mapping[str, Any] | None = None) -> KafkaSettings:
    """Build and validate the ``kafka:`` section (config mapping from :func:`kubetide.config.load`;
    None = load it now from ``$KUBETIDE_CONFIG`` and the environment)."""
    from kubetide import config as ktconfig

    data = ktconfig.load() if config is None else config
    return ktconfig.build(KafkaSettings, ktconfig.section(data, "kafka"), "kafka")


_default: dict[str, Any] = {}  # explicit (configure_security called with a path), key, settings


def configure_security(config_path: str | Path | None = None) -> KafkaSettings:
    """Load the ``kafka:`` section from ``config_path`` (else ``$KUBETIDE_CONFIG``) + environment and
    make it the security every client built by this module uses; returns it."""
    from kubetide import config as ktconfig

    settings = kafka_settings(ktconfig.load(config_path))
    _default.update(explicit=config_path is not None, key=_env_key(), settings=settings)
    return settings


def _env_key() -> tuple:
    return (os.environ.get("KUBETIDE_CONFIG") or "",
            tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("KUBETIDE__KAFKA__"))))


def default_security() -> dict[str, Any]:
    """aiokafka security kwargs of this process ({} for PLAINTEXT): those of the last
    :func:`configure_security` with a path, else the ``kafka:`` section of ``$KUBETIDE_CONFIG`` and
    ``KUBETIDE__KAFKA__*`` (reloaded when those variables change)."""
    if not _default or (not _default["explicit"] and _default["key"] != _env_key()):
        configure_security(None)
    settings: KafkaSettings = _default["settings"]
    return settings.client_kwargs() if settings.security_protocol != "PLAINTEXT" else {}


def client_security_from_config(config_path: str | Path | None = None) -> dict[str, Any]:
    """aiokafka security kwargs from a config file (+ environment); {} for PLAINTEXT."""
    from kubetide import config as ktconfig

    settings = kafka_settings(ktconfig.load(config_path))
    return settings.client_kwargs() if settings.security_protocol != "PLAINTEXT" else {}


# -- client settings -------------------------------------------------------------------------
def producer_config(bootstrap: str, embedded: bool, *, client_id: str | None = None, linger_ms: int = 5,
                    security: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """aiokafka ``AIOKafkaProducer`` kwargs: acks=all, no idempotence (the embedded broker has none).

    ``security``: TLS/SASL kwargs (:meth:`KafkaSettings.client_kwargs`); None = this process's
    (:func:`default_security`: the ``kafka:`` section of the config file and environment).

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
    cfg.update(default_security() if security is None else security)
    cfg.update(overrides)
    if embedded and cfg.get("enable_idempotence"):
        raise ValueError("the embedded broker has no idempotent producer (InitProducerId fails): "
                         "leave enable_idempotence off")
    return cfg


def consumer_config(bootstrap: str, embedded: bool, *, group_id: str | None = None, client_id: str | None = None,
                    auto_offset_reset: str = "earliest", security: Mapping[str, Any] | None = None,
                    **overrides: Any) -> dict[str, Any]:
    """aiokafka ``AIOKafkaConsumer`` kwargs for kubetide's plain (non-faust) consumers (``security`` as
    for :func:`producer_config`).

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
    cfg.update(default_security() if security is None else security)
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

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000),
                                **default_security())
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
                 timeout: float = 10.0, exact_ends: bool = False, epoch_topic: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.topics = sorted(set(topics))
        self.watch_offsets = watch_offsets
        self.timeout = timeout
        #: take end offsets from fetch high-water marks (:func:`highwaters`), right on the embedded broker
        self.exact_ends = exact_ends
        #: a topic whose first record names the broker's incarnation (:func:`broker_epoch`): a restart is
        #: seen even when another client re-created the worker's topics first and they held nothing
        self.epoch_topic = epoch_topic
        self._epoch: str | None = None
        self._partitions: dict[str, int] = {}
        self._ends: dict[tuple[str, int], int] = {}

    async def baseline(self) -> None:
        parts = await topic_partitions(self.bootstrap, timeout=self.timeout)
        missing = [t for t in self.topics if t not in parts]
        if missing:
            raise BrokerRestartedError(f"topics missing on {self.bootstrap}: {', '.join(missing)}")
        self._partitions = {t: parts[t] for t in self.topics}
        self._ends = await self._end_offsets() if self.watch_offsets else {}
        if self.epoch_topic:
            self._epoch = await broker_epoch(self.bootstrap, self.epoch_topic, timeout=self.timeout)

    async def check(self) -> RestartCheck:
        if not self._partitions:
            await self.baseline()
            return RestartCheck(False)
        if self.epoch_topic and self._epoch is not None:
            epoch = await broker_epoch(self.bootstrap, self.epoch_topic, timeout=self.timeout)
            if epoch != self._epoch:
                return RestartCheck(True, f"the broker's incarnation changed ({self.epoch_topic}: {self._epoch[:8]} "
                                          f"→ {epoch[:8]})")
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

    def records_held(self) -> dict[str, int]:
        """Records per topic at the last check (end offsets; all of them are lost if the broker restarts)."""
        out: dict[str, int] = {}
        for (topic, _p), end in self._ends.items():
            out[topic] = out.get(topic, 0) + end
        return out

    async def raise_if_restarted(self) -> None:
        res = await self.check()
        if res.restarted:
            raise BrokerRestartedError(f"the broker lost its state ({res.reason}); restart this worker")

    async def _end_offsets(self) -> dict[tuple[str, int], int]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        tps = [TopicPartition(t, p) for t, n in self._partitions.items() for p in range(n)]
        if not tps:
            return {}
        if self.exact_ends:
            return await highwaters(self.bootstrap, tps, timeout=self.timeout)
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, **default_security(),
                             request_timeout_ms=int(self.timeout * 1000))
        await c.start()
        try:
            ends = await asyncio.wait_for(c.end_offsets(tps), self.timeout)
        finally:
            await c.stop()
        return {(tp.topic, tp.partition): int(v) for tp, v in ends.items()}


async def highwaters(bootstrap: str, tps: Sequence[Any], *, timeout: float = 10.0) -> dict[tuple[str, int], int]:  # noqa: ASYNC109
    """End offset of each partition from a fetch response's high-water mark.

    The embedded broker answers ListOffsets(latest) with the base offset of the last record batch + 1
    (BROKER-NOTES, bug 1); fetching from there returns that batch and the right high-water mark. A
    partition whose high-water does not come back within ``timeout`` keeps the ListOffsets answer.
    """
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         request_timeout_ms=int(timeout * 1000), fetch_max_wait_ms=50,
                         max_partition_fetch_bytes=64 * 1024, **default_security())
    await c.start()
    try:
        ends = await asyncio.wait_for(c.end_offsets(list(tps)), timeout)
        out = {(tp.topic, tp.partition): int(v) for tp, v in ends.items()}
        todo = [tp for tp, v in ends.items() if v > 0]
        if todo:
            c.assign(todo)
            for tp in todo:
                c.seek(tp, max(0, ends[tp] - 1))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            pending = set(todo)
            while pending and loop.time() < deadline:
                await c.getmany(*pending, timeout_ms=100)
                for tp in list(pending):
                    hw = c.highwater(tp)
                    if hw is not None:
                        out[(tp.topic, tp.partition)] = max(int(hw), out[(tp.topic, tp.partition)])
                        pending.discard(tp)
        return out
    finally:
        await c.stop()


async def recreate_topics(bootstrap: str, specs: Sequence[TopicSpecLike], *, timeout: float = 30.0) -> dict[str, str]:  # noqa: ASYNC109
    """After the broker lost its state: create the topics again; a topic the broker auto-created in the
    meantime (a client asked for it first) with another partition count is deleted and created again
    (it holds nothing worth keeping: it was created empty moments ago). Returns ensure_topics' answer,
    with ``"recreated"`` for the topics deleted first."""
    admin = await _admin(bootstrap, timeout)
    try:
        existing = await asyncio.wait_for(_all_topics(admin), timeout)
        wrong = [s.name for s in specs if s.name in existing and existing[s.name] != s.partitions]
        if wrong:
            log.warning("topics auto-created with the wrong partition count after the broker restart: %s; "
                        "deleting and creating them again", ", ".join(wrong))
            await asyncio.wait_for(admin.delete_topics(wrong, timeout_ms=int(timeout * 1000)), timeout)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while set(wrong) & set(await _all_topics(admin)) and loop.time() < deadline:
                await asyncio.sleep(0.1)
    finally:
        await admin.close()
    result = await ensure_topics(bootstrap, specs, timeout=timeout)
    for name in wrong:
        result[name] = "recreated"
    return result


# -- faust workers: broker restart → report, recreate topics, re-exec -----------------------------
RESTARTS_ENV = "KUBETIDE_BROKER_RESTARTS"  # JSON list of {"reason", "lost"} carried across a re-exec


def add_restart_watch(app: Any, bootstrap: str, topic_names: Iterable[str], *, interval_s: float = 5.0,
                      worker: str = "streams") -> None:
    """Check every ``interval_s`` (a faust timer on every worker) that the broker has not lost its state.

    When it has (restart of the in-memory embedded broker: faust would go on re-reading from offset 0
    over its in-memory state, with commits failing): log the loss at ERROR, count it
    (``kubetide_broker_restarts_total`` / ``kubetide_broker_records_lost_total``), create the topics
    again, and re-execute this process (same pid and command line: a fresh faust app that rejoins its
    group and recovers its tables from the new, empty changelogs). The counts survive the re-exec
    (``$KUBETIDE_BROKER_RESTARTS``). ``interval_s`` <= 0: nothing is installed.
    """
    import json
    import sys

    if interval_s <= 0:
        return
    from kubetide import metrics
    from kubetide.topics import spec

    names = sorted(set(topic_names))
    history = json.loads(os.environ.get(RESTARTS_ENV) or "[]")
    for event in history:  # what earlier incarnations of this process saw
        metrics.observe_broker_restart(event.get("lost") or {})
    state: dict[str, Any] = {"detector": None}

    @app.timer(interval_s, name=f"{worker}-broker-watch")
    async def _check_broker() -> None:
        det = state["detector"]
        try:
            if det is None:
                det = BrokerRestartDetector(bootstrap, names, exact_ends=True, epoch_topic=EPOCH_TOPIC)
                await det.baseline()
                state["detector"] = det
                return
            res = await det.check()
        except Exception as exc:  # broker unreachable, or topics not there yet: try again next time
            log.debug("broker check: %s", exc)
            return
        if not res.restarted:
            return
        lost = {t: n for t, n in det.records_held().items() if n > 0}
        metrics.observe_broker_restart(lost)
        log.error("%s: the Kafka broker at %s lost its state (%s): %d records it held are lost (%s); creating the "
                  "topics again and restarting this worker to rejoin", worker, bootstrap, res.reason,
                  sum(lost.values()), ", ".join(f"{t} {n}" for t, n in sorted(lost.items())) or "none written yet")
        for attempt in range(30):
            try:
                await recreate_topics(bootstrap, [spec(t) for t in names])
                break
            except Exception as exc:
                log.warning("cannot create the topics again yet (%s); attempt %d", exc, attempt + 1)
                await asyncio.sleep(1.0)
        history.append({"reason": res.reason, "lost": lost})
        os.environ[RESTARTS_ENV] = json.dumps(history)
        for h in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                h.flush()
        argv = [sys.executable, *getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:]]
        os.execv(sys.executable, argv)


EPOCH_TOPIC = "kubetide.internal.broker-epoch"


async def broker_epoch(bootstrap: str, topic: str = EPOCH_TOPIC, *, timeout: float = 10.0) -> str:  # noqa: ASYNC109
    """The broker's incarnation: the first record of ``topic`` partition 0, written (a random id) by the
    first client to ask after the broker started. A restarted in-memory broker has lost it, so the next
    client writes a new one and every client sees the change."""
    import uuid

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    class _Spec:
        name, partitions, configs = topic, 1, {}

    async def first() -> str | None:
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50,
                             request_timeout_ms=int(timeout * 1000), **default_security())
        await c.start()
        try:
            tp = TopicPartition(topic, 0)
            c.assign([tp])
            c.seek(tp, 0)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + min(timeout, 2.0)
            while loop.time() < deadline:
                got = await c.getmany(tp, timeout_ms=100, max_records=1)
                for recs in got.values():
                    for r in recs:
                        return (r.value or b"").decode(errors="replace")
                if c.highwater(tp) == 0:
                    return None
            return None
        finally:
            await c.stop()

    if topic not in await topics_present(bootstrap, [topic], timeout=timeout):
        with contextlib.suppress(TopicSetupError):
            await ensure_topics(bootstrap, [_Spec()], timeout=timeout)
    found = await first()
    if found is None:
        p = AIOKafkaProducer(**producer_config(bootstrap, True, linger_ms=0))
        await p.start()
        try:
            await p.send_and_wait(topic, uuid.uuid4().hex.encode(), partition=0)
        finally:
            await p.stop()
        found = await first()
    if found is None:
        raise BrokerRestartedError(f"cannot read the broker epoch from {topic}")
    return found
