"""No record is committed unprocessed: the offset-gap guard (``kubetide.faustfix.guarded_getmany``).

faust's fetch loop treats a jump in a partition's offsets (next record > last read + 1) as a *gap*
and counts the skipped offsets as acknowledged, so the next commit moves past records nobody
processed. Such jumps happen right after a rebalance (seen in ``kubetide chaos``: the survivor's
first fetch after "rebalance complete" started 4-12 offsets past what it had read, on
planner-input and app-samples; node scrapes went missing the same way, see docs/reliability.md).
The race is timing-dependent, so the real-process test below *injects* the jump where it happens:
right after faust seeks a newly assigned partition to its committed offset, the fetch position is
moved forward behind faust's back. Without the guard (``KUBETIDE_DISABLE_OFFSET_GAP_FIX=1``, the
control run) those records are lost for good: committed past, never processed, also by a
replacement worker after a kill -9. With it, every record is processed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kubetide.faustfix import GAP_FIX_DISABLE_ENV, guarded_getmany, head_acknowledged
from kubetide.kafka import consumer_config, ensure_topics, gapless_getmany, producer_config
from kubetide.procs import ManagedProcess
from kubetide.topics import TopicSpec
from tests.broker_fixtures import BrokerHandle, broker  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]

WORKER = r'''
import os, sys, time
import faust, orjson
from kubetide.faustfix import apply_embedded_broker_fixes, apply_offset_gap_guard, faust_settings

env = os.environ
status = env["KT_STATUS"]
app = faust.App(**faust_settings(env["KT_BOOTSTRAP"], embedded=True, app_id=env["KT_APP_ID"],
                                 data_dir=os.path.join(status, "data"), topic_partitions=1))
apply_embedded_broker_fixes(app, embedded=True)
apply_offset_gap_guard(app)
src = app.topic(env["KT_SRC"], partitions=1, key_serializer="raw", value_serializer="raw")
out = app.topic(env["KT_OUT"], partitions=1, key_serializer="raw", value_serializer="raw")
jump_by = int(env.get("KT_JUMP_BY", "0"))
consumer = app.consumer
seek_committed = consumer.perform_seek
jumped = []

async def perform_seek():
    await seek_committed()
    if jump_by and not jumped:
        for tp in consumer.assignment():
            c = consumer._committed_offset.get(tp)
            if tp.topic == env["KT_SRC"] and c:
                jumped.append((c, c + jump_by))
                consumer._thread.seek(tp, c + jump_by)  # the fetch position moves on, faust is not told
                print(f"JUMP {tp} {c} -> {c + jump_by}", flush=True)

consumer.perform_seek = perform_seek

@app.agent(src)
async def work(stream):
    async for event in stream.events():
        await out.send(key=b"k", value=event.value)

@app.timer(0.2)
async def ready():
    if app.consumer.assignment() and not app.rebalancing and not os.path.exists(os.path.join(status, "ready")):
        open(os.path.join(status, "ready"), "w").write(orjson.dumps(jumped).decode())

if __name__ == "__main__":
    from faust.worker import Worker
    Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()
'''


# -- the guard itself, on a scripted fetch (no broker) -----------------------------------------
class _FakeConsumer:
    def __init__(self) -> None:
        self._read_offset: dict[Any, int | None] = {}
        self.seeks: list[tuple[Any, int]] = []
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: topic != "changelog"))

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))
        self._read_offset[tp] = offset


async def _run(consumer: _FakeConsumer, records: list[tuple[str, int]]) -> list[tuple[str, int]]:
    async def fetch() -> Any:
        for tp, off in records:
            yield tp, SimpleNamespace(offset=off, topic=tp)

    got = []
    async for tp, m in guarded_getmany(consumer, fetch()):
        got.append((tp, m.offset))
        consumer._read_offset[tp] = m.offset  # what faust's drain loop does with each delivered record
    return got


async def test_guard_seeks_back_over_a_gap_and_lets_other_partitions_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GAP_FIX_DISABLE_ENV, raising=False)
    c = _FakeConsumer()
    got = await _run(c, [("a", 0), ("a", 1), ("b", 7), ("a", 5), ("a", 6), ("b", 8), ("changelog", 0),
                         ("changelog", 9)])
    # the record after the jump and the rest of that partition's batch are dropped; b and the changelog
    # (no acks there: compaction leaves real gaps) go on
    assert got == [("a", 0), ("a", 1), ("b", 7), ("b", 8), ("changelog", 0), ("changelog", 9)]
    assert c.seeks == [("a", 2)] and c._read_offset["a"] == 1
    # the fetch goes on from the seek: no gap any more
    assert await _run(c, [("a", 2), ("a", 3), ("a", 4), ("a", 5)]) == [("a", 2), ("a", 3), ("a", 4), ("a", 5)]
    assert c.seeks == [("a", 2)]


async def test_guard_seeks_back_until_the_records_come_and_lets_a_lasting_hole_through(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(GAP_FIX_DISABLE_ENV, raising=False)
    monkeypatch.setattr("kubetide.kafka.GAP_SETTLE_S", 0.2)
    c = _FakeConsumer()
    await _run(c, [("a", 0), ("a", 5)])
    c._read_offset["a"] = 0
    assert await _run(c, [("a", 5)]) == []  # seen again within the settle time: sought back again
    assert len(c.seeks) == 2
    await asyncio.sleep(0.25)
    c._read_offset["a"] = 0
    with caplog.at_level(logging.ERROR, logger="kubetide.faustfix"):
        assert await _run(c, [("a", 5)]) == [("a", 5)]  # the records really are not there (e.g. deleted)
    assert len(c.seeks) == 2 and "offset gap" in caplog.text
    monkeypatch.setenv(GAP_FIX_DISABLE_ENV, "1")
    d = _FakeConsumer()
    assert await _run(d, [("a", 0), ("a", 3)]) == [("a", 0), ("a", 3)] and not d.seeks


def test_commit_head_must_be_acknowledged() -> None:
    """faust-streaming #606: faust commits over a single unacknowledged record at the committed offset."""
    assert head_acknowledged([2586, 2587, 2588], [], 2585) is False  # 2585 read, never acknowledged: hold
    assert head_acknowledged([2585, 2586], [], 2585) is True
    assert head_acknowledged([2587, 2588], [2585], 2585) is True  # a recorded gap covers the head
    assert head_acknowledged([2587], [2586], 2585) is False
    assert head_acknowledged([5, 6], [], None) is True  # nothing committed yet: faust's own rules
    assert head_acknowledged([], [], 7) is True


