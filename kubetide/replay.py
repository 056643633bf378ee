"""Recordings of kubetide's Kafka streams: the file format, replay into a broker, offline replay.

A recording (written by ``kubetide record``, :mod:`workers.recorder`) is **JSON Lines, gzip-compressed**
(``.zst`` files are zstd-compressed when the optional ``zstandard`` package is installed; an
uncompressed file is read too). Compression is detected from the file's first bytes, not its name.
The writer flushes the compressor (``Z_SYNC_FLUSH``) about once a second, so a recorder killed
hard leaves a file readable up to its last flushed record; a clean stop (Ctrl-C, a stop
condition) writes a ``footer`` line and closes the stream. See ``docs/recording-format.md``.

Line 1 is the header; then one line per Kafka record; the last line is the footer (absent if the
recorder died)::

    {"type":"header","format":"kubetide-recording","format_version":1,"kubetide_version":"0.1.0",
     "topics":{"cluster.events":8,"cluster.metrics":8},"started_at":1767571200.0,
     "source":{"bootstrap":"127.0.0.1:9092","start":"beginning"}}
    {"type":"record","topic":"cluster.metrics","partition":3,"offset":17,"timestamp_ms":1767571210000,
     "timestamp_type":0,"key":"bm9kZS1h","value":"eyJzY2hlbWEiOnsi...","headers":[["trace","YWJj"]],
     "schema":{"name":"cluster.metrics","version":1},"ts":1767571210.0}
    {"type":"footer","ended_at":1767571300.0,"records":{"cluster.metrics":1},"stopped":"end"}

``key``, ``value`` and header values are base64 of the raw bytes (``null`` for a null key, a
tombstone or a null header value): replay gives back exactly the bytes that were recorded.
``schema`` and ``ts`` are parsed from the value when it is a kubetide JSON message (else ``null``);
they are a convenience for readers, never used to rebuild the bytes.

Replay:

- ``kubetide replay FILE``: produce the records into a broker, keeping topic, partition (when the
  topic has it), key, value, headers and the Kafka timestamp; the message's own ``ts`` is untouched
  (the value bytes are replayed as recorded). Records go out in Kafka-timestamp order, merged across
  partitions (each partition keeps its recorded order). ``--speed X`` paces them X times faster
  than recorded; ``--as-fast-as-possible`` (the default) does not wait.
- ``kubetide replay FILE --offline``: no broker. The recorded ``cluster.events`` and
  ``cluster.metrics`` go through ``streams/core`` exactly as the faust agents call it
  (:mod:`streams.agents`): decode, ``forward_event`` / ``split_metrics``, the planner-input
  message through the codec, ``Planner.handle`` of a planner built by ``streams.agents._new_planner``.
  The inputs are merged deterministically: each partition in offset order, partitions merged by
  (event ``ts``, topic — events before metrics —, partition, offset). Decisions are written one per
  line, each exactly :func:`kubetide.codec.encode` of the decision, so the same recording always
  gives byte-identical output. ``--config B.yaml --compare`` replays with the default config
  (``$KUBETIDE_CONFIG`` or none) and with ``B.yaml`` and prints the differences per strategy.
  ``--report r.html`` (self-contained, inline SVG) or ``r.png`` (matplotlib) plots node CPU over
  event time with the decisions marked.

Both replays read the whole recording into memory first (records are merged across partitions).
Only the planner path (``decisions.deschedule``) is replayed offline: it is the only decision
producer the faust agents run today; profiles and anomalies are not re-derived.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import hashlib
import heapq
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from kubetide import __version__, topics

FORMAT = "kubetide-recording"
FORMAT_VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
OFFLINE_TOPICS = (topics.CLUSTER_EVENTS, topics.CLUSTER_METRICS)
# At equal event time, object changes go before node scrapes (the collector's and kubesim's order).
_TOPIC_RANK = {topics.CLUSTER_EVENTS: 0, topics.CLUSTER_METRICS: 1}


class RecordingError(ValueError):
    """A recording is unreadable; the message names the file and line."""


# ------------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_type: int = 0
    schema: dict[str, Any] | None = None
    ts: float | None = None

    @property
    def event_time(self) -> float:
        """The message's own ``ts`` when known, else the Kafka timestamp (s), else 0."""
        if self.ts is not None:
            return self.ts
        return (self.timestamp_ms or 0) / 1000.0


