"""Per-app service profiles (服务画像) in bounded memory (pure numpy, event time only).

Percentiles
-----------
Each window (default 1 h, 24 h, 7 d) is a ring of ``buckets_per_window`` event-time buckets (default
12: 5-minute buckets for 1 h, 2-hour buckets for 24 h, 14-hour buckets for 7 d). Each bucket holds one
two-row :class:`~streams.core.sketch.QuantileSketch` (row 0 CPU cores, row 1 memory bytes). A window's
p50/p90/p95/p99 are read from its buckets merged on the fly; ``max`` is exact. The window slides by
whole buckets: a 1 h window covers between 55 and 60 minutes of data (the current bucket is partial).

Error: the returned value is a stored sample whose **rank is within ``err / n`` of the requested
quantile** (proven, see :mod:`streams.core.sketch`): exact while a window holds fewer than
``sketch_k`` samples per bucket, ≤ ``H / sketch_k`` otherwise (H = compaction levels), i.e. ≤ 0.5 %
up to 10⁶ samples per bucket and ≤ 1 % up to 2·10⁹ with the default ``sketch_k = 2048``.

Samples of one message are staged in a small per-app buffer and flushed into the windows' buckets
when it fills or the event-time bucket changes (one append per message instead of one per window).
When the windows' buckets nest (each a whole number of the finest window's buckets, as with the
defaults), raw samples go to the finest window only and each closed fine bucket is *merged* into
the coarser windows' buckets (the coarser windows read the still-open fine bucket on the fly);
merging adds the sketches' errors, so the bound above holds with ``H`` counted over both stages
(≤ 2·H / sketch_k). Late samples (for an already merged fine bucket) go to every window directly.

History and periodicity
-----------------------
A ring of ``history_slots`` slots of ``history_slot_s`` (default 2016 × 5 min = 7 days) holds the
sum of the app's per-pod CPU samples, their count, and the slot's number of scrape rounds (the most
samples any one pod of the app had in the slot; pods scraped at different instants on different nodes
still count one round per scrape). The slot value is the **app's total CPU** (sum / rounds): the
demand the app serves, which keeps its daily tide when an autoscaler holds the per-pod CPU flat. Every
``period_every_s`` of event time the dominant period is re-detected from it with
:func:`streams.core.forecast.detect_periods` (the one detector of the project): ``period_s`` and
``period_strength`` (its confidence), ``None`` when the app is not periodic; a period needs
``period_min_cycles`` (default 3) cycles in the history, so a daily period shows after 3 days. ``peak_hours`` are the
UTC hours of the day whose mean is within 20 % of the daily range below the peak (only for periodic
apps with a full day of history and a range above 10 % of the mean).

Memory per app is bounded by the layout, not the sample count: ``len(windows_s) ×
(buckets_per_window + 1)`` sketches of ``O(sketch_k log n)`` values each, the history ring, the
staging buffer and the pods seen within ``pods_window_s``.

Keys: the ``profiles`` topic is keyed by ``app`` (contract), so two namespaces with the same app
name share a message key (last one wins in compaction). Internally (tables, caches) the state is
keyed by ``namespace/app`` (:func:`state_key`), so their profiles are computed separately.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from kubetide.models import Percentiles, Profile, ProfileWindow, Resources
from streams.core.messages import AppSamples
from streams.core.sketch import QuantileSketch

QUANTILES = (0.50, 0.90, 0.95, 0.99)
_STATE_VERSION = 4  # 4: history keeps scrape rounds (app total CPU)


@dataclass(frozen=True)
class ProfileSettings:
    windows_s: tuple[float, ...] = (3600.0, 86400.0, 604800.0)
    buckets_per_window: int = 12
    sketch_k: int = 2048
    stage_size: int = 512
    emit_interval_s: float = 60.0
    margin: float = 1.2
    min_samples: int = 10
    bursty_ratio: float = 3.0
    dominance: float = 1.5
    pods_window_s: float = 30.0
    history_slot_s: float = 300.0
    history_slots: int = 2016
    period_every_s: float = 3600.0
    min_period_strength: float = 0.3
    period_min_cycles: float = 3.0

    def validate(self) -> None:
        if not self.windows_s or any(w <= 0 for w in self.windows_s):
            raise ValueError("windows_s: give one or more window lengths > 0 seconds")
        if len(set(self.windows_s)) != len(self.windows_s):
            raise ValueError("windows_s: windows must be distinct")
        if not 1 <= self.buckets_per_window <= 1440:
            raise ValueError("buckets_per_window: must be in [1, 1440]")
        if self.sketch_k < 64 or self.sketch_k % 2:
            raise ValueError("sketch_k: must be an even number >= 64")
        if not 1 <= self.stage_size <= 65536:
            raise ValueError("stage_size: must be in [1, 65536]")
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
        if self.history_slot_s <= 0:
            raise ValueError("history_slot_s: must be > 0")
        if not 8 <= self.history_slots <= 100_000:
            raise ValueError("history_slots: must be in [8, 100000]")
        if self.period_every_s < 0:
            raise ValueError("period_every_s: must be >= 0")
        if not 0 <= self.min_period_strength <= 1:
            raise ValueError("min_period_strength: must be in [0, 1]")
        if self.period_min_cycles < 2:
            raise ValueError("period_min_cycles: must be >= 2")


def state_key(namespace: str, app: str) -> str:
    """The internal key of an app's state: ``namespace/app`` (the topic key is only ``app``)."""
    return f"{namespace}/{app}"