# -- real broker, real worker processes, kill -9 -------------------------------------------------
async def _wait(path: Path, proc: ManagedProcess, within: float) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(path.exists):
        assert proc.alive(), f"{proc.name} exited:\n{proc.tail(40)}"
        assert time.monotonic() < deadline, f"{proc.name}: no {path.name} after {within:.0f}s:\n{proc.tail(40)}"
        await asyncio.sleep(0.1)


async def _read_all(bootstrap: str, topic: str, settle_s: float = 3.0, within: float = 40.0,
                    want: int | None = None) -> list[int]:
    c = AIOKafkaConsumer(**consumer_config(bootstrap, True, group_id=None))
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        seqs: list[int] = []
        last_new = time.monotonic()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and time.monotonic() - last_new < settle_s:
            got = await gapless_getmany(c, timeout_ms=200)
            for recs in got.values():
                seqs.extend(int(r.value) for r in recs)
                last_new = time.monotonic()
            if want is not None and len(set(seqs)) >= want:
                break
        return seqs
    finally:
        await c.stop()


async def _scenario(bootstrap: str, name: str, tmp: Path, *, guard: bool) -> tuple[set[int], list[int], str]:
    """Worker 1 processes 0..99 and is killed; 100..299 are produced; worker 2 takes over with the jump."""
    src, out = f"{name}-src", f"{name}-out"
    await ensure_topics(bootstrap, [TopicSpec(src, "seq", 1), TopicSpec(out, "seq", 1)])
    script = tmp / "worker.py"
    await asyncio.to_thread(script.write_text, WORKER)
    env = {"KT_BOOTSTRAP": bootstrap, "KT_APP_ID": name, "KT_SRC": src, "KT_OUT": out, "PYTHONPATH": str(ROOT)}
    if not guard:
        env[GAP_FIX_DISABLE_ENV] = "1"
    procs = []
    p = AIOKafkaProducer(**producer_config(bootstrap, True))
    await p.start()
    try:
        for i, (jump, seqs) in enumerate(((0, range(0, 100)), (40, range(100, 300)))):
            st = tmp / f"w{i}"
            await asyncio.to_thread(st.mkdir)
            proc = ManagedProcess(f"{name}-w{i}", [sys.executable, str(script), "worker"], st / "worker.log",
                                  env={**env, "KT_STATUS": str(st), "KT_JUMP_BY": str(jump)}, cwd=ROOT).start()
            procs.append(proc)
            if i == 1:  # the next records are there before the replacement starts
                for s in seqs:
                    await p.send(src, str(s).encode())
                await p.flush()
            await _wait(st / "ready", proc, 60)
            if i == 0:
                for s in seqs:
                    await p.send(src, str(s).encode())
                await p.flush()
                assert len(set(await _read_all(bootstrap, out, want=100))) == 100, proc.tail(30)
                await asyncio.sleep(2.5)  # a commit (every 1 s) covers them
                proc.signal(signal.SIGKILL)
        seen = await _read_all(bootstrap, out, want=300)
        jumped = orjson.loads(await asyncio.to_thread((tmp / "w1" / "ready").read_bytes))
        return set(seen), jumped, procs[1].tail(60)
    finally:
        await p.stop()
        for proc in procs:
            proc.stop()