def _b64(b: bytes | None) -> str | None:
    return None if b is None else base64.b64encode(b).decode("ascii")


def _unb64(s: Any, where: str) -> bytes | None:
    if s is None:
        return None
    if not isinstance(s, str):
        raise RecordingError(f"{where}: expected base64 text or null, got {type(s).__name__}")
    try:
        return base64.b64decode(s, validate=True)
    except ValueError as exc:
        raise RecordingError(f"{where}: bad base64 ({exc})") from None


def parse_schema(value: bytes | None) -> tuple[dict[str, Any] | None, float | None]:
    """(``schema`` {name, version}, ``ts``) of a kubetide JSON message, or (None, None)."""
    if not value or value[:1] != b"{":
        return None, None
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    ref = obj.get("schema")
    schema = None
    if isinstance(ref, dict) and isinstance(ref.get("name"), str):
        schema = {"name": ref["name"], "version": ref.get("version")}
    ts = obj.get("ts", obj.get("made_at"))
    ts = float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None
    return schema, ts


def record_line(r: Record) -> bytes:
    obj = {"type": "record", "topic": r.topic, "partition": r.partition, "offset": r.offset,
           "timestamp_ms": r.timestamp_ms, "timestamp_type": r.timestamp_type, "key": _b64(r.key),
           "value": _b64(r.value), "headers": [[k, _b64(v)] for k, v in r.headers], "schema": r.schema, "ts": r.ts}
    return orjson.dumps(obj) + b"\n"


def make_record(topic: str, partition: int, offset: int, timestamp_ms: int | None, key: bytes | None,
                value: bytes | None, headers: Iterable[tuple[str, bytes | None]] = (),
                timestamp_type: int = 0) -> Record:
    schema, ts = parse_schema(value)
    return Record(topic, partition, offset, timestamp_ms, key, value,
                  tuple((str(k), None if v is None else bytes(v)) for k, v in headers), timestamp_type, schema, ts)


def _record_from(obj: dict[str, Any], where: str) -> Record:
    try:
        topic, partition, offset = obj["topic"], obj["partition"], obj["offset"]
    except KeyError as exc:
        raise RecordingError(f"{where}: record without {exc.args[0]!r}") from None
    if not isinstance(topic, str) or not topic:
        raise RecordingError(f"{where}: 'topic' must be a non-empty string")
    for name, v in (("partition", partition), ("offset", offset)):
        if type(v) is not int or v < 0:
            raise RecordingError(f"{where}: {name!r} must be a non-negative integer, got {v!r}")
    tsm = obj.get("timestamp_ms")
    if tsm is not None and type(tsm) is not int:
        raise RecordingError(f"{where}: 'timestamp_ms' must be an integer or null, got {tsm!r}")
    raw_headers = obj.get("headers") or []
    if not isinstance(raw_headers, list):
        raise RecordingError(f"{where}: 'headers' must be a list of [name, base64] pairs")
    headers = []
    for i, h in enumerate(raw_headers):
        if not (isinstance(h, list) and len(h) == 2 and isinstance(h[0], str)):
            raise RecordingError(f"{where}: headers[{i}] must be [name, base64 or null]")
        headers.append((h[0], _unb64(h[1], f"{where}: headers[{i}]")))
    value = _unb64(obj.get("value"), f"{where}: 'value'")
    schema, ts = parse_schema(value)
    return Record(topic, partition, offset, tsm, _unb64(obj.get("key"), f"{where}: 'key'"), value,
                  tuple(headers), int(obj.get("timestamp_type") or 0), schema, ts)


