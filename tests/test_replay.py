"""Recording and replay of kubetide's streams (kubetide record / kubetide replay).

Broker tests use a private embedded broker per test (fixture ``kafka``); the offline replay needs
no broker: it runs the recorded events and metrics through streams/core as the faust agents do.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kubetide import models as m
from kubetide import topics
from kubetide.codec import encode
from kubetide.kafka import gapless_getmany, producer_config
from kubetide.replay import (
    RecordingError,
    RecordingWriter,
    compare,
    make_record,
    read_recording,
    replay_offline,
    replay_to_broker,
)
from kubetide.replay import add_arguments as replay_args
from kubetide.replay import run as replay_run
from streams.core.settings import StreamsSettings
from tests.test_actuator_support import kafka  # noqa: F401
from tests.test_core_state import T0, GiB, node_ev, pod_ev
from workers.recorder import RecordOptions, record

ROOT = Path(__file__).resolve().parents[1]
STEP = 10.0
TICKS = 5


# ------------------------------------------------------------------ synthetic cluster streams
def _scenario() -> tuple[list[m.ClusterEvent], list[m.ClusterMetrics]]:
    """A hot node (90 % CPU) and a cool one, five ticks: LowNodeLoad moves a pod off the hot node."""
    ts = T0 - 1
    events = [node_ev("hot", ts=ts), node_ev("cool", ts=ts),
              pod_ev("shop", "web-a", "hot", app="web", cpu=1.0, ts=ts),
              pod_ev("shop", "web-b", "hot", app="web", cpu=1.0, ts=ts),
              pod_ev("kube-system", "dns", "hot", app="dns", cpu=0.1, ts=ts),
              pod_ev("shop", "other", "cool", app="other", cpu=1.0, ts=ts)]
    alloc = m.Resources(cpu_cores=8.0, mem_bytes=32 * GiB)
    metrics = []
    for i in range(TICKS):
        t = T0 + STEP * i
        metrics.append(m.ClusterMetrics(
            ts=t, node="hot", zone="z1", window_s=STEP, node_usage=m.Resources(cpu_cores=7.2, mem_bytes=8 * GiB),
            node_allocatable=alloc,
            pods=m.PodSamples(namespace=["shop", "shop", "kube-system"], name=["web-a", "web-b", "dns"],
                              app=["web", "web", "dns"], cpu_cores=[2.0, 1.2, 3.0], mem_bytes=[GiB, GiB, 0.1 * GiB])))
        metrics.append(m.ClusterMetrics(
            ts=t, node="cool", zone="z2", window_s=STEP, node_usage=m.Resources(cpu_cores=1.0, mem_bytes=4 * GiB),
            node_allocatable=alloc,
            pods=m.PodSamples(namespace=["shop"], name=["other"], app=["other"], cpu_cores=[1.0], mem_bytes=[GiB])))
    return events, metrics


def _write_scenario(path: Path, *, garbage: bool = True) -> Path:
    """A recording as `kubetide record` would write it, built without a broker (partitions as on Kafka)."""
    events, metrics = _scenario()
    offsets: dict[tuple[str, int], int] = {}

    def rec(topic: str, key: str, value: bytes, ts: float) -> object:
        part = sum(key.encode()) % topics.spec(topic).partitions
        off = offsets.get((topic, part), 0)
        offsets[(topic, part)] = off + 1
        return make_record(topic, part, off, int(ts * 1000), key.encode(), value, [("origin", b"test")])

    with RecordingWriter(path, {topics.CLUSTER_EVENTS: 8, topics.CLUSTER_METRICS: 8}, now=T0) as w:
        for ev in events:
            w.write(rec(topics.CLUSTER_EVENTS, ev.key, encode(ev), ev.ts))
        if garbage:  # the agents dead-letter these and go on
            w.write(rec(topics.CLUSTER_METRICS, "hot", b"{not json", T0 - 0.5))
        for cm in metrics:
            w.write(rec(topics.CLUSTER_METRICS, cm.node, encode(cm), cm.ts))
    return path


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    replay_args(p)
    return p.parse_args(argv)


# ------------------------------------------------------------------ file format
def test_format_round_trip_and_readable_with_plain_tools(tmp_path: Path) -> None:
    path = _write_scenario(tmp_path / "rec.jsonl.gz")
    rec = read_recording(path)
    assert rec.header["format"] == "kubetide-recording" and rec.header["format_version"] == 1
    assert rec.footer is not None and rec.footer["records"] == {"cluster.events": 6, "cluster.metrics": 11}
    assert rec.warnings == []
    first = rec.records[0]
    assert first.schema == {"name": "cluster.events", "version": 1} and first.ts == T0 - 1
    assert first.headers == (("origin", b"test"),)
    # any language: gunzip + one JSON object per line + base64
    lines = gzip.decompress(path.read_bytes()).splitlines()
    obj = orjson.loads(lines[1])
    assert obj["type"] == "record" and base64.b64decode(obj["value"]) == first.value
    assert orjson.loads(lines[-1])["type"] == "footer"


def test_truncated_recording_is_read_up_to_the_last_complete_record(tmp_path: Path) -> None:
    path = _write_scenario(tmp_path / "rec.gz")
    data = gzip.decompress(path.read_bytes())
    cut = data[: data.rindex(b"\n", 0, len(data) - 1) - 20]  # no footer, last record cut mid-line
    (tmp_path / "cut.gz").write_bytes(gzip.compress(cut)[:-8])  # and no gzip trailer
    rec = read_recording(tmp_path / "cut.gz")
    assert rec.footer is None and len(rec.records) == 16
    assert any("truncated" in w for w in rec.warnings)


def test_malformed_line_gives_an_error_naming_the_line(tmp_path: Path) -> None:
    path = _write_scenario(tmp_path / "rec.gz")
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    bad = list(lines)
    bad[3] = b'{"type": "record", "topic": "cluster.events"'
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\n".join(bad)))
    with pytest.raises(RecordingError, match=r"bad\.gz:4: not JSON"):
        read_recording(tmp_path / "bad.gz")
    bad = list(lines)
    bad[5] = orjson.dumps({**orjson.loads(lines[5]), "partition": -1})
    (tmp_path / "bad2.gz").write_bytes(gzip.compress(b"\n".join(bad)))
    with pytest.raises(RecordingError, match=r"bad2\.gz:6: 'partition' must be a non-negative integer"):
        read_recording(tmp_path / "bad2.gz")
    bad = list(lines)
    bad[2] = orjson.dumps({**orjson.loads(lines[2]), "value": "@@not base64@@"})
    (tmp_path / "bad3.gz").write_bytes(gzip.compress(b"\n".join(bad)))
    with pytest.raises(RecordingError, match=r"bad3\.gz:3: 'value': bad base64"):
        read_recording(tmp_path / "bad3.gz")
    (tmp_path / "nothdr.gz").write_bytes(gzip.compress(b"\n".join(lines[1:])))
    with pytest.raises(RecordingError, match=r"nothdr\.gz:1: not a kubetide recording"):
        read_recording(tmp_path / "nothdr.gz")
    # the CLI prints the same and exits 2
    r = subprocess.run([sys.executable, "-m", "kubetide", "replay", str(tmp_path / "bad.gz"), "--offline"],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 2 and "bad.gz:4: not JSON" in r.stderr


def test_cli_errors(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "kubetide", "replay", str(tmp_path / "missing.gz"), "--offline"],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 2 and "missing.gz: no such file" in r.stderr
    path = _write_scenario(tmp_path / "rec.gz")
    assert replay_run(_args([str(path), "--offline", "--compare", "--quiet"])) == 2  # --compare needs --config
    assert replay_run(_args([str(path), "--speed", "0"])) == 2
    r = subprocess.run([sys.executable, "-m", "kubetide", "record", "--topics", "cluster.events",
                        "--out", str(tmp_path / "nodir" / "x.gz"), "--bootstrap-servers", "127.0.0.1:1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 2 and "does not exist" in r.stderr


# ------------------------------------------------------------------ offline replay
def test_offline_replay_decides_and_is_byte_identical(tmp_path: Path) -> None:
    path = _write_scenario(tmp_path / "rec.gz")
    rec = read_recording(path)
    a = replay_offline(rec)
    b = replay_offline(read_recording(path))
    assert a.lines() == b.lines() and a.digest() == b.digest()
    assert len(a.decisions) == 1
    topic, key, value = a.decisions[0]
    d = m.DescheduleDecision.model_validate(orjson.loads(value))
    assert topic == "decisions.deschedule" and key == b"shop/web"
    assert d.strategy == "LowNodeLoad" and d.from_node == "hot" and d.to_nodes == ["cool"]
    assert d.pod.name == "web-a" and d.made_at == T0 + 2 * STEP  # third hot tick, event time
    assert a.deadletters == {"cluster.metrics: decode": 1}
    assert a.inputs == {"cluster.events": 6, "cluster.metrics": 11}

    # the CLI writes the same bytes, twice
    outs = []
    for i in range(2):
        out = tmp_path / f"decisions{i}.jsonl"
        assert replay_run(_args([str(path), "--offline", "--out", str(out), "--quiet"])) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == b"".join(v + b"\n" for v in a.lines())


def test_compare_shows_the_decision_disappearing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_scenario(tmp_path / "rec.gz")
    cfg = tmp_path / "b.yaml"
    cfg.write_text("streams:\n  strategies:\n    LowNodeLoad:\n      high_cpu_pct: 95\n")
    rec = read_recording(path)
    a = replay_offline(rec, StreamsSettings.from_config({}))
    b = replay_offline(rec, StreamsSettings.from_config({"streams": {"strategies": {"LowNodeLoad": {
        "high_cpu_pct": 95}}}}))
    c = compare(a.lines(), b.lines())
    assert len(c.only_a) == 1 and not c.only_b and not c.changed
    assert c.per_strategy["LowNodeLoad"]["only_a"] == 1

    out = tmp_path / "diff.json"
    assert replay_run(_args([str(path), "--offline", "--config", str(cfg), "--compare", "--out", str(out)])) == 0
    printed = capsys.readouterr()
    assert "only in A: LowNodeLoad" in printed.out and "web-a" in printed.out
    assert "only in A" in printed.err  # the per-strategy table (rich, on stderr)
    doc = orjson.loads(out.read_bytes())
    assert doc["per_strategy"]["LowNodeLoad"] == {"a": 1, "only_a": 1}
    assert doc["b"]["decisions"] == 0 and doc["only_a"][0]["pod"]["name"] == "web-a"
    # same config on both sides: no differences
    same = tmp_path / "same.yaml"
    same.write_text("streams: {}\n")
    assert replay_run(_args([str(path), "--offline", "--config", str(same), "--compare", "--quiet"])) == 0
    assert "no differences (1 decisions the same)" in capsys.readouterr().out


# ------------------------------------------------------------------ broker: record → file → replay
async def _read_all(bootstrap: str, topic: str, expect: int, within: float = 15.0) -> dict[int, list[tuple]]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        await c.topics()
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out: dict[int, list[tuple]] = {}
        n = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while n < expect and loop.time() < deadline:
            for tp, recs in (await gapless_getmany(c, timeout_ms=200)).items():
                for r in recs:
                    out.setdefault(tp.partition, []).append(
                        (r.key, r.value, r.timestamp, tuple((k, bytes(v)) for k, v in (r.headers or ()))))
                    n += 1
        return out
    finally:
        await c.stop()


@pytest.mark.timeout(40)
async def test_record_then_replay_into_a_fresh_broker(kafka: str, tmp_path: Path) -> None:  # noqa: F811
    from kubetide.broker import EmbeddedBroker
    from kubetide.kafka import ensure_topics

    events, metrics = _scenario()
    prod = AIOKafkaProducer(**producer_config(kafka, True))
    await prod.start()
    try:
        for i, ev in enumerate(events):
            await prod.send(topics.CLUSTER_EVENTS, encode(ev), key=ev.key.encode(), timestamp_ms=int(ev.ts * 1000),
                            headers=[("n", str(i).encode()), ("src", b"test")])
        for cm in metrics:  # batched sends: several records per batch
            await prod.send(topics.CLUSTER_METRICS, encode(cm), key=cm.node.encode(),
                            timestamp_ms=int(cm.ts * 1000) + 7)
        await prod.flush()
    finally:
        await prod.stop()
    n = len(events) + len(metrics)
    original = {t: await _read_all(kafka, t, k) for t, k in ((topics.CLUSTER_EVENTS, len(events)),
                                                             (topics.CLUSTER_METRICS, len(metrics)))}

    out = tmp_path / "rec.gz"
    res = await asyncio.wait_for(record(RecordOptions(
        topics=[topics.CLUSTER_EVENTS, topics.CLUSTER_METRICS], out=str(out), bootstrap=kafka, until_end=True)), 20)
    assert res.stopped == "end"
    assert res.counts == {topics.CLUSTER_EVENTS: len(events), topics.CLUSTER_METRICS: len(metrics)}
    rec = read_recording(out)
    assert len(rec.records) == n and rec.footer is not None and rec.footer["stopped"] == "end"
    assert rec.header["topics"] == {topics.CLUSTER_EVENTS: 8, topics.CLUSTER_METRICS: 8}
    # the recording of a live broker replays offline to the same decision as the synthetic one
    assert len(replay_offline(rec).decisions) == 1

    fresh = EmbeddedBroker(log_file=tmp_path / "fresh.log")
    await asyncio.to_thread(fresh.start)
    try:
        await ensure_topics(fresh.bootstrap, [topics.spec(topics.CLUSTER_EVENTS)])  # the other is created by replay
        sent = await asyncio.wait_for(replay_to_broker(rec, fresh.bootstrap), 20)
        assert sent == {topics.CLUSTER_EVENTS: len(events), topics.CLUSTER_METRICS: len(metrics)}
        for t, k in ((topics.CLUSTER_EVENTS, len(events)), (topics.CLUSTER_METRICS, len(metrics))):
            assert await _read_all(fresh.bootstrap, t, k) == original[t], t
    finally:
        await asyncio.to_thread(fresh.stop)


@pytest.mark.timeout(40)
async def test_record_stops_cleanly_on_signal_and_from_now(kafka: str, tmp_path: Path) -> None:  # noqa: F811
    stop = asyncio.Event()
    out = tmp_path / "live.gz"
    task = asyncio.create_task(record(RecordOptions(topics=[topics.CLUSTER_METRICS], out=str(out), bootstrap=kafka,
                                                    from_beginning=False), stop))
    _, metrics = _scenario()
    prod = AIOKafkaProducer(**producer_config(kafka, True))
    await prod.start()
    try:
        await prod.send_and_wait(topics.CLUSTER_METRICS, b"old", key=b"hot")  # may or may not precede the start
        await asyncio.sleep(1.5)
        for cm in metrics[:4]:
            await prod.send_and_wait(topics.CLUSTER_METRICS, encode(cm), key=cm.node.encode())
    finally:
        await prod.stop()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        try:
            if sum(1 for r in read_recording(out).records if r.value != b"old") >= 4:
                break
        except RecordingError:
            pass
        await asyncio.sleep(0.3)
    stop.set()  # what Ctrl-C does (workers.common.run_main)
    res = await asyncio.wait_for(task, 10)
    assert res.stopped == "signal"
    rec = read_recording(out)
    assert rec.footer is not None and rec.footer["stopped"] == "signal" and rec.warnings == []
    got = sorted(r.value for r in rec.records if r.value != b"old")  # partitions interleave in any order
    assert got == sorted(encode(cm) for cm in metrics[:4])
    assert rec.header["source"]["start"] == "now"


@pytest.mark.timeout(40)
def test_cli_record_and_replay_subprocess(kafka: str, tmp_path: Path) -> None:  # noqa: F811
    async def produce() -> None:
        events, metrics = _scenario()
        prod = AIOKafkaProducer(**producer_config(kafka, True))
        await prod.start()
        try:
            for ev in events:
                await prod.send(topics.CLUSTER_EVENTS, encode(ev), key=ev.key.encode())
            for cm in metrics:
                await prod.send(topics.CLUSTER_METRICS, encode(cm), key=cm.node.encode())
            await prod.flush()
        finally:
            await prod.stop()

    asyncio.run(produce())
    out = tmp_path / "cli.gz"
    r = subprocess.run([sys.executable, "-m", "kubetide", "record", "--topics", "cluster.events,cluster.metrics",
                        "--out", str(out), "--bootstrap-servers", kafka, "--until-idle", "2"],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "cluster.metrics" in r.stderr and "10" in r.stderr  # the summary table
    r = subprocess.run([sys.executable, "-m", "kubetide", "replay", str(out), "--offline", "--quiet"],
                       capture_output=True, cwd=ROOT, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and orjson.loads(lines[0])["schema"]["name"] == "decisions.deschedule"


def test_zstd_recording(tmp_path: Path) -> None:
    pytest.importorskip("zstandard")
    gz = read_recording(_write_scenario(tmp_path / "rec.gz"))
    zst = read_recording(_write_scenario(tmp_path / "rec.zst"))
    assert (tmp_path / "rec.zst").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert zst.records == gz.records and zst.footer is not None
    assert replay_offline(zst).lines() == replay_offline(gz).lines()


@pytest.mark.timeout(40)
async def test_replay_speed_paces_by_recorded_timestamps(kafka: str, tmp_path: Path) -> None:  # noqa: F811
    rec = read_recording(_write_scenario(tmp_path / "rec.gz", garbage=False))  # timestamps span 41 s
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sent = await replay_to_broker(rec, kafka, speed=20.0, wanted=[topics.CLUSTER_METRICS])
    took = loop.time() - t0
    assert sent == {topics.CLUSTER_METRICS: 10}
    assert 1.8 <= took < 6, took  # (T0 + 40 s) - T0 at 20x = 2 s of pacing
    got = await _read_all(kafka, topics.CLUSTER_METRICS, 10)
    assert sorted(ts for recs in got.values() for _, _, ts, _ in recs) == sorted(
        r.timestamp_ms for r in rec.records if r.topic == topics.CLUSTER_METRICS)


@pytest.mark.timeout(40)
def test_cli_record_stops_cleanly_on_ctrl_c(kafka: str, tmp_path: Path) -> None:  # noqa: F811
    import signal
    import time

    out = tmp_path / "ctrlc.gz"
    proc = subprocess.Popen([sys.executable, "-m", "kubetide", "record", "--topics", "cluster.metrics",
                             "--out", str(out), "--bootstrap-servers", kafka],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert out.exists(), "recorder did not start"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    rec = read_recording(out)
    assert rec.footer is not None and rec.footer["stopped"] == "signal" and rec.records == []
    assert "stopped: signal" in err.decode()
    r = subprocess.run([sys.executable, "-m", "kubetide", "record", "--topics", "cluster.metrics,no.such.topic",
                        "--out", str(tmp_path / "x.gz"), "--bootstrap-servers", kafka, "--until-idle", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 2 and "topics not on" in r.stderr and "no.such.topic" in r.stderr
    assert not (tmp_path / "x.gz").exists()


def test_reports_and_bad_config(tmp_path: Path) -> None:
    path = _write_scenario(tmp_path / "rec.gz")
    html = tmp_path / "r.html"
    assert replay_run(_args([str(path), "--offline", "--out", str(tmp_path / "d.jsonl"), "--report", str(html),
                             "--quiet"])) == 0
    text = html.read_text()
    assert "<svg" in text and "LowNodeLoad" in text and "web-a" in text and "polyline" in text
    pytest.importorskip("matplotlib")
    png = tmp_path / "r.png"
    assert replay_run(_args([str(path), "--offline", "--out", str(tmp_path / "d.jsonl"), "--report", str(png),
                             "--quiet"])) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("streams:\n  strategies:\n    LowNodeLoad:\n      high_cpu_pct: 250\n")
    r = subprocess.run([sys.executable, "-m", "kubetide", "replay", str(path), "--offline", "--config", str(bad)],
                       capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 2 and "streams.strategies.LowNodeLoad.high_cpu_pct" in r.stderr


@pytest.mark.timeout(40)
def test_offline_replay_matches_the_stream_worker_byte_for_byte(kafka: str, tmp_path: Path) -> None:  # noqa: F811
    """The live faust worker's decisions == the offline replay of the recording of its inputs."""
    import time

    from kubetide.procs import ManagedProcess

    ready = tmp_path / "ready.json"
    argv = [sys.executable, "-m", "streams", "--bootstrap-servers", kafka, "--app-id", "kubetide-streams-replay",
            "--worker-id", "replay-test", "--data-dir", str(tmp_path / "data"), "--ready-file", str(ready),
            "--web-port", "0", "--embedded"]
    proc = ManagedProcess("streams", argv, tmp_path / "worker.log", cwd=str(ROOT)).start()
    try:
        t0 = time.monotonic()
        while not ready.exists():
            assert proc.alive(), f"worker died:\n{proc.tail(40)}"
            assert time.monotonic() - t0 < 30, f"worker not ready:\n{proc.tail(40)}"
            time.sleep(0.1)

        async def go() -> tuple[list[bytes], Path]:
            events, metrics = _scenario()
            prod = AIOKafkaProducer(**producer_config(kafka, True))
            await prod.start()
            try:
                for ev in events:
                    await prod.send_and_wait(topics.CLUSTER_EVENTS, encode(ev), key=ev.key.encode())
                await asyncio.sleep(1.0)  # the events reach the planner before the first tick
                for cm in metrics:
                    await prod.send_and_wait(topics.CLUSTER_METRICS, encode(cm), key=cm.node.encode())
            finally:
                await prod.stop()
            got = await _read_all(kafka, topics.DECISIONS_DESCHEDULE, 1, within=20)
            online = [v for recs in got.values() for _, v, _, _ in recs]
            out = tmp_path / "inputs.gz"
            await record(RecordOptions(topics=[topics.CLUSTER_EVENTS, topics.CLUSTER_METRICS], out=str(out),
                                       bootstrap=kafka, until_end=True))
            return online, out

        online, out = asyncio.run(go())
    finally:
        proc.stop(grace_s=10)
    assert len(online) == 1, proc.tail(30)
    assert replay_offline(read_recording(out)).lines() == online
