"""Watch history (bounded, compactable) and label/field selectors."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass


class SelectorError(ValueError):
    pass


# ------------------------------------------------------------------ selectors

_SET_RE = re.compile(r"^\s*(!?)([A-Za-z0-9./_-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur:
        parts.append("".join(cur))
    return [p for p in (x.strip() for x in parts) if p]


def parse_label_selector(s: str | None) -> Callable[[dict], bool]:
    """Kubernetes label selector (=, ==, !=, in, notin, exists, !exists) -> predicate on a labels dict."""
    if not s:
        return lambda labels: True
    reqs: list[Callable[[dict], bool]] = []
    for part in _split_top(s):
        m = re.match(r"^([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)$", part)
        if m:
            k, op, v = m.groups()
            if op == "!=":
                reqs.append(lambda labels, k=k, v=v: labels.get(k) != v)
            else:
                reqs.append(lambda labels, k=k, v=v: labels.get(k) == v)
            continue
        m = _SET_RE.match(part)
        if not m:
            raise SelectorError(f"unable to parse requirement: {part!r}")
        neg, k, op, values = m.groups()
        if op:
            if neg:
                raise SelectorError(f"unable to parse requirement: {part!r}")
            vals = {v.strip() for v in values.split(",") if v.strip()}
            if op == "in":
                reqs.append(lambda labels, k=k, vals=vals: labels.get(k) in vals)
            else:
                reqs.append(lambda labels, k=k, vals=vals: labels.get(k) not in vals)
        elif neg:
            reqs.append(lambda labels, k=k: k not in labels)
        else:
            reqs.append(lambda labels, k=k: k in labels)
    return lambda labels: all(r(labels) for r in reqs)


def _field(obj: dict, path: str) -> str:
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(s: str | None) -> Callable[[dict], bool]:
    """Field selector over the rendered object (metadata.name, spec.nodeName, status.phase, ...)."""
    if not s:
        return lambda obj: True
    reqs = []
    for part in _split_top(s):
        m = re.match(r"^([A-Za-z0-9.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"invalid field selector: {part!r}")
        path, op, value = m.groups()
        if op == "!=":
            reqs.append(lambda o, p=path, v=value: _field(o, p) != v)
        else:
            reqs.append(lambda o, p=path, v=value: _field(o, p) == v)
    return lambda obj: all(r(obj) for r in reqs)


def make_filter(namespace: str | None, label_selector: str | None, field_selector: str | None
                ) -> Callable[[dict], bool]:
    lsel = parse_label_selector(label_selector)
    fsel = parse_field_selector(field_selector)

    def match(obj: dict) -> bool:
        meta = obj.get("metadata", {})
        if namespace is not None and meta.get("namespace") != namespace:
            return False
        return lsel(meta.get("labels") or {}) and fsel(obj)

    return match


# ------------------------------------------------------------------ event history


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED / MODIFIED / DELETED
    resource: str
    obj: dict
    prev: dict | None  # previous state for MODIFIED (selector transitions)


class EventLog:
    """Bounded history of watch events with a change notification for waiting watchers.

    ``compacted_rv``: events with rv <= compacted_rv are gone; a watch that asks to
    start at an rv below it gets 410 Expired.
    """

    def __init__(self, max_events: int = 1000):
        self.max_events = max_events
        self.events: list[Event] = []
        self.compacted_rv = 0
        self.current_rv = 0
        self._last: dict[tuple[str, str, str], dict] = {}
        self._changed = asyncio.Event()

    def append(self, rv: int, etype: str, resource: str, obj: dict) -> None:
        meta = obj["metadata"]
        key = (resource, meta.get("namespace", ""), meta["name"])
        prev = self._last.get(key)
        if etype == "DELETED":
            self._last.pop(key, None)
        else:
            self._last[key] = obj
        self.events.append(Event(rv, etype, resource, obj, prev if etype == "MODIFIED" else None))
        self.current_rv = rv
        if len(self.events) > self.max_events * 2 or len(self.events) > self.max_events + 256:
            drop = len(self.events) - self.max_events
            self.compacted_rv = self.events[drop - 1].rv
            del self.events[:drop]
        self.notify()

    def notify(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    def waiter(self) -> asyncio.Event:
        return self._changed

    def compact(self, keep: int = 0) -> int:
        """Drop history (all of it by default); returns the new compacted rv."""
        if keep <= 0:
            self.events.clear()
            self.compacted_rv = self.current_rv
        elif len(self.events) > keep:
            drop = len(self.events) - keep
            self.compacted_rv = self.events[drop - 1].rv
            del self.events[:drop]
        return self.compacted_rv

    def is_expired(self, rv: int) -> bool:
        return rv < self.compacted_rv

    def since(self, rv: int) -> list[Event]:
        """Events with rv > given rv (caller checks expiry first)."""
        ev = self.events
        lo, hi = 0, len(ev)
        while lo < hi:
            mid = (lo + hi) // 2
            if ev[mid].rv <= rv:
                lo = mid + 1
            else:
                hi = mid
        return ev[lo:]