# ------------------------------------------------------------------------------------------ writing
class RecordingWriter:
    """Writes a recording: header at open, one line per record, footer at :meth:`close`."""

    def __init__(self, path: str | Path, topic_partitions: dict[str, int], *, source: dict[str, Any] | None = None,
                 flush_every_s: float = 1.0, now: float | None = None) -> None:
        self.path = Path(path)
        self.counts: Counter[str] = Counter()
        self.flush_every_s = flush_every_s
        self._raw: IO[bytes] = open(self.path, "wb")
        self._zstd: Any = None
        if self.path.suffix == ".zst":
            try:
                import zstandard
            except ImportError:
                self._raw.close()
                raise RecordingError("writing .zst needs the 'zstandard' package; use a .gz file name") from None
            self._zstd = zstandard.ZstdCompressor(level=3).stream_writer(self._raw, closefd=False)
            self._out: Any = self._zstd
        else:
            self._out = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6, mtime=0)
        self._last_flush = time.monotonic()
        header = {"type": "header", "format": FORMAT, "format_version": FORMAT_VERSION,
                  "kubetide_version": __version__, "topics": dict(topic_partitions),
                  "started_at": time.time() if now is None else now, "source": source or {}}
        self._out.write(orjson.dumps(header) + b"\n")
        self.flush()

    def write(self, r: Record) -> None:
        self._out.write(record_line(r))
        self.counts[r.topic] += 1
        self.maybe_flush()

    def maybe_flush(self) -> None:
        """Flush if the last flush is older than ``flush_every_s`` (call it when idle, too)."""
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        if self._zstd is not None:
            import zstandard

            self._zstd.flush(zstandard.FLUSH_FRAME)
        else:
            self._out.flush()  # Z_SYNC_FLUSH: everything so far is decodable
        self._raw.flush()
        self._last_flush = time.monotonic()

    def close(self, stopped: str = "", now: float | None = None) -> None:
        if self._raw.closed:
            return
        footer = {"type": "footer", "ended_at": time.time() if now is None else now,
                  "records": dict(sorted(self.counts.items())), "stopped": stopped}
        self._out.write(orjson.dumps(footer) + b"\n")
        self._out.close()
        self._raw.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close("error" if exc[0] else "")


