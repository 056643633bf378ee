"""The stream worker's batched repartition (pure): plain-dict slices and node summaries equal the
model path, batches per partition keep every slice and its order, trusted decoding gives the same
messages, and profiles built from batches equal profiles built from one message per slice."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from kubetide import models as m
from kubetide import topics
from kubetide.codec import DecodeError, decode, decode_trusted, encode
from streams.agents import pack_state, unpack_state
from streams.core.messages import (
    AppSamples,
    AppSamplesBatch,
    PlannerInput,
    batch_samples,
    node_input_dict,
    planner_input_trusted,
    slice_dicts,
    slices_by_partition,
    split_metrics,
)
from streams.core.profile import AppProfileState, ProfileSettings, profile_message, should_emit, state_key
from tests.test_core_state import T0, pod_ev

FIELDS = ("ts", "namespace", "app", "node", "pod", "cpu_cores", "mem_bytes", "requests")


def scrape(rng: np.random.Generator, ts: float, node: str, n: int = 40, zone: str | None = "z1") -> m.ClusterMetrics:
    apps = [str(rng.choice(["web", "db", "cache", "", "queue"])) for _ in range(n)]
    nss = [str(rng.choice(["shop", "ops"])) for _ in range(n)]
    return m.ClusterMetrics(
        ts=ts, node=node, zone=zone, window_s=10.0,
        node_usage=m.Resources(cpu_cores=float(rng.uniform(1, 7)), mem_bytes=float(rng.uniform(1e9, 9e9))),
        node_allocatable=m.Resources(cpu_cores=8.0, mem_bytes=32e9),
        pods=m.PodSamples(namespace=nss, name=[f"{node}-p{i}" for i in range(n)], app=apps,
                          cpu_cores=rng.gamma(2.0, 0.1, n).tolist(), mem_bytes=rng.uniform(1e8, 1e9, n).tolist()))


def fields(x: object) -> dict:
    return {f: getattr(x, f, None) for f in FIELDS}


@pytest.mark.parametrize("zone", ["z1", None])
def test_dicts_equal_the_model_path(zone: str | None) -> None:
    rng = np.random.default_rng(3)
    cm = scrape(rng, T0, "node-a", zone=zone)
    apps, pin = split_metrics(cm)
    assert [fields(AppSamples(**s)) for s in slice_dicts(cm)] == [fields(a) for a in apps]
    assert node_input_dict(cm) == orjson.loads(encode(pin))
    trusted = planner_input_trusted(decode_trusted(topics.PLANNER_INPUT, orjson.dumps(node_input_dict(cm)))[1])
    assert trusted.kind == "node" and trusted.ts == pin.ts and trusted.node == pin.node
    assert trusted.node.pod_usage() == pin.node.pod_usage() and trusted.node.cpu_pct == pin.node.cpu_pct
    ev = pod_ev("shop", "web-1", "n1")
    fwd = PlannerInput(ts=ev.ts, kind="event", event=ev)
    assert planner_input_trusted(orjson.loads(encode(fwd))) == fwd  # other kinds: validated


def test_batches_per_partition_keep_every_slice_in_order() -> None:
    rng = np.random.default_rng(5)
    scrapes = [scrape(rng, T0 + 10 * k, f"node-{j}") for k in range(4) for j in range(3)]
    slices = [s for cm in scrapes for s in slice_dicts(cm)]

    def part(app: str) -> int:
        return sum(app.encode()) % 3

    out = slices_by_partition(slices, part, max_samples=25)
    got: dict[int, list[dict]] = {}
    for p, value in out:
        assert len(value) < 1 << 20
        msg = decode(topics.APP_SAMPLES, value)  # a valid AppSamplesBatch (v2)
        assert isinstance(msg, AppSamplesBatch)
        sl = orjson.loads(value)["slices"]
        assert sum(len(s["pod"]) for s in sl) <= 25 or len(sl) == 1  # bounded size
        assert all(part(s["app"]) == p for s in sl)
        got.setdefault(p, []).extend(sl)
    assert sorted(p for p in got) == sorted({part(s["app"]) for s in slices})
    for p, sl in got.items():  # every slice once, in the original order
        assert sl == [s for s in slices if part(s["app"]) == p]
    assert len(out) > len(got)  # max_samples split some partitions into several messages


def test_profiles_from_batches_equal_one_message_per_slice() -> None:
    rng = np.random.default_rng(7)
    s = ProfileSettings(windows_s=(600.0, 3600.0), buckets_per_window=6, sketch_k=64, emit_interval_s=60.0)
    per_slice: dict[str, AppProfileState] = {}
    batched: dict[str, AppProfileState] = {}
    emitted: dict[str, list] = {"one": [], "batch": []}

    def feed(states: dict[str, AppProfileState], msg: object, tag: str) -> None:
        key = state_key(msg.namespace, msg.app)  # type: ignore[attr-defined]
        st = states.setdefault(key, AppProfileState(s))
        st.update(msg)  # type: ignore[arg-type]
        if msg.cpu_cores and should_emit(st, msg.ts):  # type: ignore[attr-defined]
            emitted[tag].append(profile_message(st, msg.ts))  # type: ignore[attr-defined]
            st.last_emit_ts = msg.ts  # type: ignore[attr-defined]

    for k in range(0, 60, 6):  # 6 scrapes of 4 nodes per batch
        scrapes = [scrape(rng, T0 + 10 * (k + i), f"node-{j}") for i in range(6) for j in range(4)]
        for cm in scrapes:
            for a in split_metrics(cm)[0]:
                feed(per_slice, decode(topics.APP_SAMPLES, encode(a)), "one")
        for _, value in slices_by_partition([x for cm in scrapes for x in slice_dicts(cm)], lambda a: len(a) % 2):
            version, obj = decode_trusted(topics.APP_SAMPLES, value)
            assert version == 2
            for msg in batch_samples(obj):
                feed(batched, msg, "batch")
    assert sorted(per_slice) == sorted(batched) and len(per_slice) == 8
    for key, st in per_slice.items():
        for wi in range(2):
            assert batched[key].percentiles(wi) == st.percentiles(wi)
        np.testing.assert_array_equal(batched[key].history(), st.history())
        assert batched[key].pods == st.pods
    assert sorted((p.app, p.namespace, p.ts) for p in emitted["batch"]) == sorted(
        (p.app, p.namespace, p.ts) for p in emitted["one"])
    assert len(emitted["one"]) > 8
    st = next(iter(batched.values()))
    assert len(pack_state(st.to_bytes())) < len(st.to_bytes())
    assert unpack_state(pack_state(st.to_bytes())) == st.to_bytes() == unpack_state(st.to_bytes())


@pytest.mark.parametrize("raw,reason", [
    (None, "decode"), (b"{nope", "decode"), (b"[1]", "schema"),
    (b'{"schema": {"name": "cluster.metrics", "version": 1}}', "schema"),
    (b'{"schema": {"name": "kubetide.internal.app-samples", "version": 9}}', "version"),
    (b'{"schema": {"name": "kubetide.internal.app-samples", "version": "2"}}', "version"),
])
def test_trusted_decode_still_checks_the_envelope(raw: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as e:
        decode_trusted(topics.APP_SAMPLES, raw)
    assert e.value.reason == reason
    with pytest.raises(DecodeError) as e:
        decode_trusted(topics.APP_SAMPLES, b" " * 100, max_bytes=10)
    assert e.value.reason == "too-large"