# ---------------------------------------------------------------- per-app state

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
    # per window index: bucket index -> two-row sketch (cpu, mem)
    buckets: list[dict[int, QuantileSketch]] = field(default_factory=list)
    stage: np.ndarray = field(default_factory=lambda: np.empty((2, 0)))
    stage_fill: int = 0
    stage_bids: tuple[int, ...] = ()
    hist_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hist_cnt: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hist_rounds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hist_last: int | None = None
    slot_pods: dict[str, int] = field(default_factory=dict)  # samples per pod in the latest history slot
    period_at: int | None = None
    period_s: float | None = None
    period_strength: float | None = None
    peak_hours: list[int] = field(default_factory=list)
    merged_upto: int = -(2**62)  # finest-window buckets up to this one are merged into the coarser windows

    def __post_init__(self) -> None:
        s = self.settings
        if not self.buckets:
            self.buckets = [{} for _ in s.windows_s]
        if self.stage.shape[1] != s.stage_size:
            self.stage = np.empty((2, s.stage_size))
        if self.hist_sum.size != s.history_slots:
            self.hist_sum = np.zeros(s.history_slots)
            self.hist_cnt = np.zeros(s.history_slots, dtype=np.int64)
        if self.hist_rounds.size != s.history_slots:
            self.hist_rounds = np.zeros(s.history_slots, dtype=np.int64)
        self._bs = tuple(w / s.buckets_per_window for w in s.windows_s)
        # cascade: when every window's bucket is a whole number of the finest window's buckets, raw
        # samples go to the finest window only; each closed fine bucket is merged into the others
        self._fine = min(range(len(self._bs)), key=lambda i: self._bs[i])
        ratios = {wi: bs / self._bs[self._fine] for wi, bs in enumerate(self._bs) if wi != self._fine}
        self._ratios = {wi: round(r) for wi, r in ratios.items()} if all(
            abs(r - round(r)) < 1e-9 for r in ratios.values()) else {}
        # event-time ranges of the fast paths (empty until the first sample)
        self._lo, self._hi, self._expire_at = math.inf, -math.inf, -math.inf
        self._h_lo, self._h_hi, self._h_i = math.inf, -math.inf, 0

    # ------------------------------------------------------------ updates
    def update(self, msg: AppSamples) -> None:
        """Add one message's samples (vectorised) or record its requests."""
        self.app, self.namespace = msg.app, msg.namespace
        if msg.requests is not None:
            self.requests = (msg.requests.cpu_cores, msg.requests.mem_bytes)
        if not msg.cpu_cores:
            return
        self.add_samples(msg.ts, np.asarray(msg.cpu_cores, dtype=np.float64),
                         np.asarray(msg.mem_bytes, dtype=np.float64), pods=msg.pod)
        for p in msg.pod:
            self.pods[p] = max(msg.ts, self.pods.get(p, msg.ts))
        horizon = msg.ts - self.settings.pods_window_s
        if len(self.pods) > len(msg.pod) and min(self.pods.values()) <= horizon:
            last = self.last_ts
            self.pods = {p: t for p, t in self.pods.items() if t > horizon or t == last}

    def add_samples(self, ts: float, cpu: np.ndarray, mem: np.ndarray, cpu_sum: float | None = None,
                    pods: Sequence[str] | None = None, rounds: int = 1) -> None:
        """Add samples taken at event time ``ts`` (``cpu_sum`` = ``cpu.sum()`` if the caller has it).

        ``pods`` names the pods sampled, each ``rounds`` times (``cpu`` then holds ``rounds × len(pods)``
        values); it counts the history slot's scrape rounds. Without ``pods`` the call is one round.
        """
        m = cpu.size
        if m == 0:
            return
        if not self._lo <= ts < self._hi:  # another bucket of some window than the staged samples
            bids = tuple(math.floor(ts / bs) for bs in self._bs)
            if bids != self.stage_bids:
                self._flush()
                self.stage_bids = bids
            self._lo = max(b * bs for b, bs in zip(bids, self._bs, strict=True))
            self._hi = min((b + 1) * bs for b, bs in zip(bids, self._bs, strict=True))
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
            if ts >= self._expire_at:
                self._expire()
        f = self.stage_fill
        if f + m > self.stage.shape[1]:
            self._flush()
            f = 0
            if m > self.stage.shape[1]:
                self._insert(self.stage_bids, np.stack([cpu, mem]))
                m = 0
        if m:
            self.stage[0, f:f + m] = cpu
            self.stage[1, f:f + m] = mem
            self.stage_fill = f + m
        total = float(cpu.sum()) if cpu_sum is None else cpu_sum
        latest = self._h_lo <= ts < self._h_hi
        if latest:
            self.hist_sum[self._h_i] += total
            self.hist_cnt[self._h_i] += cpu.size
        else:
            latest = self._history(ts, total, cpu.size)
        if latest:  # the latest slot: count its scrape rounds (late samples add none)
            i, sp = self._h_i, self.slot_pods
            if pods is None:
                self.hist_rounds[i] += rounds
            else:
                top = int(self.hist_rounds[i])
                for p in pods:
                    c = sp[p] = sp.get(p, 0) + rounds
                    if c > top:
                        top = c
                self.hist_rounds[i] = top

    def _history(self, ts: float, total: float, count: int) -> bool:
        """Add to the history slot of ``ts`` (a newer slot becomes the latest one, clearing the slots skipped).
        True when that slot is the latest one."""
        s = self.settings
        slot = math.floor(ts / s.history_slot_s)
        if self.hist_last is None or slot > self.hist_last:
            if self.hist_last is None or slot - self.hist_last >= s.history_slots:
                self.hist_sum[:] = 0.0
                self.hist_cnt[:] = 0
                self.hist_rounds[:] = 0
            else:
                idx = np.arange(self.hist_last + 1, slot + 1) % s.history_slots
                self.hist_sum[idx] = 0.0
                self.hist_cnt[idx] = 0
                self.hist_rounds[idx] = 0
            self.hist_last = slot
            self.slot_pods = {}
        elif slot <= self.hist_last - s.history_slots:
            return False  # older than the history
        i = slot % s.history_slots
        self.hist_sum[i] += total
        self.hist_cnt[i] += count
        if slot != self.hist_last:
            return False
        # fast path for the next samples of the same slot
        self._h_lo, self._h_hi, self._h_i = slot * s.history_slot_s, (slot + 1) * s.history_slot_s, i
        return True

    def _insert(self, bids: tuple[int, ...], values: np.ndarray) -> None:
        latest = self.last_ts if self.last_ts is not None else -math.inf
        nb = self.settings.buckets_per_window
        f = self._fine
        targets: range | tuple[int, ...] = range(len(bids))
        if self._ratios and bids[f] > self.merged_upto:  # cascade: only the finest window takes raw samples
            if any(b > self.merged_upto for b in self.buckets[f] if b < bids[f]):
                self._merge_fine(bids[f] - 1)
            targets = (f,)
        for wi in targets:
            b = bids[wi]
            if b <= math.floor(latest / self._bs[wi]) - nb:
                continue  # older than the window
            sk = self.buckets[wi].get(b)
            if sk is None:
                sk = self.buckets[wi][b] = QuantileSketch(2, self.settings.sketch_k)
            sk.update(values)

    def _merge_fine(self, upto: int) -> None:
        """Merge the closed fine buckets (``merged_upto``, ``upto``] into the coarser windows' buckets."""
        f, nb = self._fine, self.settings.buckets_per_window
        latest = self.last_ts if self.last_ts is not None else -math.inf
        for b in sorted(b for b in self.buckets[f] if self.merged_upto < b <= upto):
            src = self.buckets[f][b]
            for wi, r in self._ratios.items():
                cb = b // r
                if cb <= math.floor(latest / self._bs[wi]) - nb:
                    continue
                sk = self.buckets[wi].get(cb)
                if sk is None:
                    sk = self.buckets[wi][cb] = QuantileSketch(2, self.settings.sketch_k)
                sk.merge(src)
        self.merged_upto = max(self.merged_upto, upto)

    def _flush(self) -> None:
        if self.stage_fill:
            self._insert(self.stage_bids, self.stage[:, :self.stage_fill])
            self.stage_fill = 0

    def _expire(self) -> None:
        if self.last_ts is None:
            return
        nb = self.settings.buckets_per_window
        nxt = math.inf
        if self._ratios:  # closed fine buckets are merged before any of them can expire
            cur_f = math.floor(self.last_ts / self._bs[self._fine])
            if any(self.merged_upto < b < cur_f for b in self.buckets[self._fine]):
                self._merge_fine(cur_f - 1)
        for wi, bs in enumerate(self._bs):
            cur = math.floor(self.last_ts / bs)
            nxt = min(nxt, (cur + 1) * bs)
            for b in [b for b in self.buckets[wi] if b <= cur - nb]:
                del self.buckets[wi][b]
        self._expire_at = nxt

    # ------------------------------------------------------------ reads
    def window_sketches(self, wi: int) -> list[QuantileSketch]:
        """The sketches covering window ``wi`` (with the finest window's not yet merged buckets)."""
        self._flush()
        sks = [self.buckets[wi][b] for b in sorted(self.buckets[wi])]
        if self._ratios and wi != self._fine:
            f = self.buckets[self._fine]
            sks += [f[b] for b in sorted(f) if b > self.merged_upto]
        return sks

    def percentiles(self, wi: int) -> tuple[int, Percentiles, Percentiles]:
        sks = self.window_sketches(wi)
        n = sum(s.n for s in sks)
        if not n:
            zero = Percentiles(p50=0, p90=0, p95=0, p99=0, max=0)
            return 0, zero, zero
        q = sks[0].quantiles(QUANTILES, tuple(sks[1:]))
        vmax = np.max([s.vmax for s in sks], axis=0)
        c, mm = [float(x) for x in q[0]], [float(x) for x in q[1]]
        return (n, Percentiles(p50=c[0], p90=c[1], p95=c[2], p99=c[3], max=float(vmax[0])),
                Percentiles(p50=mm[0], p90=mm[1], p95=mm[2], p99=mm[3], max=float(vmax[1])))

    def rank_error_bound(self, wi: int) -> float:
        """Proven rank-error bound of window ``wi``'s percentiles (fraction; 0 = exact)."""
        sks = self.window_sketches(wi)
        n = sum(s.n for s in sks)
        return 0.0 if not n else sum(s.err for s in sks) / n

    def n_total(self) -> int:
        return sum(sk.n for w in self.buckets for sk in w.values()) + self.stage_fill * len(self.buckets)

    def stored(self) -> int:
        """Values held in sketches and staging (the memory bound)."""
        return sum(sk.stored() for w in self.buckets for sk in w.values()) + self.stage_fill

    def _slot_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """(slot numbers, app total CPU per slot) over the ring, oldest first (NaN = no data)."""
        n = self.settings.history_slots
        assert self.hist_last is not None
        slots = np.arange(self.hist_last - n + 1, self.hist_last + 1)
        idx = slots % n
        rounds = self.hist_rounds[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.where((rounds > 0) & (self.hist_cnt[idx] > 0), self.hist_sum[idx] / np.maximum(rounds, 1), np.nan)
        return slots, x

    def history(self) -> np.ndarray:
        """The app's total CPU (cores) per history slot, oldest first, ending at the latest slot (NaN = no data)."""
        if self.hist_last is None:
            return np.zeros(0)
        _, x = self._slot_totals()
        ok = ~np.isnan(x)
        first = int(np.argmax(ok)) if np.any(ok) else x.size
        return x[first:]

    def hourly(self) -> np.ndarray:
        """The app's mean total CPU by UTC hour of the day over the history (NaN where no data)."""
        if self.hist_last is None:
            return np.full(24, np.nan)
        slots, x = self._slot_totals()
        ok = ~np.isnan(x)
        hours = (np.floor(slots[ok] * self.settings.history_slot_s / 3600.0) % 24).astype(np.int64)
        tot = np.bincount(hours, weights=x[ok], minlength=24)
        cnt = np.bincount(hours, minlength=24)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)

    def refresh_periodicity(self, force: bool = False) -> None:
        """Re-detect the dominant period every ``period_every_s`` of event time (or when forced)."""
        s = self.settings
        if self.hist_last is None:
            return
        every = max(1, round(s.period_every_s / s.history_slot_s))
        if not force and self.period_at is not None and self.hist_last - self.period_at < every:
            return
        self.period_at = self.hist_last
        self.period_s, self.period_strength, self.peak_hours = periodicity(
            self.history(), s.history_slot_s, self.hourly(), s.min_period_strength, s.period_min_cycles)

    # ------------------------------------------------------------ serialisation
    def to_bytes(self) -> bytes:
        self._flush()
        s = self.settings
        layout = [s.sketch_k, s.buckets_per_window, list(s.windows_s), s.history_slot_s, s.history_slots]
        return orjson.dumps({
            "v": _STATE_VERSION, "ns": self.namespace, "app": self.app, "last_ts": self.last_ts,
            "last_emit_ts": self.last_emit_ts, "requests": self.requests, "pods": self.pods, "layout": layout,
            "buckets": [[[b, sk.to_bytes().hex()] for b, sk in sorted(w.items())] for w in self.buckets],
            "hist_last": self.hist_last, "hist_sum": self.hist_sum, "hist_cnt": self.hist_cnt,
            "hist_rounds": self.hist_rounds, "slot_pods": self.slot_pods,
            "period": [self.period_at, self.period_s, self.period_strength, self.peak_hours],
            "merged_upto": self.merged_upto,
        }, option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_bytes(cls, raw: bytes, settings: ProfileSettings) -> AppProfileState:
        """Restore a state; if the stored layout differs from ``settings`` the sketches and history restart.

        A version-3 state (before the history kept scrape rounds) keeps its sketches; its history restarts.
        """
        d: dict[str, Any] = orjson.loads(raw)
        st = cls(settings=settings, namespace=d.get("ns", ""), app=d.get("app", ""), last_ts=d.get("last_ts"),
                 last_emit_ts=d.get("last_emit_ts"),
                 requests=tuple(d["requests"]) if d.get("requests") else None,  # type: ignore[arg-type]
                 pods=dict(d.get("pods") or {}))
        s = settings
        layout = [s.sketch_k, s.buckets_per_window, list(s.windows_s), s.history_slot_s, s.history_slots]
        v = d.get("v")
        if v in (3, _STATE_VERSION) and d.get("layout") == layout:
            for wi, w in enumerate(d["buckets"]):
                for b, hexed in w:
                    st.buckets[wi][int(b)] = QuantileSketch.from_bytes(bytes.fromhex(hexed))
            st.merged_upto = int(d["merged_upto"])
            if v == _STATE_VERSION:  # a version-3 history holds per-pod means, not totals: it restarts
                st.hist_last = d.get("hist_last")
                st.hist_sum = np.asarray(d["hist_sum"], dtype=np.float64)
                st.hist_cnt = np.asarray(d["hist_cnt"], dtype=np.int64)
                st.hist_rounds = np.asarray(d["hist_rounds"], dtype=np.int64)
                st.slot_pods = dict(d.get("slot_pods") or {})
                st.period_at, st.period_s, st.period_strength, st.peak_hours = d["period"]
        return st


# ---------------------------------------------------------------- node-batched updates

class NodeBatcher:
    """Node-batched profile updates for callers that see whole node scrapes (offline, benches).

    Stages up to ``scrapes`` consecutive scrapes of one node (pods in app order), then hands each app
    its block in **one** :meth:`AppProfileState.add_samples` call, so the per-app cost is paid once
    per ``scrapes`` scrapes. Staged scrapes always share their event-time buckets and history slot
    (a scrape outside them flushes first), so the result equals per-scrape updates; a profile read
    lags by at most ``scrapes`` scrapes unless :meth:`flush` is called first. ``states`` maps
    ``namespace/app`` (:func:`state_key`) to the app states, created on first sight.
    """

    def __init__(self, settings: ProfileSettings, states: dict[str, AppProfileState], scrapes: int = 6) -> None:
        self.settings, self.states, self.scrapes = settings, states, scrapes
        self._names: list[str] | None = None
        self._perm = np.zeros(0, dtype=np.int64)
        self._parts: list[tuple[AppProfileState, int, int, list[str]]] = []
        self._cpu = np.zeros((scrapes, 0))
        self._mem = np.zeros((scrapes, 0))
        self._fill = 0
        self._ts = 0.0
        self._lo, self._hi = math.inf, -math.inf
        s = settings
        self._sizes = (*(w / s.buckets_per_window for w in s.windows_s), s.history_slot_s)

    def _layout(self, namespaces: list[str], names: list[str], apps: list[str]) -> None:
        keys = [state_key(ns, a) for ns, a in zip(namespaces, apps, strict=True)]
        order = sorted((i for i in range(len(keys)) if apps[i]), key=lambda i: (keys[i], i))
        self._perm = np.asarray(order, dtype=np.int64)
        self._parts = []
        j = 0
        while j < len(order):
            k = j
            while k < len(order) and keys[order[k]] == keys[order[j]]:
                k += 1
            st = self.states.get(keys[order[j]])
            if st is None:
                st = self.states[keys[order[j]]] = AppProfileState(
                    self.settings, namespace=namespaces[order[j]], app=apps[order[j]])
            self._parts.append((st, j, k, [names[order[i]] for i in range(j, k)]))
            j = k
        self._names = list(names)
        self._cpu = np.empty((self.scrapes, len(order)))
        self._mem = np.empty((self.scrapes, len(order)))

    def add(self, ts: float, namespaces: list[str], names: list[str], apps: list[str], cpu: list[float] | np.ndarray,
            mem: list[float] | np.ndarray) -> None:
        if self._fill and (names != self._names or not self._lo <= ts < self._hi or ts < self._ts):
            self.flush()
        if names != self._names:
            self._layout(namespaces, names, apps)
        if not self._fill:
            lo = [math.floor(ts / z) * z for z in self._sizes]
            self._lo, self._hi = max(lo), min(x + z for x, z in zip(lo, self._sizes, strict=True))
        self._cpu[self._fill] = np.asarray(cpu, dtype=np.float64)[self._perm]
        self._mem[self._fill] = np.asarray(mem, dtype=np.float64)[self._perm]
        self._fill += 1
        self._ts = ts
        if self._fill == self.scrapes:
            self.flush()

    def flush(self) -> None:
        f = self._fill
        if not f:
            return
        self._fill = 0
        cpu, mem, ts = self._cpu[:f], self._mem[:f], self._ts
        sums = np.add.reduceat(cpu.sum(axis=0), [a for _, a, _, _ in self._parts]).tolist() if self._parts else []
        for (st, a, b, names), total in zip(self._parts, sums, strict=True):
            st.add_samples(ts, cpu[:, a:b].ravel(), mem[:, a:b].ravel(), total, pods=names, rounds=f)
            st.pods.update(dict.fromkeys(names, ts))


# ---------------------------------------------------------------- pure helpers

def periodicity(series: np.ndarray, interval_s: float, hourly: np.ndarray, min_strength: float = 0.3,
                min_cycles: float = 3.0) -> tuple[float | None, float | None, list[int]]:
    """Dominant period (s), its strength and the peak UTC hours, or ``(None, None, [])`` if not periodic."""
    from streams.core.forecast import detect_periods  # the project's one period detector

    if series.size < 8:
        return None, None, []
    periods = detect_periods(series, interval_s, min_confidence=min_strength, min_cycles=min_cycles)
    if not periods:
        return None, None, []
    # the dominant period is the one whose mean cycle explains most of the series' variance: a 3-10x daily
    # tide, not the hourly spikes riding on it (detect_periods ranks by each period's own fit)
    top = max(periods, key=lambda p: (round(_explained_share(series, round(p.period_s / interval_s)), 3),
                                      p.confidence))
    return float(top.period_s), float(top.confidence), peak_hours(hourly)


def _explained_share(series: np.ndarray, lag: int) -> float:
    """Share of the series' variance explained by its mean cycle of ``lag`` samples (NaN = missing)."""
    x = np.asarray(series, dtype=float)
    ok = ~np.isnan(x)
    if lag < 2 or ok.sum() < 2 * lag:
        return 0.0
    xv = x[ok]
    var = float(xv.var())
    if var <= 0:
        return 0.0
    phase = np.flatnonzero(ok) % lag
    sums = np.bincount(phase, weights=xv, minlength=lag)
    counts = np.bincount(phase, minlength=lag)
    means = np.divide(sums, counts, out=np.zeros(lag), where=counts > 0)
    return float(means[phase].var() / var)


def peak_hours(hourly: np.ndarray, share: float = 0.2, min_range: float = 0.1) -> list[int]:
    """UTC hours whose mean is within ``share`` of the daily range below the peak ([] if flat or partial)."""
    if hourly.size != 24 or np.any(np.isnan(hourly)):
        return []
    lo, hi, mean = float(hourly.min()), float(hourly.max()), float(hourly.mean())
    if mean <= 0 or hi - lo <= min_range * mean:
        return []
    return [int(h) for h in np.flatnonzero(hourly >= hi - share * (hi - lo))]


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
    """bursty (p99/p50 ≥ bursty_ratio), else cpu-/memory-bound or balanced by p95 relative to requests."""
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


def profile_message(state: AppProfileState, ts: float | None = None, *,
                    interferes_with: list[str] | None = None, complements: list[str] | None = None) -> Profile:
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
    state.refresh_periodicity()
    last = state.last_ts or ts
    pods = sum(1 for t in state.pods.values() if t > last - s.pods_window_s or t == last)
    return Profile(
        ts=ts, namespace=state.namespace, app=state.app, pods=pods, windows=windows,
        requests=None if state.requests is None else Resources(cpu_cores=state.requests[0],
                                                               mem_bytes=state.requests[1]),
        recommended=recommended, type=ptype,  # type: ignore[arg-type]
        period_s=state.period_s, period_strength=state.period_strength, peak_hours=list(state.peak_hours),
        interferes_with=sorted(interferes_with or []), complements=sorted(complements or []),
    )


def update_and_profile(raw_state: bytes | None, msg: AppSamples, settings: ProfileSettings, *,
                       advice: dict[str, tuple[list[str], list[str]]] | None = None) -> tuple[bytes, Profile | None]:
    """The profiler's whole step: state bytes + message → new state bytes, maybe a Profile.

    ``advice`` maps an app to its (interferes_with, complements) co-location advice (see
    :func:`streams.core.interference.colocation_advice`).
    """
    st = AppProfileState.from_bytes(raw_state, settings) if raw_state else AppProfileState(settings)
    st.update(msg)
    out = None
    if msg.cpu_cores and should_emit(st, msg.ts):
        iw, co = (advice or {}).get(msg.app, ([], []))
        out = profile_message(st, msg.ts, interferes_with=iw, complements=co)
        st.last_emit_ts = msg.ts
    return st.to_bytes(), out