# ------------------------------------------------------------------------------------------ reading
def _chunks(path: Path, chunk: int = 1 << 16) -> Iterator[bytes]:
    """Decompressed bytes of ``path``; a truncated compressed stream yields what is decodable."""
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        if head[:2] == GZIP_MAGIC:
            d = zlib.decompressobj(wbits=31)
            while True:
                data = f.read(chunk)
                if not data:
                    yield d.flush()
                    return
                while data:
                    yield d.decompress(data)
                    if d.eof:  # concatenated gzip members
                        data = d.unused_data
                        d = zlib.decompressobj(wbits=31)
                    else:
                        data = b""
        elif head == ZSTD_MAGIC:
            try:
                import zstandard
            except ImportError:
                raise RecordingError(f"{path}: zstd-compressed; install the 'zstandard' package to read it") from None
            reader = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
            try:
                while data := reader.read(chunk):
                    yield data
            except zstandard.ZstdError:
                return  # truncated: what was decoded stands
        else:
            while data := f.read(chunk):
                yield data


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line without newline, complete?) of the decompressed file."""
    buf = b""
    n = 0
    try:
        for data in _chunks(path):
            buf += data
            *full, buf = buf.split(b"\n")
            for line in full:
                n += 1
                yield n, line, True
    except zlib.error as exc:
        raise RecordingError(f"{path}: corrupt compressed data after line {n}: {exc}") from None
    if buf:
        yield n + 1, buf, False


@dataclass
class Recording:
    """A recording read into memory: header, records (file order), footer (None if absent)."""

    path: Path
    header: dict[str, Any]
    records: list[Record]
    footer: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def by_partition(self, wanted: Iterable[str] | None = None) -> dict[tuple[str, int], list[Record]]:
        keep = None if wanted is None else set(wanted)
        out: dict[tuple[str, int], list[Record]] = {}
        for r in self.records:
            if keep is None or r.topic in keep:
                out.setdefault((r.topic, r.partition), []).append(r)
        for recs in out.values():
            recs.sort(key=lambda r: r.offset)
        return out

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.topic for r in self.records).items()))


def read_recording(path: str | Path) -> Recording:
    """Read and check a whole recording. Raises :class:`RecordingError` naming the line at fault."""
    p = Path(path)
    if not p.is_file():
        raise RecordingError(f"{p}: no such file")
    header: dict[str, Any] | None = None
    footer: dict[str, Any] | None = None
    records: list[Record] = []
    warnings: list[str] = []
    for n, line, complete in _lines(p):
        where = f"{p}:{n}"
        if not complete:
            warnings.append(f"{where}: truncated last line ignored (the recorder did not stop cleanly)")
            break
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise RecordingError(f"{where}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise RecordingError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        kind = obj.get("type")
        if header is None:
            if kind != "header" or obj.get("format") != FORMAT:
                raise RecordingError(f"{where}: not a kubetide recording (line 1 must be the header with "
                                     f"format {FORMAT!r})")
            version = obj.get("format_version")
            if version != FORMAT_VERSION:
                raise RecordingError(f"{where}: recording format version {version!r} is not supported "
                                     f"(this kubetide reads version {FORMAT_VERSION})")
            header = obj
        elif kind == "record":
            if footer is not None:
                raise RecordingError(f"{where}: record after the footer")
            records.append(_record_from(obj, where))
        elif kind == "footer":
            footer = obj
        else:
            raise RecordingError(f"{where}: unknown line type {kind!r} (want record or footer)")
    if header is None:
        raise RecordingError(f"{p}: empty recording (no header line)")
    if footer is None and not warnings:
        warnings.append(f"{p}: no footer (the recorder did not stop cleanly); all complete records are used")
    return Recording(p, header, records, footer, warnings)


# ------------------------------------------------------------------------------------------ offline replay
@dataclass
class OfflineResult:
    decisions: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # (topic, key, encoded value)
    inputs: Counter[str] = field(default_factory=Counter)
    deadletters: Counter[str] = field(default_factory=Counter)  # "topic: reason"
    ticks: int = 0

    def lines(self) -> list[bytes]:
        return [v for _, _, v in self.decisions]

    def digest(self) -> str:
        h = hashlib.sha256()
        for line in self.lines():
            h.update(line + b"\n")
        return h.hexdigest()


def offline_order(rec: Recording) -> Iterator[Record]:
    """The recorded events and metrics in the deterministic order the offline replay feeds them."""
    parts = rec.by_partition(OFFLINE_TOPICS)
    streams = [parts[k] for k in sorted(parts)]
    return heapq.merge(*streams, key=lambda r: (r.event_time, _TOPIC_RANK[r.topic], r.partition, r.offset))


def replay_offline(rec: Recording, settings: Any = None, *, progress: Any = None) -> OfflineResult:
    """Feed ``rec``'s cluster.events and cluster.metrics through streams/core as the faust agents do."""
    from kubetide.codec import DecodeError, decode, encode
    from streams.agents import _new_planner
    from streams.core.messages import forward_event, split_metrics
    from streams.core.planner import decision_kafka_key, decision_topic
    from streams.core.settings import StreamsSettings

    settings = settings if settings is not None else StreamsSettings.from_config({})
    planner = _new_planner(settings)
    out = OfflineResult()
    for r in offline_order(rec):
        out.inputs[r.topic] += 1
        if progress is not None:
            progress()
        try:
            msg = decode(r.topic, r.value)
            # split-metrics / forward-events: the planner-input message goes through Kafka, so the codec
            pin = forward_event(msg) if r.topic == topics.CLUSTER_EVENTS else split_metrics(msg)[1]
            pin = decode(topics.PLANNER_INPUT, encode(pin))
            for d in planner.handle(pin):  # the planner agent
                out.decisions.append((decision_topic(d), decision_kafka_key(d), encode(d)))
        except DecodeError as exc:
            out.deadletters[f"{r.topic}: {exc.reason}"] += 1
        except Exception as exc:  # the agents dead-letter processing errors and go on
            out.deadletters[f"{r.topic}: processing ({type(exc).__name__})"] += 1
    out.ticks = planner.ticks_planned
    return out


def _decision_key(value: bytes) -> tuple[str, str]:
    """(strategy, identity) of an encoded decision: what stays the same when only its numbers change."""
    obj = orjson.loads(value)
    strategy = str(obj.get("strategy", "?"))
    pod = obj.get("pod") or {}
    target = (f"{pod.get('namespace')}/{pod.get('name')} from {obj.get('from_node')}" if pod
              else str(obj.get("workload") or obj.get("node_group") or obj.get("id")))
    return strategy, f"{obj.get('schema', {}).get('name')} @{obj.get('made_at')} {target}"


@dataclass
class Comparison:
    only_a: list[bytes] = field(default_factory=list)
    only_b: list[bytes] = field(default_factory=list)
    changed: list[tuple[bytes, bytes]] = field(default_factory=list)
    same: int = 0
    per_strategy: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not (self.only_a or self.only_b or self.changed)