@pytest.mark.timeout(150)
async def test_a_fetch_jump_after_takeover_loses_nothing_with_the_guard(broker: BrokerHandle,  # noqa: F811
                                                                        tmp_path: Path) -> None:
    if not broker.embedded:
        pytest.fail("this test starts workers configured for the embedded broker")
    (tmp_path / "guard").mkdir()
    (tmp_path / "control").mkdir()
    t0 = time.monotonic()
    (with_guard, jumped, log_g), (without, jumped_c, _log_c) = await asyncio.gather(
        _scenario(broker.bootstrap, broker.unique("kt-gap-guard"), tmp_path / "guard", guard=True),
        _scenario(broker.bootstrap, broker.unique("kt-gap-control"), tmp_path / "control", guard=False))
    missing = sorted(set(range(300)) - with_guard)
    missing_control = sorted(set(range(300)) - without)
    print(f"\ncommit safety ({time.monotonic() - t0:.0f}s): jump {jumped} / {jumped_c}; lost with the guard "
          f"{len(missing)}, without {len(missing_control)} {missing_control[:3]}..{missing_control[-1:]}")
    # the jump really happened in both runs, over records of the second batch
    assert len(jumped) == 1 and len(jumped_c) == 1 and jumped[0][0] >= 100 and jumped_c[0][0] >= 100
    assert not missing, f"records lost with the guard: {missing}\n{log_g}"
    assert "seeking back" in log_g
    # control: faust commits over the gap, the records are never processed (by anyone)
    c, c_to = jumped_c[0]
    assert set(range(c + 1, c_to)) <= set(missing_control), missing_control


# -- profile state: full state + replayed tail == the state that processed every slice -------------
def test_profile_tail_replay_rebuilds_the_state_exactly() -> None:
    import numpy as np

    from kubetide.models import Resources
    from streams.agents import _slice_from_tail, _tail_slice, pack_state, unpack_state
    from streams.core.messages import AppSamples
    from streams.core.profile import AppProfileState, ProfileSettings, should_emit

    settings = ProfileSettings()
    rng = np.random.default_rng(3)
    live = AppProfileState(settings)
    full: bytes | None = None
    tail: list[dict[str, Any]] = []
    for k in range(300):
        ts = 1_767_571_200.0 + 10 * k
        if k % 50 == 7:  # a Pod event's requests (no samples)
            msg = AppSamples.model_construct(ts=ts, namespace="ns", app="web", pod=[], cpu_cores=[], mem_bytes=[],
                                             requests=Resources(cpu_cores=0.5 + k / 1000, mem_bytes=1e9))
        else:
            n = int(rng.integers(1, 6))
            msg = AppSamples.model_construct(ts=ts, namespace="ns", app="web", pod=[f"web-{i}" for i in range(n)],
                                             cpu_cores=rng.random(n).tolist(), mem_bytes=(rng.random(n) * 1e9).tolist(),
                                             requests=None)
        live.update(msg)
        tail.append(orjson.loads(orjson.dumps(_tail_slice(msg))))  # through JSON, as in the changelog
        if msg.cpu_cores and should_emit(live, ts):
            live.last_emit_ts = ts
            full, tail = pack_state(live.to_bytes()), []
        if k in (120, 299):  # a recovery here: the full state from the changelog, then its tail
            assert full is not None
            rebuilt = AppProfileState.from_bytes(unpack_state(full), settings)
            for d in tail:
                rebuilt.update(_slice_from_tail(d))
            assert rebuilt.to_bytes() == live.to_bytes()
            assert rebuilt.n_total() == live.n_total() > 0
