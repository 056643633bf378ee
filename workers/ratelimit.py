"""Token buckets for the actuator: one global bucket that waits, and keyed buckets that refuse.

- :class:`TokenBucket`: the global limit (``evictions_per_minute``/``rate_burst``). ``acquire``
  waits for a token (FIFO): it never refuses, it only slows the actuator down.
- :class:`Bucket`: a pure token bucket on an explicit clock (``now`` passed in), unit-testable.
- :class:`KeyedLimiter`: buckets per node, per namespace and per workload. ``try_acquire`` takes
  one token from *every* bucket of a decision's keys, or from none of them (all-or-nothing), and
  otherwise answers how long to wait; the actuator turns that into ``skipped: rate-limit`` with
  ``retry_after_s`` and tries the decision again later (bounded), rather than dropping it.

A rate of 0 (or less) disables that kind of bucket. Times are real seconds (``time.monotonic``):
rate limits protect the API server and the workloads in wall-clock terms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


class Bucket:
    """``rate_per_min`` tokens a minute, at most ``burst`` saved up; starts full."""

    def __init__(self, rate_per_min: float, burst: int, now: float) -> None:
        self.rate = rate_per_min / 60.0
        self.capacity = float(max(1, burst))
        self.tokens = self.capacity
        self.last = now

    def refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def wait_for_token(self, now: float) -> float:
        """Seconds until one token is available (0 when one is there now)."""
        self.refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self.refill(now)
        self.tokens -= 1


class TokenBucket:
    """Global rate limit: ``rate_per_min`` tokens a minute, at most ``burst`` saved up (real time)."""

    def __init__(self, rate_per_min: float, burst: int) -> None:
        self.rate = rate_per_min / 60.0
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now

    async def acquire(self) -> float:
        """Take one token, waiting for it; returns the seconds waited."""
        t0 = time.monotonic()
        async with self._lock:  # FIFO: first come, first served
            while True:
                self._refill()
                if self.tokens >= 1:
                    self.tokens -= 1
                    return time.monotonic() - t0
                await asyncio.sleep((1 - self.tokens) / self.rate)


@dataclass(frozen=True)
class Limit:
    rate_per_min: float
    burst: int


@dataclass(frozen=True)
class Refusal:
    key: str  # e.g. "node:node-a-1"
    retry_after_s: float


class KeyedLimiter:
    """Token buckets per (kind, value), e.g. ("node", "node-a-1"); kinds with rate <= 0 are unlimited."""

    def __init__(self, limits: dict[str, Limit], clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.limits = {k: v for k, v in limits.items() if v.rate_per_min > 0}
        self.clock = clock
        self.max_keys = max_keys
        self.buckets: dict[tuple[str, str], Bucket] = {}

    def _bucket(self, kind: str, value: str, now: float) -> Bucket:
        b = self.buckets.get((kind, value))
        if b is None:
            if len(self.buckets) >= self.max_keys:  # forget full buckets: they behave like new ones
                for key in [k for k, x in self.buckets.items() if x.wait_for_token(now) == 0
                            and x.tokens >= x.capacity]:
                    del self.buckets[key]
            lim = self.limits[kind]
            b = self.buckets[(kind, value)] = Bucket(lim.rate_per_min, lim.burst, now)
        return b

    def try_acquire(self, keys: Iterable[tuple[str, str | None]]) -> Refusal | None:
        """Take a token from every bucket of ``keys`` (None values and unlimited kinds are ignored),
        all or nothing. None when taken; else the most limiting key and how long to wait."""
        now = self.clock()
        wanted = [(k, v) for k, v in keys if v and k in self.limits]
        worst: Refusal | None = None
        for kind, value in wanted:
            wait = self._bucket(kind, value, now).wait_for_token(now)
            if wait > 0 and (worst is None or wait > worst.retry_after_s):
                worst = Refusal(f"{kind}:{value}", wait)
        if worst is not None:
            return worst
        for kind, value in wanted:
            self._bucket(kind, value, now).take(now)
        return None