def compare(a: list[bytes], b: list[bytes]) -> Comparison:
    def index(lines: list[bytes]) -> dict[tuple[str, str, int], bytes]:
        seen: Counter[tuple[str, str]] = Counter()
        out = {}
        for v in lines:
            k = _decision_key(v)
            out[(*k, seen[k])] = v
            seen[k] += 1
        return out

    ia, ib = index(a), index(b)
    c = Comparison()

    def bump(strategy: str, what: str) -> None:
        c.per_strategy.setdefault(strategy, Counter())[what] += 1

    for k, v in ia.items():
        bump(k[0], "a")
        if k not in ib:
            c.only_a.append(v)
            bump(k[0], "only_a")
        elif ib[k] != v:
            c.changed.append((v, ib[k]))
            bump(k[0], "changed")
        else:
            c.same += 1
            bump(k[0], "same")
    for k, v in ib.items():
        bump(k[0], "b")
        if k not in ia:
            c.only_b.append(v)
            bump(k[0], "only_b")
    return c


def _describe(value: bytes) -> str:
    obj = orjson.loads(value)
    pod = obj.get("pod") or {}
    return (f"{obj.get('strategy')} {obj.get('id')} made_at={obj.get('made_at')} "
            f"{pod.get('namespace')}/{pod.get('name')} {obj.get('from_node')} -> {obj.get('to_nodes')}: "
            f"{obj.get('reason')}")


