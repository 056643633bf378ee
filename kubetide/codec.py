"""The one codec every kubetide producer and consumer uses (orjson + the models).

``decode`` never lets bad input through and never crashes its caller with anything but
:class:`DecodeError`, which carries a reason code. The caller turns that error into a
:class:`~kubetide.models.DeadLetter` with :func:`dead_letter` and goes on.

Reasons (``DeadLetter.reason``):
- ``too-large``: the payload is over ``max_bytes`` (default 1 MiB, ``KUBETIDE_MAX_MESSAGE_BYTES``);
- ``decode``: not UTF-8 JSON (orjson refuses NaN/Infinity literals too);
- ``schema``: not an object, no/foreign ``schema`` field, or a field fails validation;
- ``version``: a schema version this worker does not know;
- ``processing``: (set by callers) the message was valid but processing it raised.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from kubetide.models import MODELS, DeadLetter, DeadLetterReason, Message

DEFAULT_MAX_BYTES = int(os.environ.get("KUBETIDE_MAX_MESSAGE_BYTES", 1024 * 1024))
# A dead letter keeps at most this many raw bytes (plus size and sha256 of the whole), so a
# huge payload can still be dead-lettered within the broker's message-size limit.
DEADLETTER_MAX_RAW = 256 * 1024

M = TypeVar("M", bound=Message)


class DecodeError(Exception):
    def __init__(self, reason: DeadLetterReason, error: str) -> None:
        super().__init__(f"{reason}: {error}")
        self.reason: DeadLetterReason = reason
        self.error = error


def register(model: type[Message]) -> type[Message]:
    """Register a model (used for kubetide's internal topics); usable as a decorator."""
    MODELS.setdefault(model.SCHEMA_NAME, {})[model.SCHEMA_VERSION] = model
    return model


def encode(msg: Message) -> bytes:
    return orjson.dumps(msg.model_dump(by_alias=True, exclude_none=True))


def encode_key(key: str | None) -> bytes | None:
    return None if key is None else key.encode()


def _validation_summary(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "<message>"
        parts.append(f"{loc}: {err.get('msg')}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _load(raw: bytes | bytearray | memoryview | None, max_bytes: int) -> Any:
    """The JSON value of a payload, after the checks every decode shares (present, within the size limit)."""
    if raw is None:
        raise DecodeError("decode", "empty message (no value)")
    if len(raw) > max_bytes:
        raise DecodeError("too-large", f"payload is {len(raw)} bytes, limit {max_bytes}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("decode", f"not JSON: {exc}") from None


def decode(expected: str, raw: bytes | bytearray | memoryview | None,
           *, max_bytes: int = DEFAULT_MAX_BYTES) -> Message:
    """Decode and validate one message that should carry schema ``expected``."""
    return decode_obj(expected, _load(raw, max_bytes))


def decode_obj(expected: str, obj: Any) -> Message:
    if not isinstance(obj, dict):
        raise DecodeError("schema", f"expected a JSON object, got {type(obj).__name__}")
    ref = obj.get("schema")
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
        raise DecodeError("schema", "missing or malformed 'schema' field (want {name, version})")
    name, version = ref["name"], ref.get("version")
    if name != expected:
        raise DecodeError("schema", f"message has schema {name!r}, this topic carries {expected!r}")
    versions = MODELS.get(expected)
    if versions is None:
        raise DecodeError("schema", f"no model registered for schema {expected!r}")
    if type(version) is not int or version not in versions:
        known = ", ".join(f"v{v}" for v in sorted(versions))
        raise DecodeError("version", f"unknown schema version {name}/v{version!r} (known: {known})")
    try:
        return versions[version].model_validate(obj)
    except ValidationError as exc:
        raise DecodeError("schema", _validation_summary(exc)) from None
    except (RecursionError, ValueError, TypeError) as exc:  # pathological nesting etc.
        raise DecodeError("schema", f"{type(exc).__name__}: {exc}"[:500]) from None


def decode_trusted(expected: str, raw: bytes | bytearray | memoryview | None,
                   *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[int, dict[str, Any]]:
    """``(schema version, JSON object)`` of a message on one of kubetide's **internal** topics.

    Only for messages kubetide itself produced (``kubetide.internal.*``): the envelope is checked
    (size, JSON object, schema name, a registered version) but the fields are **not** validated —
    the caller reads the object directly (or builds models with ``model_construct``), which is
    what makes the repartition hops cheap. Errors are :class:`DecodeError` as in :func:`decode`;
    a malformed field then fails in the caller (a ``processing`` dead letter). External topics
    always go through :func:`decode`.
    """
    obj = _load(raw, max_bytes)
    if not isinstance(obj, dict):
        raise DecodeError("schema", f"expected a JSON object, got {type(obj).__name__}")
    ref = obj.get("schema")
    if not isinstance(ref, dict) or ref.get("name") != expected:
        raise DecodeError("schema", f"message is not a {expected!r} message (schema {ref!r})")
    version = ref.get("version")
    if type(version) is not int or version not in MODELS.get(expected, {}):
        raise DecodeError("version", f"unknown schema version {expected}/v{version!r}")
    return version, obj


def dead_letter(raw: bytes | None, *, origin_topic: str, reason: DeadLetterReason, error: str,
                origin_partition: int | None = None, origin_offset: int | None = None,
                origin_key: bytes | None = None, worker: str = "",
                now: float | None = None) -> DeadLetter:
    raw = bytes(raw or b"")
    kept = raw[:DEADLETTER_MAX_RAW]
    return DeadLetter(
        ts=time.time() if now is None else now,
        origin_topic=origin_topic,
        origin_partition=origin_partition,
        origin_offset=origin_offset,
        origin_key_b64=None if origin_key is None else base64.b64encode(origin_key[:1024]).decode(),
        reason=reason,
        error=error[:2000],
        raw_b64=base64.b64encode(kept).decode(),
        raw_size=len(raw),
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        truncated=len(kept) < len(raw),
        worker=worker,
    )


def dead_letter_for(exc: BaseException, raw: bytes | None, **origin: Any) -> DeadLetter:
    """A dead letter for any exception met while handling ``raw``."""
    if isinstance(exc, DecodeError):
        return dead_letter(raw, reason=exc.reason, error=exc.error, **origin)
    return dead_letter(raw, reason="processing", error=f"{type(exc).__name__}: {exc}", **origin)
