"""The JSON Schema files (contract) and the Python models agree."""

from __future__ import annotations

import copy

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from kubetide.codec import DecodeError, decode_obj
from kubetide.topics import PUBLIC_TOPICS
from tests.samples import samples

SAMPLES = samples()


def test_every_public_topic_has_a_schema_file_and_a_sample() -> None:
    files = {p.name for p in schemas.HERE.glob("*.json")}
    for topic in PUBLIC_TOPICS:
        assert schemas.filename(topic, 1) in files
        assert topic in SAMPLES


def test_checked_in_files_equal_the_models() -> None:
    """Regenerate with `kubetide schemas export schemas/` after changing a model."""
    for fname, doc in schemas.generate().items():
        on_disk = (schemas.HERE / fname).read_bytes()
        assert on_disk == schemas.dumps(doc), f"{fname} is stale: run `kubetide schemas export schemas/`"


@pytest.mark.parametrize("topic", PUBLIC_TOPICS)
def test_sample_messages_valid_under_the_file(topic: str) -> None:
    doc = schemas.load(topic, 1)
    jsonschema.Draft202012Validator.check_schema(doc)
    jsonschema.Draft202012Validator(doc).validate(SAMPLES[topic].to_dict())
    # and the model round-trips its own output
    assert decode_obj(topic, SAMPLES[topic].to_dict()) == SAMPLES[topic]


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))


_JUNK = st.sampled_from([None, "x", -1, 1.5, True, [], {}, [1, "a"], {"k": 1}])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(topic=st.sampled_from(PUBLIC_TOPICS), data=st.data())
def test_file_and_model_agree_on_mutated_messages(topic: str, data: st.DataObject) -> None:
    """Replace or drop one field: the file's validator and the model accept or refuse alike."""
    msg = copy.deepcopy(SAMPLES[topic].to_dict())
    path = data.draw(st.sampled_from(list(_paths(msg))))
    parent = msg
    for k in path[:-1]:
        parent = parent[k]
    if data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(_JUNK)
    file_ok = jsonschema.Draft202012Validator(schemas.load(topic, 1)).is_valid(msg)
    try:
        decode_obj(topic, msg)
        model_ok = True
    except DecodeError as exc:
        model_ok = False
        # Rules JSON Schema cannot state (columns of equal length, the snapshot matching the
        # kind) may refuse what the file allows — never the other way round.
        if file_ok:
            assert any(s in exc.error for s in ("entries, pods.name has", "snapshot", "expected ")), exc.error
            return
    assert file_ok == model_ok, (path, msg)