# ------------------------------------------------------------------------------------------ report
def node_cpu_series(rec: Recording) -> dict[str, list[tuple[float, float]]]:
    """{node: [(event ts, CPU %)]} from the recorded cluster.metrics (undecodable records skipped)."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in rec.records:
        if r.topic != topics.CLUSTER_METRICS or not r.value:
            continue
        try:
            obj = orjson.loads(r.value)
            alloc = float(obj["node_allocatable"]["cpu_cores"])
            if alloc > 0:
                out.setdefault(str(obj["node"]), []).append(
                    (float(obj["ts"]), 100.0 * float(obj["node_usage"]["cpu_cores"]) / alloc))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    for pts in out.values():
        pts.sort()
    return dict(sorted(out.items()))


def _svg_chart(series: dict[str, list[tuple[float, float]]], marks: list[tuple[float, str]],
               width: int = 900, height: int = 300) -> str:
    from html import escape

    pts = [p for s in series.values() for p in s]
    if not pts:
        return "<p>no cluster.metrics in the recording</p>"
    t0, t1 = min(p[0] for p in pts), max(p[0] for p in pts)
    span = (t1 - t0) or 1.0
    pad = 40

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * (t - t0) / span

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * min(max(v, 0.0), 100.0) / 100.0

    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
             f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" '
             'stroke="#ccc"/>']
    for v in (0, 50, 100):
        parts.append(f'<text x="4" y="{y(v) + 4:.1f}" font-size="10">{v}%</text>')
    for i, (node, s) in enumerate(series.items()):
        c = colours[i % len(colours)]
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in s)
        parts.append(f'<polyline fill="none" stroke="{c}" points="{line}"><title>{escape(node)}</title></polyline>')
        parts.append(f'<text x="{width - pad + 2}" y="{pad + 12 * i + 10}" font-size="10" fill="{c}">'
                     f"{escape(node[:12])}</text>")
    for t, label in marks:
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{pad}" y2="{height - pad}" stroke="red" '
                     f'stroke-dasharray="3,3"><title>{escape(label)}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


def write_report(path: str | Path, rec: Recording, res: OfflineResult, *, title: str = "kubetide offline replay",
                 comparison: Comparison | None = None) -> Path:
    """An HTML (self-contained, inline SVG) or PNG (needs matplotlib) report of an offline replay."""
    from html import escape

    p = Path(path)
    series = node_cpu_series(rec)
    decisions = [orjson.loads(v) for v in res.lines()]
    marks = [(float(d.get("made_at", 0)), f"{d.get('strategy')}: {d.get('reason')}") for d in decisions]
    if p.suffix.lower() == ".png":
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise RecordingError("a PNG report needs matplotlib; use a .html report instead") from None
        fig, ax = plt.subplots(figsize=(11, 4))
        t0 = min([p[0] for s in series.values() for p in s[:1]] + [t for t, _ in marks] or [0.0])
        for node, s in series.items():
            ax.plot([t - t0 for t, _ in s], [v for _, v in s], label=node, linewidth=1)
        for t, _ in marks:
            ax.axvline(t - t0, color="red", linestyle="--", linewidth=0.8)
        ax.set_xlabel(f"event time (s after {t0:.0f})")
        ax.set_ylabel("node CPU %")
        ax.set_title(f"{title}: {len(decisions)} decisions (red)")
        if len(series) <= 12:
            ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        fig.savefig(p, dpi=100)
        plt.close(fig)
        return p
    per = Counter(d.get("strategy", "?") for d in decisions)
    rows = "".join(f"<tr><td>{escape(str(d.get('made_at')))}</td><td>{escape(str(d.get('strategy')))}</td>"
                   f"<td>{escape(str((d.get('pod') or {}).get('namespace')))}/"
                   f"{escape(str((d.get('pod') or {}).get('name')))}</td><td>{escape(str(d.get('from_node')))}</td>"
                   f"<td>{escape(', '.join(d.get('to_nodes') or []))}</td><td>{escape(str(d.get('reason')))}</td></tr>"
                   for d in decisions)
    html = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
            "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:2px 6px}"
            "table{border-collapse:collapse}</style></head><body>",
            f"<h1>{escape(title)}</h1><p>recording {escape(str(rec.path))} (kubetide "
            f"{escape(str(rec.header.get('kubetide_version')))}); inputs "
            f"{escape(', '.join(f'{k}: {v}' for k, v in sorted(res.inputs.items())))}; "
            f"{res.ticks} planner ticks; {len(decisions)} decisions; sha256 {res.digest()}</p>",
            "<h2>Node CPU and decisions</h2>", _svg_chart(series, marks),
            "<h2>Decisions per strategy</h2><table><tr><th>strategy</th><th>decisions</th></tr>",
            "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in sorted(per.items())), "</table>"]
    if res.deadletters:
        html += ["<h2>Dead-lettered inputs</h2><table>",
                 "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in sorted(res.deadletters.items())),
                 "</table>"]
    if comparison is not None:
        html += ["<h2>Comparison (A = default config, B = other)</h2><table><tr><th>strategy</th><th>A</th>"
                 "<th>B</th><th>same</th><th>only in A</th><th>only in B</th><th>changed</th></tr>",
                 "".join(f"<tr><td>{escape(k)}</td>" + "".join(f"<td>{c[f]}</td>" for f in
                                                               ("a", "b", "same", "only_a", "only_b", "changed"))
                         + "</tr>" for k, c in sorted(comparison.per_strategy.items())), "</table>"]
    html += ["<h2>Decisions</h2><table><tr><th>made_at</th><th>strategy</th><th>pod</th><th>from</th><th>to</th>"
             "<th>reason</th></tr>", rows, "</table></body></html>"]
    p.write_text("".join(html))
    return p


# ------------------------------------------------------------------------------------------ broker replay
def replay_order(rec: Recording, wanted: Iterable[str] | None = None) -> Iterator[Record]:
    """Records in Kafka-timestamp order, merged across partitions (each keeps its recorded order)."""
    parts = rec.by_partition(wanted)
    streams = [parts[k] for k in sorted(parts)]
    return heapq.merge(*streams, key=lambda r: (r.timestamp_ms or 0, r.topic, r.partition, r.offset))


async def replay_to_broker(rec: Recording, bootstrap: str, *, speed: float | None = None,
                           wanted: Iterable[str] | None = None, embedded: bool = True, create_topics: bool = True,
                           progress: Any = None, stop: asyncio.Event | None = None) -> Counter[str]:
    """Produce ``rec``'s records into ``bootstrap``; ``speed`` None = as fast as possible. Returns counts."""
    from aiokafka import AIOKafkaProducer

    from kubetide.kafka import ensure_topics, producer_config, topic_partitions

    chosen = list(rec.header.get("topics") or {}) if wanted is None else list(wanted)
    recorded = {r.topic for r in rec.records}
    chosen = [t for t in chosen if t in recorded or t in (rec.header.get("topics") or {})]
    if create_topics and chosen:
        specs = []
        for t in chosen:
            if t in topics.BY_NAME:
                specs.append(topics.spec(t))
            else:
                n = int((rec.header.get("topics") or {}).get(t) or 1)
                specs.append(topics.TopicSpec(t, "", n))
        await ensure_topics(bootstrap, specs)
    parts = await topic_partitions(bootstrap)
    producer = AIOKafkaProducer(**producer_config(bootstrap, embedded, client_id="kubetide-replay"))
    await producer.start()
    sent: Counter[str] = Counter()
    pending: list[asyncio.Future] = []
    try:
        t0_rec: float | None = None
        t0_wall = time.monotonic()
        for r in replay_order(rec, chosen):
            if stop is not None and stop.is_set():
                break
            if speed and r.timestamp_ms is not None:
                if t0_rec is None:
                    t0_rec, t0_wall = r.timestamp_ms / 1000.0, time.monotonic()
                wait = t0_wall + (r.timestamp_ms / 1000.0 - t0_rec) / speed - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            partition = r.partition if r.partition < parts.get(r.topic, 0) else None
            fut = await producer.send(r.topic, r.value, key=r.key, partition=partition,
                                      timestamp_ms=r.timestamp_ms, headers=list(r.headers) or None)
            pending.append(fut)
            sent[r.topic] += 1
            if progress is not None:
                progress()
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a recording written by `kubetide record` (.gz, .zst or plain JSON Lines)")
    parser.add_argument("--bootstrap-servers", default=None,
                        help="Kafka bootstrap servers to replay into (default: $KUBETIDE_BOOTSTRAP, "
                             "else kafka.bootstrap_servers of the config)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=None,
                      help="replay X times faster than recorded, paced by the Kafka timestamps (1 = real time)")
    pace.add_argument("--as-fast-as-possible", action="store_true",
                      help="do not wait between records (the default)")
    parser.add_argument("--topics", default=None, help="comma-separated topics to replay (default: all recorded)")
    parser.add_argument("--embedded-broker", action="store_true",
                        default=os.environ.get("KUBETIDE_EMBEDDED_BROKER", "") in ("1", "true"),
                        help="the target is kubetide's embedded broker")
    parser.add_argument("--no-create-topics", dest="create_topics", action="store_false",
                        help="do not create missing topics before producing")
    parser.add_argument("--offline", action="store_true",
                        help="no broker: run cluster.events + cluster.metrics through streams/core and "
                             "output the decisions")
    parser.add_argument("--config", default=None,
                        help="kubetide YAML config for --offline (default: $KUBETIDE_CONFIG); with --compare, "
                             "the config B compared to the default")
    parser.add_argument("--compare", action="store_true",
                        help="with --offline --config B.yaml: replay with the default config and with B, "
                             "print the decisions only in A, only in B, and changed")
    parser.add_argument("--out", default=None,
                        help="--offline: write the decisions here (one encoded message per line; default stdout). "
                             "With --compare: the differences as JSON")
    parser.add_argument("--report", default=None, metavar="FILE.html|FILE.png",
                        help="--offline: also write a report (node CPU over event time with the decisions; "
                             "per-strategy counts); .png needs matplotlib")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _progress(total: int, label: str, quiet: bool) -> Any:
    """A rich progress bar on stderr (a no-op context when quiet); yields an advance() callable."""
    import contextlib

    if quiet:
        return contextlib.nullcontext(None)

    @contextlib.contextmanager
    def bar() -> Iterator[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=_console(), transient=True) as p:
            task = p.add_task(label, total=total)
            n = 0

            def advance() -> None:
                nonlocal n
                n += 1
                if n % 200 == 0 or n == total:
                    p.update(task, completed=n)

            yield advance

    return bar()


