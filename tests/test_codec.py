"""The codec refuses bad input with a reason, and a dead letter keeps what it refused."""

from __future__ import annotations

import base64
import hashlib
import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetide.codec import DEADLETTER_MAX_RAW, DEFAULT_MAX_BYTES, DecodeError, dead_letter_for, decode, encode
from kubetide.models import MODELS, DeadLetter
from kubetide.topics import PUBLIC_TOPICS
from tests.samples import samples

SAMPLES = samples()


@pytest.mark.parametrize("topic", PUBLIC_TOPICS)
def test_round_trip(topic: str) -> None:
    msg = SAMPLES[topic]
    assert decode(topic, encode(msg)) == msg


def _reason(topic: str, raw: bytes, **kw) -> str:
    with pytest.raises(DecodeError) as info:
        decode(topic, raw, **kw)
    return info.value.reason


def test_reasons() -> None:
    good = SAMPLES["cluster.metrics"].to_dict()
    assert _reason("cluster.metrics", b"{not json") == "decode"
    assert _reason("cluster.metrics", b"\xff\xfe") == "decode"
    assert _reason("cluster.metrics", b'{"ts": NaN}') == "decode"
    assert _reason("cluster.metrics", b"[1,2]") == "schema"
    assert _reason("cluster.metrics", orjson.dumps({**good, "schema": None})) == "schema"
    for schema, reason in [({"name": "profiles", "version": 1}, "schema"),
                           ({"name": "cluster.metrics", "version": 9}, "version"),
                           ({"name": "cluster.metrics", "version": "1"}, "version")]:
        assert _reason("cluster.metrics", orjson.dumps({**good, "schema": schema})) == reason
    assert _reason("cluster.metrics", orjson.dumps({**good, "ts": "yesterday"})) == "schema"
    assert _reason("cluster.metrics", orjson.dumps({**good, "ts": -5})) == "schema"
    assert _reason("cluster.metrics", b"{}" + b" " * 2000, max_bytes=1000) == "too-large"
    bad_cols = {**good, "pods": {**good["pods"], "cpu_cores": [1.0]}}
    with pytest.raises(DecodeError, match=r"pods\.cpu_cores has 1 entries"):
        decode("cluster.metrics", orjson.dumps(bad_cols))


def test_unknown_fields_are_ignored() -> None:
    good = SAMPLES["app.metrics"].to_dict()
    assert decode("app.metrics", orjson.dumps({**good, "new_field": {"x": 1}})) == SAMPLES["app.metrics"]


def test_deep_nesting_is_refused_not_crashing() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    assert _reason("cluster.metrics", deep) in ("decode", "schema")
    good = SAMPLES["anomalies"].to_dict()
    nested: object = 1
    for _ in range(300):
        nested = {"a": nested}
    assert _reason("anomalies", json.dumps({**good, "evidence": {"x": nested}}).encode()) == "schema"


def test_dead_letter_keeps_origin_and_truncates_huge_payloads() -> None:
    raw = b"x" * (DEFAULT_MAX_BYTES + DEADLETTER_MAX_RAW)
    try:
        decode("cluster.metrics", raw)
    except DecodeError as exc:
        dl = dead_letter_for(exc, raw, origin_topic="cluster.metrics", origin_partition=3, origin_offset=99,
                             origin_key=b"node-1", worker="t")
    assert dl.reason == "too-large" and dl.truncated and dl.raw_size == len(raw)
    assert dl.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(base64.b64decode(dl.raw_b64)) == DEADLETTER_MAX_RAW
    assert len(encode(dl)) < 1_000_000
    assert decode("deadletter", encode(dl)) == dl
    dl2 = dead_letter_for(KeyError("boom"), b"{}", origin_topic="t")
    assert dl2.reason == "processing" and "KeyError" in dl2.error


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.integers(-(2**63), 2**63 - 1),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(topic=st.sampled_from(sorted(MODELS)), raw=st.binary(max_size=300) | _JSON.map(orjson.dumps))
def test_any_input_is_decoded_or_refused_with_a_reason(topic: str, raw: bytes) -> None:
    try:
        decode(topic, raw)
    except DecodeError as exc:
        assert exc.reason in ("decode", "schema", "version", "too-large")
        dl = dead_letter_for(exc, raw, origin_topic=topic)
        assert isinstance(dl, DeadLetter) and base64.b64decode(dl.raw_b64) == raw
