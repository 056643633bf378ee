"""A fresh faust worker recovers a changelog-backed table exactly (the embedded-broker end-offset fix).

Worker 1 (a subprocess running tests/faust_table_app.py) counts N events into two tables,
``counts`` (events per key) and ``last`` (last sequence number per key); the changelog gets
many updates per produced batch. It stops cleanly. The changelog is read back with a plain
consumer to prove it is complete. Worker 2, a fresh process with the same app id, recovers
both tables from the changelog and dumps them: they must equal the expected values exactly.

Without the fix (``KUBETIDE_DISABLE_END_OFFSET_FIX=1`` in the environment of pytest) the
embedded broker's wrong ListOffsets answer stops recovery short and the test fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kubetide.faustfix import DISABLE_ENV, fetch_high_waters
from kubetide.kafka import consumer_config, ensure_topics, gapless_getmany, producer_config
from kubetide.procs import ManagedProcess
from tests.broker_fixtures import BrokerHandle, broker  # noqa: F401

log = logging.getLogger(__name__)
APP = Path(__file__).with_name("faust_table_app.py")
ROOT = APP.parent.parent
PARTITIONS = 4
N_EVENTS = 6000
N_KEYS = 150


@dataclass(frozen=True)
class Spec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def _worker(name: str, mode: str, status: Path, env: dict[str, str]) -> ManagedProcess:
    status.mkdir(parents=True, exist_ok=True)
    return ManagedProcess(name, [sys.executable, str(APP), mode, str(status)], status / "worker.log",
                          env=env, cwd=ROOT).start()


async def _wait_file(path: Path, proc: ManagedProcess, within: float) -> dict:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(path.exists):
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited ({proc.returncode()}) before {path.name}:\n{proc.tail(40)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name}: no {path.name} after {within:.0f}s:\n{proc.tail(40)}")
        await asyncio.sleep(0.05)
    return orjson.loads(await asyncio.to_thread(path.read_bytes))


async def _read_changelog(bootstrap: str, topic: str) -> dict[str, int]:
    """Last value per key in a changelog topic, reading up to each partition's fetch high-water."""
    from aiokafka import TopicPartition

    c = AIOKafkaConsumer(**consumer_config(bootstrap, True, group_id=None))
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        c.assign(tps)
        ends = await fetch_high_waters(c, await c.end_offsets(tps))
        await c.seek_to_beginning(*tps)
        out: dict[str, int] = {}
        deadline = time.monotonic() + 20
        while [tp for tp in tps if await c.position(tp) < (ends[tp] or 0)]:
            assert time.monotonic() < deadline, "could not read the changelog to its end"
            for records in (await gapless_getmany(c, timeout_ms=200)).values():
                for r in records:
                    out[orjson.loads(r.key)] = orjson.loads(r.value)
        return out
    finally:
        await c.stop()


@pytest.mark.timeout(120)
async def test_fresh_worker_recovers_table_exactly(broker: BrokerHandle, tmp_path: Path) -> None:  # noqa: F811
    app_id = broker.unique("ktrec")
    topic = broker.unique("events")
    await ensure_topics(broker.bootstrap, [
        Spec(topic, PARTITIONS),
        Spec(f"{app_id}-counts-changelog", PARTITIONS, {"cleanup.policy": "compact"}),
        Spec(f"{app_id}-last-changelog", PARTITIONS, {"cleanup.policy": "compact"}),
    ])
    env = {"KT_BOOTSTRAP": broker.bootstrap, "KT_APP_ID": app_id, "KT_TOPIC": topic,
           "KT_PARTITIONS": str(PARTITIONS), "KT_EMBEDDED": "1" if broker.embedded else "0",
           "KT_EXPECT": str(N_EVENTS), "PYTHONPATH": str(ROOT)}
    fix_disabled = os.environ.get(DISABLE_ENV, "") not in ("", "0")

    # Worker 1: wait until ready before producing (see BROKER-NOTES), then count N events.
    w1 = _worker("worker1", "process", tmp_path / "w1", env)
    try:
        ready1 = await _wait_file(tmp_path / "w1" / "ready.json", w1, 45)
        expected_counts: Counter[str] = Counter()
        expected_last: dict[str, int] = {}
        p = AIOKafkaProducer(**producer_config(broker.bootstrap, broker.embedded, linger_ms=20))
        await p.start()
        try:
            futs = []
            for seq in range(N_EVENTS):
                key = f"k{seq * 7919 % N_KEYS:04d}"
                expected_counts[key] += 1
                expected_last[key] = seq
                futs.append(await p.send(topic, orjson.dumps({"seq": seq}), key=key.encode()))
            await asyncio.gather(*futs)
        finally:
            await p.stop()
        t_send = time.monotonic()
        done = await _wait_file(tmp_path / "w1" / "done.json", w1, 60)
        processing_s = time.monotonic() - t_send
    finally:
        rc1 = w1.stop(grace_s=20)
    assert done["processed"] == N_EVENTS
    assert rc1 is not None

    # The changelog holds every update: what a complete recovery must produce.
    changelog = await _read_changelog(broker.bootstrap, f"{app_id}-counts-changelog")
    assert changelog == dict(expected_counts), "worker 1 did not write the complete changelog"

    # Worker 2: a fresh process recovers the tables from the changelog.
    t2 = time.monotonic()
    w2 = _worker("worker2", "dump", tmp_path / "w2", {**env, "KT_EXPECT": "0"})
    try:
        tables = await _wait_file(tmp_path / "w2" / "tables.json", w2, 60)
        recovery_wall_s = time.monotonic() - t2
    finally:
        w2.stop(grace_s=20)

    got_counts = {k: int(v) for k, v in tables["counts"].items()}
    got_last = {k: int(v) for k, v in tables["last"].items()}
    behind = {k: expected_counts[k] - got_counts.get(k, 0) for k in expected_counts
              if got_counts.get(k, 0) != expected_counts[k]}
    stale_last = sum(1 for k in expected_last if got_last.get(k) != expected_last[k])
    summary = (f"worker1 ready {ready1['ready_s']:.1f}s after start (fix installed: {ready1['fix_installed']}); "
               f"processed {N_EVENTS} events in {processing_s:.1f}s; worker2 recovered in "
               f"{tables['recovered_s']:.1f}s after start ({recovery_wall_s:.1f}s wall); "
               f"keys wrong: counts {len(behind)}/{len(expected_counts)} (missing updates {sum(behind.values())}), "
               f"last {stale_last}/{len(expected_last)}")
    print(summary)
    log.warning("table recovery: %s", summary)
    (tmp_path / "summary.txt").write_text(summary)
    assert tables["fix_installed"] is (broker.embedded and not fix_disabled)
    assert got_counts == dict(expected_counts), summary
    assert got_last == expected_last, summary