def _settings_for(path: str | None) -> Any:
    from kubetide.config import load
    from streams.core.settings import StreamsSettings

    return StreamsSettings.from_config(load(path))


def _counts_table(title: str, rows: dict[str, int], first: str = "topic") -> Any:
    from rich.table import Table

    t = Table(title=title)
    t.add_column(first)
    t.add_column("count", justify="right")
    for k, v in rows.items():
        t.add_row(k, str(v))
    return t


def _run_offline(args: argparse.Namespace, rec: Recording) -> int:
    console = _console()
    n_in = sum(1 for r in rec.records if r.topic in OFFLINE_TOPICS)
    if args.compare:
        if not args.config:
            print("kubetide replay: --compare needs --config B.yaml (compared with the default config)",
                  file=sys.stderr)
            return 2
        sa, sb = _settings_for(None), _settings_for(args.config)
        with _progress(n_in, "replay A (default config)", args.quiet) as adv:
            ra = replay_offline(rec, sa, progress=adv)
        with _progress(n_in, f"replay B ({args.config})", args.quiet) as adv:
            rb = replay_offline(rec, sb, progress=adv)
        c = compare(ra.lines(), rb.lines())
        from rich.table import Table

        t = Table(title=f"decisions: A = default config, B = {args.config}")
        for col in ("strategy", "A", "B", "same", "only in A", "only in B", "changed"):
            t.add_column(col, justify="left" if col == "strategy" else "right")
        for strategy, cnt in sorted(c.per_strategy.items()):
            t.add_row(strategy, *(str(cnt[k]) for k in ("a", "b", "same", "only_a", "only_b", "changed")))
        console.print(t)
        out = sys.stdout
        for v in c.only_a:
            print(f"only in A: {_describe(v)}", file=out)
        for v in c.only_b:
            print(f"only in B: {_describe(v)}", file=out)
        for va, vb in c.changed:
            print(f"changed:   A {_describe(va)}\n           B {_describe(vb)}", file=out)
        if c.identical:
            print(f"no differences ({c.same} decisions the same)", file=out)
        if args.out:
            doc = {"a": {"config": None, "decisions": len(ra.decisions), "sha256": ra.digest()},
                   "b": {"config": args.config, "decisions": len(rb.decisions), "sha256": rb.digest()},
                   "same": c.same, "per_strategy": {k: dict(v) for k, v in sorted(c.per_strategy.items())},
                   "only_a": [orjson.loads(v) for v in c.only_a], "only_b": [orjson.loads(v) for v in c.only_b],
                   "changed": [[orjson.loads(x), orjson.loads(y)] for x, y in c.changed]}
            Path(args.out).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        if args.report:
            write_report(args.report, rec, rb, title=f"kubetide offline replay with {args.config}", comparison=c)
        return 0
    settings = _settings_for(args.config)
    with _progress(n_in, "offline replay", args.quiet) as adv:
        res = replay_offline(rec, settings, progress=adv)
    data = b"".join(line + b"\n" for line in res.lines())
    if args.report:
        write_report(args.report, rec, res)
    if args.out:
        Path(args.out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    if not args.quiet:
        per = Counter(orjson.loads(v)["strategy"] for v in res.lines())
        console.print(_counts_table("offline replay: inputs", dict(sorted(res.inputs.items()))))
        console.print(_counts_table("decisions per strategy", dict(sorted(per.items())), "strategy"))
        if res.deadletters:
            console.print(_counts_table("dead-lettered inputs", dict(sorted(res.deadletters.items())), "topic: reason"))
        console.print(f"{len(res.decisions)} decisions from {res.ticks} planner ticks; sha256 {res.digest()}"
                      + (f"; written to {args.out}" if args.out else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    from kubetide.config import ConfigError

    if args.speed is not None and args.speed <= 0:
        print("kubetide replay: --speed must be > 0", file=sys.stderr)
        return 2
    if (args.compare or args.report) and not args.offline:
        print("kubetide replay: --compare and --report work with --offline only", file=sys.stderr)
        return 2
    try:
        rec = read_recording(args.file)
    except RecordingError as exc:
        print(f"kubetide replay: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        for w in rec.warnings:
            print(f"kubetide replay: warning: {w}", file=sys.stderr)
    try:
        if args.offline:
            return _run_offline(args, rec)
    except (RecordingError, ConfigError) as exc:  # a bad config; a PNG report without matplotlib
        print(f"kubetide replay: {exc}", file=sys.stderr)
        return 2
    try:
        from workers.common import bootstrap_from

        bootstrap = bootstrap_from(args)
    except ConfigError as exc:
        print(f"kubetide replay: {exc}", file=sys.stderr)
        return 2
    wanted = None if not args.topics else [t.strip() for t in args.topics.split(",") if t.strip()]
    total = sum(1 for r in rec.records if wanted is None or r.topic in wanted)
    from workers.common import run_main

    result: dict[str, Counter[str]] = {}

    async def main(stop: asyncio.Event) -> int:
        with _progress(total, "replaying", args.quiet) as adv:
            result["sent"] = await replay_to_broker(
                rec, bootstrap, speed=args.speed, wanted=wanted, embedded=args.embedded_broker,
                create_topics=args.create_topics, progress=adv, stop=stop)
        return 0

    from aiokafka.errors import KafkaError

    from kubetide.kafka import TopicSetupError

    try:
        rc = run_main(main, "replay")
    except (KafkaError, OSError, TimeoutError, TopicSetupError) as exc:
        print(f"kubetide replay: cannot replay into {bootstrap}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not args.quiet and "sent" in result:
        _console().print(_counts_table(f"replayed into {bootstrap}", dict(sorted(result["sent"].items()))))
    return rc
