"""Per-app usage profiles in bounded memory: rolling percentiles over event-time windows (pure numpy).

The sketch
----------
Each window (default 1 h and 24 h) is a ring of ``buckets_per_window`` time buckets (default
12: 5-minute buckets for 1 h, 2-hour buckets for 24 h). Each bucket holds, per metric (CPU,
memory), a sparse **log-spaced histogram** (DDSketch-style): a value ``v`` goes to bin
``k = ceil(log(v) / log(γ))`` with ``γ = (1 + α) / (1 − α)``; values ≤ ``min_value`` go to a
zero bin. A quantile is read as the representative value ``2γ^k / (γ + 1)`` of the bin holding
the sample of rank ``floor(q · (n − 1))``.

Error: the **relative value error** is ≤ α (``relative_accuracy``, default 0.01 = 1 %) against
the exact order statistic of the same data; the *rank* is exact at bin granularity, i.e. the rank
error is at most the share of samples that fall in the one bin holding the answer (those samples
all lie within ±α of the answer). ``max`` is exact. The window slides by whole buckets: a 1 h
window covers between 55 and 60 minutes of data (the current bucket is partial).

Memory per app is bounded: ``len(windows) × buckets_per_window`` buckets, each with at most
``max_bins`` bins per metric (the lowest bins collapse beyond that, as in DDSketch; with α = 1 %,
2048 bins span 17 decades, so collapse does not happen on real data), plus pods seen within
``pods_window_s``. It does not grow with the number of samples. Histograms with the same α are
mergeable (add counts per bin). The state serialises to compact JSON bytes for a faust table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from kubetide.models import Percentiles, Profile, ProfileWindow, Resources
from streams.core.messages import AppSamples

ZERO_KEY = -(2**40)
QUANTILES = (0.50, 0.90, 0.95, 0.99)
_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class ProfileSettings:
    windows_s: tuple[float, ...] = (3600.0, 86400.0)
    buckets_per_window: int = 12
    relative_accuracy: float = 0.01
    max_bins: int = 2048
    emit_interval_s: float = 60.0
    margin: float = 1.2
    min_samples: int = 10
    bursty_ratio: float = 3.0
    dominance: float = 1.5
    pods_window_s: float = 30.0

    def validate(self) -> None:
        if not self.windows_s or any(w <= 0 for w in self.windows_s):
            raise ValueError("windows_s: give one or more window lengths > 0 seconds")
        if len(set(self.windows_s)) != len(self.windows_s):
            raise ValueError("windows_s: windows must be distinct")
        if not 1 <= self.buckets_per_window <= 1440:
            raise ValueError("buckets_per_window: must be in [1, 1440]")
        if not 0 < self.relative_accuracy < 0.5:
            raise ValueError("relative_accuracy: must be in (0, 0.5)")
        if self.max_bins < 16:
            raise ValueError("max_bins: must be >= 16")
        if self.emit_interval_s < 0:
            raise ValueError("emit_interval_s: must be >= 0")
        if self.margin < 1:
            raise ValueError("margin: must be >= 1")
        if self.min_samples < 1:
            raise ValueError("min_samples: must be >= 1")
        if self.bursty_ratio <= 1:
            raise ValueError("bursty_ratio: must be > 1")
        if self.dominance < 1:
            raise ValueError("dominance: must be >= 1")
        if self.pods_window_s < 0:
            raise ValueError("pods_window_s: must be >= 0")


# ---------------------------------------------------------------- sparse log histogram

class LogHist:
    """Sparse log-spaced histogram: sorted int64 ``keys`` and int64 ``counts`` (numpy)."""

    __slots__ = ("counts", "keys")

    def __init__(self, keys: np.ndarray = _EMPTY, counts: np.ndarray = _EMPTY) -> None:
        self.keys = keys
        self.counts = counts

    @staticmethod
    def key_of(values: np.ndarray, log_gamma: float, min_value: float) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        k = np.ceil(np.log(np.maximum(v, min_value)) / log_gamma)
        return np.where(v > min_value, k, ZERO_KEY).astype(np.int64)

    @staticmethod
    def value_of(keys: np.ndarray, gamma: float) -> np.ndarray:
        k = np.asarray(keys, dtype=np.int64)
        out = 2.0 * np.power(gamma, np.where(k == ZERO_KEY, 0, k).astype(np.float64)) / (gamma + 1.0)
        return np.where(k == ZERO_KEY, 0.0, out)

    def add_keys(self, keys: np.ndarray, counts: np.ndarray | None = None, max_bins: int = 2048) -> None:
        if keys.size == 0:
            return
        if counts is None:
            counts = np.ones(keys.shape, dtype=np.int64)
        allk = np.concatenate([self.keys, keys])
        allc = np.concatenate([self.counts, counts.astype(np.int64)])
        uk, inv = np.unique(allk, return_inverse=True)
        uc = np.bincount(inv.ravel(), weights=allc, minlength=uk.size).astype(np.int64)
        if uk.size > max_bins:  # collapse the lowest bins into one (bounded memory)
            cut = uk.size - max_bins + 1
            uc = np.concatenate([[uc[:cut].sum()], uc[cut:]])
            uk = uk[cut - 1:]
        self.keys, self.counts = uk, uc

    def merge(self, other: LogHist, max_bins: int = 2048) -> None:
        self.add_keys(other.keys, other.counts, max_bins)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def quantiles(self, qs: tuple[float, ...], gamma: float) -> np.ndarray:
        n = self.n
        if n == 0:
            return np.zeros(len(qs))
        cum = np.cumsum(self.counts)
        ranks = np.floor(np.asarray(qs) * (n - 1))
        idx = np.searchsorted(cum, ranks + 1, side="left")
        return self.value_of(self.keys[idx], gamma)


# ---------------------------------------------------------------- per-app state

@dataclass
class Bucket:
    n: int = 0
    cpu_max: float = 0.0
    mem_max: float = 0.0
    cpu: LogHist = field(default_factory=LogHist)
    mem: LogHist = field(default_factory=LogHist)


@dataclass
class AppProfileState:
    """Everything the profiler keeps for one app (serialisable with :meth:`to_bytes`)."""

    settings: ProfileSettings
    namespace: str = ""
    app: str = ""
    last_ts: float | None = None
    last_emit_ts: float | None = None
    requests: tuple[float, float] | None = None
    pods: dict[str, float] = field(default_factory=dict)
    # per window index: bucket index -> Bucket
    buckets: list[dict[int, Bucket]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.buckets:
            self.buckets = [{} for _ in self.settings.windows_s]

    @property
    def gamma(self) -> float:
        a = self.settings.relative_accuracy
        return (1 + a) / (1 - a)

    def bucket_s(self, wi: int) -> float:
        return self.settings.windows_s[wi] / self.settings.buckets_per_window

    # ------------------------------------------------------------ updates
    def update(self, msg: AppSamples) -> None:
        """Add one message's samples (vectorised) or record its requests."""
        self.app, self.namespace = msg.app, msg.namespace
        if msg.requests is not None:
            self.requests = (msg.requests.cpu_cores, msg.requests.mem_bytes)
        if not msg.cpu_cores:
            return
        cpu = np.asarray(msg.cpu_cores, dtype=np.float64)
        mem = np.asarray(msg.mem_bytes, dtype=np.float64)
        self.add_samples(msg.ts, cpu, mem)
        for p in msg.pod:
            self.pods[p] = max(msg.ts, self.pods.get(p, msg.ts))

    def add_samples(self, ts: float, cpu: np.ndarray, mem: np.ndarray) -> None:
        s = self.settings
        lg = math.log(self.gamma)
        latest = ts if self.last_ts is None else max(self.last_ts, ts)
        ck = LogHist.key_of(cpu, lg, 1e-9)
        mk = LogHist.key_of(mem, lg, 1.0)
        for wi in range(len(s.windows_s)):
            bs = self.bucket_s(wi)
            b = math.floor(ts / bs)
            if b <= math.floor(latest / bs) - s.buckets_per_window:
                continue  # older than the window
            bucket = self.buckets[wi].setdefault(b, Bucket())
            bucket.n += int(cpu.size)
            bucket.cpu_max = max(bucket.cpu_max, float(cpu.max()))
            bucket.mem_max = max(bucket.mem_max, float(mem.max()))
            bucket.cpu.add_keys(ck, max_bins=s.max_bins)
            bucket.mem.add_keys(mk, max_bins=s.max_bins)
        self.last_ts = latest
        self._expire()

    def _expire(self) -> None:
        if self.last_ts is None:
            return
        s = self.settings
        for wi in range(len(s.windows_s)):
            cur = math.floor(self.last_ts / self.bucket_s(wi))
            for b in [b for b in self.buckets[wi] if b <= cur - s.buckets_per_window]:
                del self.buckets[wi][b]
        horizon = self.last_ts - s.pods_window_s
        self.pods = {p: t for p, t in self.pods.items() if t > horizon or t == self.last_ts}

    # ------------------------------------------------------------ reads
    def window(self, wi: int) -> tuple[int, LogHist, LogHist, float, float]:
        cpu, mem = LogHist(), LogHist()
        n, cmax, mmax = 0, 0.0, 0.0
        for b in sorted(self.buckets[wi]):
            bk = self.buckets[wi][b]
            n += bk.n
            cmax, mmax = max(cmax, bk.cpu_max), max(mmax, bk.mem_max)
            cpu.merge(bk.cpu, self.settings.max_bins)
            mem.merge(bk.mem, self.settings.max_bins)
        return n, cpu, mem, cmax, mmax

    def percentiles(self, wi: int) -> tuple[int, Percentiles, Percentiles]:
        n, cpu, mem, cmax, mmax = self.window(wi)
        g = self.gamma
        cq = [min(float(x), cmax) for x in cpu.quantiles(QUANTILES, g)]
        mq = [min(float(x), mmax) for x in mem.quantiles(QUANTILES, g)]
        return (n, Percentiles(p50=cq[0], p90=cq[1], p95=cq[2], p99=cq[3], max=cmax),
                Percentiles(p50=mq[0], p90=mq[1], p95=mq[2], p99=mq[3], max=mmax))

    def n_total(self) -> int:
        return sum(bk.n for w in self.buckets for bk in w.values())

    def bins(self) -> int:
        return sum(bk.cpu.keys.size + bk.mem.keys.size for w in self.buckets for bk in w.values())

    # ------------------------------------------------------------ serialisation
    def to_bytes(self) -> bytes:
        return orjson.dumps({
            "v": 1, "ns": self.namespace, "app": self.app, "last_ts": self.last_ts,
            "last_emit_ts": self.last_emit_ts, "requests": self.requests, "pods": self.pods,
            "alpha": self.settings.relative_accuracy, "windows_s": list(self.settings.windows_s),
            "nb": self.settings.buckets_per_window,
            "buckets": [[[b, bk.n, bk.cpu_max, bk.mem_max, bk.cpu.keys, bk.cpu.counts, bk.mem.keys, bk.mem.counts]
                         for b, bk in sorted(w.items())] for w in self.buckets],
        }, option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_bytes(cls, raw: bytes, settings: ProfileSettings) -> AppProfileState:
        """Restore a state; if the stored layout differs from ``settings`` the histograms restart."""
        d: dict[str, Any] = orjson.loads(raw)
        st = cls(settings=settings, namespace=d.get("ns", ""), app=d.get("app", ""), last_ts=d.get("last_ts"),
                 last_emit_ts=d.get("last_emit_ts"),
                 requests=tuple(d["requests"]) if d.get("requests") else None,  # type: ignore[arg-type]
                 pods=dict(d.get("pods") or {}))
        same = (d.get("alpha") == settings.relative_accuracy and d.get("nb") == settings.buckets_per_window
                and d.get("windows_s") == list(settings.windows_s))
        if same:
            for wi, w in enumerate(d["buckets"]):
                for b, n, cmax, mmax, ckeys, ccounts, mkeys, mcounts in w:
                    st.buckets[wi][int(b)] = Bucket(
                        n, cmax, mmax,
                        LogHist(np.asarray(ckeys, dtype=np.int64), np.asarray(ccounts, dtype=np.int64)),
                        LogHist(np.asarray(mkeys, dtype=np.int64), np.asarray(mcounts, dtype=np.int64)))
        return st


# ---------------------------------------------------------------- profile message

def should_emit(state: AppProfileState, ts: float) -> bool:
    """At most once per app per ``emit_interval_s`` of event time (aligned intervals)."""
    iv = state.settings.emit_interval_s
    if state.last_ts is None or state.n_total() == 0:
        return False
    if state.last_emit_ts is None or iv == 0:
        return True
    return math.floor(ts / iv) > math.floor(state.last_emit_ts / iv)


def classify(n: int, cpu: Percentiles, mem: Percentiles, requests: tuple[float, float] | None,
             s: ProfileSettings) -> str:
    if n < s.min_samples:
        return "unknown"
    if cpu.p50 > 0 and cpu.p99 / cpu.p50 >= s.bursty_ratio:
        return "bursty"
    if requests is None or requests[0] <= 0 or requests[1] <= 0:
        return "unknown"
    cr, mr = cpu.p95 / requests[0], mem.p95 / requests[1]
    if cr >= s.dominance * mr:
        return "cpu-bound"
    if mr >= s.dominance * cr:
        return "memory-bound"
    return "balanced"


def profile_message(state: AppProfileState, ts: float | None = None) -> Profile:
    """The ``profiles`` message for this app at event time ``ts`` (default: its latest sample)."""
    s = state.settings
    ts = state.last_ts if ts is None else ts
    assert ts is not None
    windows = []
    for wi, w in enumerate(s.windows_s):
        n, cpu, mem = state.percentiles(wi)
        if n:
            windows.append(ProfileWindow(window_s=w, samples=n, cpu_cores=cpu, mem_bytes=mem))
    longest = max(windows, key=lambda w: w.window_s) if windows else None
    ptype, recommended = "unknown", None
    if longest is not None:
        ptype = classify(longest.samples, longest.cpu_cores, longest.mem_bytes, state.requests, s)
        recommended = Resources(cpu_cores=longest.cpu_cores.p95 * s.margin,
                                mem_bytes=longest.mem_bytes.p95 * s.margin)
    last = state.last_ts or ts
    pods = sum(1 for t in state.pods.values() if t > last - s.pods_window_s or t == last)
    return Profile(
        ts=ts, namespace=state.namespace, app=state.app, pods=pods, windows=windows,
        requests=None if state.requests is None else Resources(cpu_cores=state.requests[0],
                                                               mem_bytes=state.requests[1]),
        recommended=recommended, type=ptype, period_s=None,  # type: ignore[arg-type]
    )


def update_and_profile(raw_state: bytes | None, msg: AppSamples,
                       settings: ProfileSettings) -> tuple[bytes, Profile | None]:
    """The profiler agent's whole step: state bytes + message → new state bytes, maybe a Profile."""
    st = AppProfileState.from_bytes(raw_state, settings) if raw_state else AppProfileState(settings)
    st.update(msg)
    out = None
    if msg.cpu_cores and should_emit(st, msg.ts):
        out = profile_message(st, msg.ts)
        st.last_emit_ts = msg.ts
    return st.to_bytes(), out
