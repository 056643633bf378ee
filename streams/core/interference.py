"""Interference detection (干扰分析) per node, CPI²-style (pure numpy, event time only).

One ``cluster.metrics`` message is one node scrape; :func:`update` takes the node's
:class:`NodeState` and the message and returns the ``anomalies`` to send (usually none).

Per pod and metric (``cpi``, and ``latency_ms`` where the scrape has it; a value ≤ 0 or missing is
"not measured"), vectorised over the node's pods:

1. **Normal**: every ``learn_every`` scrapes each pod adds one *block* (mean and standard deviation
   of its samples since the last block) to a ring of ``blocks`` blocks (default 36 × 2 min); its
   normal is the **median block mean** and its σ the **median block std**, refreshed every
   ``robust_every`` blocks. Medians are robust to the episodes themselves (interference only raises
   CPI; an antagonist active for less than half of the history does not move the normal — one
   active longer becomes the new normal). Pods of one app differ (one replica may always run at a
   higher CPI), so each pod has its own normal once it has ``pod_warmup_blocks`` blocks; before
   that it is judged against its app's normal on the node (an exponentially weighted mean and
   variance with memory ``1 / alpha`` samples, outliers weighted ``outlier_weight``, ready after
   ``warmup`` samples). There are no load bands yet: a CPI that rises with the pod's own load
   within the history is seen as a higher normal, a fast rise as an outlier (``min_rel`` guards).
2. **Outlier**: once a normal is ready, a sample is an outlier if it is
   more than ``z`` standard deviations *and* ``min_rel`` (relative) above the normal mean (σ floored at
   ``rel_sigma_floor`` × mean).
3. **Episode (CPI²)**: a pod's episode *opens* when at least ``min_outliers`` of its last
   ``flag_window`` samples are outliers (one spike is not an alarm) — for latency, only when the
   pod's own load does not explain it: latency rises with a pod's own CPU (queueing), and an
   antagonist's own latency rises while it is active, so a latency episode is not opened when the
   pod's own CPU correlates with its latency over the window at least ``self_load_min_score`` and at
   least as well as any neighbour's not following the same load (see 4; CPI, a per-instruction
   measure, is judged as is) — and *clears* after ``clear_after`` consecutive samples below
   ``clear_z`` σ (hysteresis: a marginal episode does not flap). Each transition is reported once:
   an ``open`` anomaly, then a ``cleared`` one (same episode, same antagonists). A victim that
   leaves the node while open is cleared with ``evidence.reason = "pod-gone"``.
4. **Antagonists**: at open, every other pod on the node is scored by the Pearson correlation of its
   CPU usage with the victim's metric over the last ``window`` samples (the same scrapes); the
   ``top`` suspects with a score ≥ ``min_score`` are named, best first. A neighbour whose CPU moves
   with the victim's own CPU (|correlation| ≥ ``collinear_max``: replicas of the same app, apps with
   the same daily tide) is no suspect, and does not count against the own-load check of step 3: its
   correlation with the victim's latency is the shared load's, which cannot be told apart from the
   victim's own (before, such pairs were reported as interfering and then kept apart, which blocked
   every move of both apps).

Ids are deterministic (:func:`kubetide.models.decision_id` of node, victim, metric and the event time
the episode opened): an episode's ``open`` and ``cleared`` messages share the id (the episode's), so
consumers pair them (e.g. :func:`kubetide.metrics.observe_anomaly`), and a replay yields the same ids.

State is bounded: ring buffers of the last ``window`` samples of each co-located pod (CPU and the
metrics), per-pod episode flags and per-app normals, at most ``max_pods`` pods per node (columns of
pods not seen for ``window`` scrapes are dropped). It lives in memory in the agent, keyed by node
(the partition key of ``cluster.metrics``): after a rebalance the new owner re-learns a node's
normals within ``warmup`` scrapes (open episodes there are not cleared by the old owner).

:func:`colocation_advice` turns accumulated anomalies and per-app hourly CPU profiles into
co-location advice: app pairs that interfere (互斥, ``Profile.interferes_with``) and app pairs whose
daily CPU peaks are anti-correlated (亲和, ``Profile.complements``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubetide.models import Anomaly, ClusterMetrics, PodRef, Suspect, decision_id

METRICS = ("cpi", "latency_ms")
_LATENCY = METRICS.index("latency_ms")
_POD_ARRAYS = ("cpu", "val", "out", "calm", "open", "bmean", "bstd", "pmed", "psd", "pblocks")  # pod axis last
_NAN_FILLED = ("cpu", "val", "bmean", "bstd", "pmed", "psd")


@dataclass(frozen=True)
class InterferenceSettings:
    window: int = 30
    flag_window: int = 6
    min_outliers: int = 3
    clear_after: int = 6
    z: float = 3.0
    clear_z: float = 1.5
    min_rel: float = 0.1
    alpha: float = 0.003
    outlier_weight: float = 0.05
    warmup: int = 20
    blocks: int = 36
    pod_warmup_blocks: int = 5
    robust_every: int = 3
    rel_sigma_floor: float = 0.02
    top: int = 3
    min_score: float = 0.3
    max_pods: int = 1024
    learn_every: int = 12
    self_load_min_score: float | None = 0.5  # None: latency outliers are not checked against the pod's own load
    collinear_max: float = 0.8  # a neighbour whose CPU correlates this much with the victim's own is not a suspect

    def validate(self) -> None:
        if not 4 <= self.window <= 10_000:
            raise ValueError("window: must be in [4, 10000]")
        if not 1 <= self.flag_window <= self.window:
            raise ValueError("flag_window: must be in [1, window]")
        if not 1 <= self.min_outliers <= self.flag_window:
            raise ValueError("min_outliers: must be in [1, flag_window]")
        if self.clear_after < 1:
            raise ValueError("clear_after: must be >= 1")
        if self.z <= 0:
            raise ValueError("z: must be > 0")
        if not 0 <= self.clear_z <= self.z:
            raise ValueError("clear_z: must be in [0, z]")
        if self.min_rel < 0:
            raise ValueError("min_rel: must be >= 0")
        if not 0 < self.alpha <= 1:
            raise ValueError("alpha: must be in (0, 1]")
        if not 0 <= self.outlier_weight <= 1:
            raise ValueError("outlier_weight: must be in [0, 1]")
        if self.warmup < 2:
            raise ValueError("warmup: must be >= 2")
        if not 4 <= self.blocks <= 10_000:
            raise ValueError("blocks: must be in [4, 10000]")
        if not 1 <= self.pod_warmup_blocks <= self.blocks:
            raise ValueError("pod_warmup_blocks: must be in [1, blocks]")
        if self.robust_every < 1:
            raise ValueError("robust_every: must be >= 1")
        if self.rel_sigma_floor < 0:
            raise ValueError("rel_sigma_floor: must be >= 0")
        if not 0 < self.collinear_max <= 1:
            raise ValueError("collinear_max: must be in (0, 1] (1: every neighbour can be a suspect)")
        if self.top < 1:
            raise ValueError("top: must be >= 1")
        if not -1 <= self.min_score <= 1:
            raise ValueError("min_score: must be in [-1, 1]")
        if self.max_pods < 1:
            raise ValueError("max_pods: must be >= 1")
        if not 1 <= self.learn_every <= self.window:
            raise ValueError("learn_every: must be in [1, window]")
        if self.self_load_min_score is not None and not -1 <= self.self_load_min_score <= 1:
            raise ValueError("self_load_min_score: must be in [-1, 1] (or null to switch the check off)")


@dataclass
class Episode:
    opened_at: float
    first_outlier_at: float
    antagonists: list[Suspect]
    severity: float


@dataclass
class NodeState:
    """What the detector keeps for one node (in memory; bounded by ``window`` × pods)."""

    settings: InterferenceSettings = field(default_factory=InterferenceSettings)
    node: str = ""
    last_ts: float | None = None
    # pod columns
    names: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    apps: list[str] = field(default_factory=list)
    app_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    last_seen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # ring buffers: rows = the last `window` scrapes
    head: int = -1
    scrapes: int = 0
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cpu: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    val: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0, 0)))
    out: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0, 0), dtype=bool))
    calm: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0), dtype=np.int64))  # last hot scrape
    onehot: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    thr: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0)))  # per pod, from its app's normal
    thr_hot: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0)))
    unlearned: int = 0  # scrapes not yet learned into the normals
    n_open: int = 0
    open: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0), dtype=bool))
    # per-app normals (node-local app table)
    app_names: dict[str, int] = field(default_factory=dict)
    mean: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0)))
    m2: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0)))
    cnt: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0)))
    # per-pod robust normals: a ring of `blocks` blocks (one per learning step: mean and std of its
    # samples); the normal is the median block mean, σ the median block std (robust to episodes)
    bhead: int = -1
    learned: int = 0
    bmean: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0, 0), dtype=np.float32))
    bstd: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0, 0), dtype=np.float32))
    pmed: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0)))
    psd: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0)))
    pblocks: np.ndarray = field(default_factory=lambda: np.zeros((len(METRICS), 0), dtype=np.int64))
    episodes: dict[tuple[int, str, str], Episode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        w = self.settings.window
        if self.ts.size != w:
            self.ts = np.full(w, np.nan)
            self.cpu = np.full((w, 0), np.nan)
            self.val = np.full((len(METRICS), w, 0), np.nan)
            self.out = np.zeros((len(METRICS), w, 0), dtype=bool)
        if self.bmean.shape[1] != self.settings.blocks:
            self.bmean = np.full((len(METRICS), self.settings.blocks, 0), np.nan, dtype=np.float32)
            self.bstd = self.bmean.copy()

    # ------------------------------------------------------------ pod columns
    def _remap(self, namespaces: list[str], names: list[str], apps: list[str]) -> None:
        """Lay the columns out as in this message (rare: only when the node's pod list changed)."""
        if self.unlearned and self.names:
            self._learn()
        self.unlearned = 0
        if self._layout_kept(namespaces, names, apps):
            # The message lists the first columns in order and every other column is an absent pod still
            # kept: the general path below would rebuild the very same layout; only last_seen moves.
            self.last_seen[:len(names)] = self.scrapes
            self.n_open = int(self.open.sum())
            return
        old = {(ns, n): i for i, (ns, n) in enumerate(zip(self.namespaces, self.names, strict=True))}
        p, w, nm = len(names), self.settings.window, len(METRICS)
        src = np.array([old.get((ns, n), -1) for ns, n in zip(namespaces, names, strict=True)], dtype=np.int64)
        have = src >= 0
        # absent pods keep their column for `window` scrapes (a pod missing from one scrape is not gone)
        taken = set(src[have].tolist())
        keep = [i for i in range(len(self.names)) if i not in taken and self.scrapes - int(self.last_seen[i]) < w]
        keep = keep[: max(0, self.settings.max_pods - p)]
        k = np.asarray(keep, dtype=np.int64)
        for name in _POD_ARRAYS:
            old_a = getattr(self, name)
            fill = np.nan if name in _NAN_FILLED else 0
            new_a = np.full((*old_a.shape[:-1], p), fill, dtype=old_a.dtype)
            new_a[..., have] = old_a[..., src[have]]
            setattr(self, name, np.concatenate([new_a, old_a[..., k]], axis=-1) if keep else new_a)
        last_seen = np.concatenate([np.full(p, self.scrapes), self.last_seen[keep] if keep else np.zeros(0)])
        self.names = list(names) + [self.names[i] for i in keep]
        self.namespaces = list(namespaces) + [self.namespaces[i] for i in keep]
        self.apps = list(apps) + [self.apps[i] for i in keep]
        for a in self.apps:
            if a not in self.app_names:
                self.app_names[a] = len(self.app_names)
        na = len(self.app_names)
        if self.mean.shape[1] < na:
            grow = np.zeros((nm, na - self.mean.shape[1]))
            self.mean = np.concatenate([self.mean, grow], axis=1)
            self.m2 = np.concatenate([self.m2, grow], axis=1)
            self.cnt = np.concatenate([self.cnt, grow], axis=1)
        self.app_idx = np.array([self.app_names[a] for a in self.apps], dtype=np.int64)
        self.last_seen = last_seen.astype(np.int64)
        self._gc_apps()
        self.n_open = int(self.open.sum())
        self._thresholds()

    def _layout_kept(self, namespaces: list[str], names: list[str], apps: list[str]) -> bool:
        """True when :meth:`_remap` would leave the columns as they are: the message's pods are the first
        columns, in order, with the same apps, and every further column (a pod absent from the message)
        is kept (seen within ``window`` scrapes, within ``max_pods``); the app table would not be
        collected either. (A pod that left a node keeps its column for ``window`` scrapes, and each of
        those scrapes remaps: this is the common case.)"""
        p, total = len(names), len(self.names)
        if not p or p >= total or total - p > max(0, self.settings.max_pods - p):
            return False
        if self.names[:p] != names or self.namespaces[:p] != namespaces or self.apps[:p] != apps:
            return False
        if int(self.scrapes - self.last_seen[p:].min()) >= self.settings.window:
            return False
        if len(self.app_names) > 2 * max(1, len(set(self.apps))):
            return False
        return self.onehot.shape == (total, self.mean.shape[1]) and self.app_idx.shape == (total,)

    def normals(self) -> tuple[np.ndarray, np.ndarray]:
        """Per pod (M, P): the normal mean and σ it is judged against (its own once warm, else its app's)."""
        s = self.settings
        ai = self.app_idx
        own = self.pblocks >= s.pod_warmup_blocks
        app_mean = self.mean[:, ai]
        app_sd = np.sqrt(np.maximum(self.m2[:, ai] - app_mean * app_mean, 0.0))
        mean = np.where(own, self.pmed, app_mean)
        sd = np.where(own, self.psd, app_sd)
        return mean, np.maximum(sd, s.rel_sigma_floor * mean)

    def _thresholds(self) -> None:
        """Per-pod outlier and "still hot" thresholds from the normals (after learning or a remap)."""
        s = self.settings
        mean, sd = self.normals()
        ready = (self.pblocks >= s.pod_warmup_blocks) | (self.cnt[:, self.app_idx] >= s.warmup)
        self.thr = np.where(ready, np.maximum(mean + s.z * sd, mean * (1 + s.min_rel)), np.inf)
        self.thr_hot = np.where(ready, mean + s.clear_z * sd, np.inf)

    def _learn(self) -> None:
        """Fold the scrapes since the last learning step into the normals: the app normals (one matrix
        product) and one block per pod; every ``robust_every`` steps the pods' medians are refreshed."""
        s = self.settings
        if self.unlearned == 1:
            self._learn_one()
        else:
            rows = self.window_rows(self.unlearned)
            x = self.val[:, rows]  # (M, k, P)
            valid = x == x
            x0 = np.where(valid, x, 0.0)
            w = valid - self.out[:, rows] * (1.0 - s.outlier_weight)  # outliers barely move the app normals
            wx = w * x0
            nm = len(METRICS)
            per_pod = np.concatenate([w.sum(axis=1), wx.sum(axis=1), (wx * x0).sum(axis=1), valid.sum(axis=1)])
            self.mean, self.m2, self.cnt = _ewm(self.mean, self.m2, self.cnt, per_pod @ self.onehot, nm, s.alpha)
            c = valid.sum(axis=1)
            s1, s2 = x0.sum(axis=1), (x0 * x0).sum(axis=1)
            cs = np.maximum(c, 1)
            bm = s1 / cs
            bv = np.maximum(s2 / cs - bm * bm, 0.0) * (cs / np.maximum(cs - 1, 1))
            self.bhead = (self.bhead + 1) % s.blocks
            self.bmean[:, self.bhead] = np.where(c > 0, bm, np.nan)
            self.bstd[:, self.bhead] = np.where(c > 1, np.sqrt(bv), np.nan)
        self.unlearned = 0
        self.learned += 1
        if self.learned % s.robust_every == 0:
            self.pmed, self.pblocks = _median(self.bmean)
            # the median of sample variances of ν = learn_every - 1 degrees of freedom is biased low by
            # median(χ²_ν) / ν ≈ (1 - 2 / 9ν)³ (Wilson-Hilferty): correct it
            nu = max(s.learn_every - 1, 1)
            self.psd = _median(self.bstd, upper=True)[0] / (1 - 2 / (9 * nu)) ** 1.5
        self._thresholds()

    def _learn_one(self) -> None:
        """:meth:`_learn`'s sums and block for a single unlearned scrape (a pod left the node: each scrape
        remaps, and learns, while its column is kept): a sum over one row is that row, a block of one sample
        has its value as mean and no std. The same numbers as the general path (``tests/test_core_speed.py``)."""
        s = self.settings
        r = self.head  # the newest row: window_rows(1)
        x = self.val[:, r]  # (M, P)
        valid = x == x
        x0 = np.where(valid, x, 0.0)
        w = valid - self.out[:, r] * (1.0 - s.outlier_weight)
        wx = w * x0
        per_pod = np.concatenate([w, wx, wx * x0, valid])
        self.mean, self.m2, self.cnt = _ewm(self.mean, self.m2, self.cnt, per_pod @ self.onehot, len(METRICS),
                                            s.alpha)
        self.bhead = (self.bhead + 1) % s.blocks
        self.bmean[:, self.bhead] = x  # NaN where not measured (the values measured are > 0)
        self.bstd[:, self.bhead] = np.nan

    def _gc_apps(self) -> None:
        """Forget normals of apps with no pod on the node (keeps the app table bounded)."""
        if len(self.app_names) > 2 * max(1, len(set(self.apps))):
            self._drop_apps()
        self.onehot = np.zeros((len(self.apps), self.mean.shape[1]))
        self.onehot[np.arange(len(self.apps)), self.app_idx] = 1.0

    def _drop_apps(self) -> None:
        live = sorted(set(self.apps), key=lambda a: self.app_names[a])
        idx = np.array([self.app_names[a] for a in live], dtype=np.int64)
        self.mean, self.m2, self.cnt = self.mean[:, idx], self.m2[:, idx], self.cnt[:, idx]
        self.app_names = {a: i for i, a in enumerate(live)}
        self.app_idx = np.array([self.app_names[a] for a in self.apps], dtype=np.int64)

    def window_rows(self, n: int | None = None) -> np.ndarray:
        """Ring rows of the last ``n`` scrapes (default: the window), oldest first."""
        w = self.settings.window
        return _ring_rows(w, self.head, min(w if n is None else n, self.scrapes))

    def memory_values(self) -> int:
        return self.cpu.size + self.val.size + self.out.size + self.bmean.size + self.bstd.size + self.mean.size * 3


@functools.lru_cache(maxsize=4096)
def _ring_rows(w: int, head: int, n: int) -> np.ndarray:
    """``(head - [n-1, …, 0]) % w``, read-only: the same few arrays are asked for at every scrape of every node."""
    rows = (head - np.arange(n - 1, -1, -1)) % w
    rows.setflags(write=False)
    return rows


# ---------------------------------------------------------------- the step

def _median(a: np.ndarray, upper: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Median (lower, or upper) along axis 1 of the non-NaN values, and their count; NaN where none."""
    srt = np.sort(a, axis=1)  # NaN sort last
    k = (a == a).sum(axis=1)
    i = np.minimum(k // 2, np.maximum(k - 1, 0)) if upper else np.maximum(k - 1, 0) // 2
    # srt[m, i[m, p], p] (as np.take_along_axis(srt, i[:, None, :], axis=1)[:, 0, :], without its overhead)
    med = srt[np.arange(srt.shape[0])[:, None], i, np.arange(srt.shape[2])].astype(np.float64)
    return np.where(k > 0, med, np.nan), k


def _ewm(mean: np.ndarray, m2: np.ndarray, cnt: np.ndarray, sums: np.ndarray, nm: int,
         alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exponentially weighted mean and second moment from weighted sums [Σw, Σwx, Σwx², count]."""
    sw, sx, sxx = sums[:nm], sums[nm:2 * nm], sums[2 * nm:3 * nm]
    denom = np.minimum(cnt, 1.0 / alpha) + sw
    a = sw / np.where(denom > 0, denom, 1.0)
    safe = np.where(sw > 0, sw, 1.0)
    return mean + a * (sx / safe - mean), m2 + a * (sxx / safe - m2), cnt + sums[3 * nm:]


def update(state: NodeState, msg: ClusterMetrics) -> list[Anomaly]:
    """Add one node scrape; return the anomalies it opens or clears (pure apart from ``state``)."""
    s = state.settings
    if state.last_ts is not None and msg.ts <= state.last_ts:
        return []  # duplicate or out-of-order scrape of this node: ignored (event time moves forward)
    state.node = msg.node
    p = msg.pods
    n = len(p.name)
    gone: list[Anomaly] = []
    if len(state.names) != n or p.name != state.names or p.namespace != state.namespaces:
        gone = _gone_victims(state, set(zip(p.namespace, p.name, strict=True)))
        state._remap(list(p.namespace), list(p.name), list(p.app))
    cols = state.cpu.shape[1]
    state.scrapes += 1
    state.last_seen[:n] = state.scrapes
    row = state.head = (state.head + 1) % s.window
    state.last_ts = msg.ts
    state.ts[row] = msg.ts
    if cols != n:
        state.cpu[row] = np.nan
        state.val[:, row] = np.nan
    state.cpu[row, :n] = p.cpu_cores
    x = state.val[:, row]  # a view: the scrape's metrics are written in place
    for i, name in enumerate(METRICS):
        col = getattr(p, name)
        if col is None:
            x[i] = np.nan
        else:
            x[i, :n] = col
    x[x <= 0] = np.nan  # not measured
    out = x > state.thr
    state.out[:, row] = out
    state.unlearned += 1
    result = list(gone)
    if state.n_open:  # track when open victims were last "hot"; clear those calm for clear_after scrapes
        hot = x > state.thr_hot
        state.calm[hot] = state.scrapes
        clearing = state.open & (state.scrapes - state.calm >= s.clear_after)
        for mi, col in zip(*np.nonzero(clearing), strict=True):
            result.append(_cleared(state, int(mi), int(col), msg.ts))
            state.open[mi, col] = False
            state.n_open -= 1
    if out.any():  # an episode can only open on a scrape with an outlier
        mis, cs = np.nonzero(out & ~state.open)
        if mis.size:
            flags = state.out[mis, :, cs][:, state.window_rows(s.flag_window)].sum(axis=1)
            memo: _CpuMemo = {}  # this scrape's centred CPU window, shared by its candidates
            for mi, col, k in zip(mis.tolist(), cs.tolist(), flags.tolist(), strict=True):
                if k < s.min_outliers:
                    continue
                # once per candidate: judges self-load and ranks suspects
                r = cpu_correlations(state, mi, col, memo)
                if not (mi == _LATENCY and self_explained(state.settings, r, col)):
                    result.append(_opened(state, mi, col, msg.ts, r))
                    state.open[mi, col] = True
                    state.calm[mi, col] = state.scrapes
                    state.n_open += 1
    if state.unlearned >= s.learn_every:
        state._learn()
    return result


def _key(state: NodeState, mi: int, col: int) -> tuple[int, str, str]:
    return (mi, state.namespaces[col], state.names[col])


def _victim(state: NodeState, col: int) -> PodRef:
    return PodRef(namespace=state.namespaces[col], name=state.names[col], node=state.node,
                  app=state.apps[col] or None)


Correlations = tuple[np.ndarray, np.ndarray]  # (with the victim's metric, with the victim's own CPU)
_CpuMemo = dict[Any, Any]  # see cpu_correlations


def cpu_correlations(state: NodeState, mi: int, col: int, memo: _CpuMemo | None = None) -> Correlations | None:
    """Pearson correlations of every co-located pod's CPU (the victim's own included) over the window:
    with the victim's metric, and with the victim's own CPU; None with fewer than 4 measured samples.

    ``memo`` (a dict the caller keeps for one scrape of one node, while the state does not change) holds
    the window's rows and, per set of measured rows, the centred CPU columns and their sums of squares:
    every candidate of a scrape whose metric was measured in the same scrapes (nearly all) shares them,
    the very same arrays as computed for the first one."""
    if memo is None:
        memo = {}
    rows = memo.get("rows")
    if rows is None:
        rows = memo["rows"] = state.window_rows()
    y = state.val[mi, rows, col]
    ok = ~np.isnan(y)
    if np.count_nonzero(ok) < 4:
        return None
    mk = ok.tobytes()
    hit = memo.get(mk)
    if hit is None:
        c = state.cpu[rows][ok]  # (t, pods)
        miss = np.isnan(c)
        if miss.any():  # a pod absent from some scrapes: fill with its mean (no information)
            colmean = np.where(miss, 0.0, c).sum(axis=0) / np.maximum((~miss).sum(axis=0), 1)
            c = np.where(miss, colmean, c)
        cc = c - c.sum(axis=0) / c.shape[0]  # c.mean(axis=0), the same floats, without np.mean's overhead
        hit = memo[mk] = (cc, (cc * cc).sum(axis=0), cc.T)
    cc, ss, cct = hit
    y = y[ok]
    yc = y - y.sum() / y.shape[0]  # y.mean()
    den = np.sqrt(ss * (yc @ yc))
    den_own = np.sqrt(ss * ss[col])
    # (no division by zero: a denominator that is not > 0 is replaced by 1 before dividing)
    return (np.where(den > 0, (cct @ yc) / np.where(den > 0, den, 1.0), 0.0),
            np.where(den_own > 0, (cct @ cc[:, col]) / np.where(den_own > 0, den_own, 1.0), 0.0))


def _distinct(settings: InterferenceSettings, rc: Correlations, col: int) -> np.ndarray:
    """Pods whose CPU does not move with the victim's own CPU (|r| < ``collinear_max``), the victim excluded:
    a neighbour that follows the same load (replicas of the app, apps with the same tide) cannot be told
    apart from the victim's own load, so it is neither a suspect nor a better explanation than that load."""
    keep = np.abs(rc[1]) < settings.collinear_max
    keep[col] = False
    return keep


def suspects(state: NodeState, col: int, rc: Correlations | None) -> list[Suspect]:
    """Co-located pods ranked by the correlation of their CPU with the victim's metric over the window
    (:func:`cpu_correlations`), those following the victim's own load left out (:func:`_distinct`)."""
    s = state.settings
    if rc is None:
        return []
    r = np.where(_distinct(s, rc, col), rc[0], -np.inf)
    order = np.argsort(-r, kind="stable")[: s.top]
    return [Suspect(namespace=state.namespaces[j], name=state.names[j], app=state.apps[j] or None,
                    score=round(float(r[j]), 4)) for j in order if np.isfinite(r[j]) and r[j] >= s.min_score]


def self_explained(settings: InterferenceSettings, rc: Correlations | None, col: int) -> bool:
    """True when the pod's own CPU explains its metric at least as well as any neighbour's that does not
    follow the same load (``rc`` from :func:`cpu_correlations`), with a correlation of at least
    ``self_load_min_score`` (a pod slowed by its own load, not interference)."""
    thr = settings.self_load_min_score
    if thr is None or rc is None:
        return False
    r = rc[0]
    if not np.isfinite(r[col]) or r[col] < thr:
        return False
    others = r[_distinct(settings, rc, col)]
    if others.size == 0:
        return True
    top = others.max()
    if top != top:  # NaN among them (max propagates it): the largest of the others
        top = np.nanmax(others)
    return bool(r[col] >= top)


def _evidence(state: NodeState, mi: int, col: int) -> dict[str, Any]:
    s = state.settings
    means, sds = state.normals()
    mu, sd = float(means[mi, col]), float(sds[mi, col])
    rows = state.window_rows(s.flag_window)
    recent = state.val[mi, rows, col]
    return {"normal_mean": round(mu, 6), "normal_sd": round(sd, 6),
            "recent_mean": round(float(np.nanmean(recent)), 6) if np.any(~np.isnan(recent)) else None,
            "outliers": int(state.out[mi, rows, col].sum()), "flag_window": s.flag_window}


def episode_id(node: str, victim: PodRef, metric: str, opened_at: float) -> str:
    """The id of an episode, shared by its ``open`` and ``cleared`` messages (deterministic)."""
    return decision_id("anomaly", node, victim.namespace, victim.name, metric, opened_at)


def _opened(state: NodeState, mi: int, col: int, ts: float, r: Correlations | None) -> Anomaly:
    rows = state.window_rows()
    fr = state.window_rows(state.settings.flag_window)
    flagged = fr[state.out[mi, fr, col]]
    first = float(state.ts[flagged[0]]) if flagged.size else ts
    ev = _evidence(state, mi, col)
    mu = ev["normal_mean"] or 0.0
    severity = round((ev["recent_mean"] / mu - 1.0) if mu > 0 and ev["recent_mean"] is not None else 0.0, 4)
    sus = suspects(state, col, r)
    state.episodes[_key(state, mi, col)] = Episode(opened_at=ts, first_outlier_at=first, antagonists=sus,
                                                    severity=severity)
    metric = METRICS[mi]
    victim = _victim(state, col)
    return Anomaly(id=episode_id(state.node, victim, metric, ts),
                   ts=ts, node=state.node, state="open", victim=victim, metric=metric, severity=max(severity, 0.0),
                   antagonists=sus, window_start=float(state.ts[rows[0]]), window_end=ts,
                   evidence={**ev, "first_outlier_at": first})


def _cleared(state: NodeState, mi: int, col: int, ts: float, reason: str = "normal") -> Anomaly:
    ep = state.episodes.pop(_key(state, mi, col), None)
    opened = ep.opened_at if ep else ts
    metric = METRICS[mi]
    victim = _victim(state, col)
    return Anomaly(id=episode_id(state.node, victim, metric, opened),
                   ts=ts, node=state.node, state="cleared", victim=victim, metric=metric,
                   severity=max(ep.severity, 0.0) if ep else 0.0, antagonists=ep.antagonists if ep else [],
                   window_start=ep.first_outlier_at if ep else ts, window_end=ts,
                   evidence={"opened_at": opened, "duration_s": round(ts - opened, 3), "reason": reason})


def _gone_victims(state: NodeState, present: set[tuple[str, str]]) -> list[Anomaly]:
    out = []
    for mi, col in zip(*np.nonzero(state.open), strict=True):
        if (state.namespaces[col], state.names[col]) not in present and \
                state.scrapes + 1 - int(state.last_seen[col]) >= state.settings.window:
            out.append(_cleared(state, int(mi), int(col), state.last_ts or 0.0, reason="pod-gone"))
            state.open[mi, col] = False
    return out


# ---------------------------------------------------------------- co-location advice

@dataclass
class PairCounts:
    """Episodes per (victim app, top-1 antagonist app), from ``open`` anomalies (bounded by app pairs)."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    max_pairs: int = 100_000

    def add(self, anomaly: Anomaly) -> None:
        if anomaly.state != "open" or not anomaly.antagonists or not anomaly.victim.app:
            return
        a = anomaly.antagonists[0].app
        if not a or a == anomaly.victim.app:
            return
        key = (anomaly.victim.app, a)
        if key in self.counts or len(self.counts) < self.max_pairs:
            self.counts[key] = self.counts.get(key, 0) + 1


def colocation_advice(pairs: Mapping[tuple[str, str], int] | Iterable[Anomaly],
                      hourly: Mapping[str, np.ndarray] | None = None, *, min_episodes: int = 2,
                      max_corr: float = -0.5) -> dict[str, tuple[list[str], list[str]]]:
    """Per app: (apps it interferes with — 互斥, apps it complements — 亲和).

    Two apps *interfere* when one was the top antagonist of the other in at least ``min_episodes``
    episodes (the relation is symmetric: keep them apart). Two apps *complement* each other when
    their mean CPU by hour of the day (24 values, e.g. :meth:`AppProfileState.hourly`) has a Pearson
    correlation ≤ ``max_corr`` (their peaks do not coincide) and they do not interfere.
    """
    if not isinstance(pairs, Mapping):
        pc = PairCounts()
        for a in pairs:
            pc.add(a)
        pairs = pc.counts
    inter: dict[str, set[str]] = {}
    for (v, a), k in pairs.items():
        if k >= min_episodes:
            inter.setdefault(v, set()).add(a)
            inter.setdefault(a, set()).add(v)
    comp: dict[str, set[str]] = {}
    if hourly:
        names = sorted(a for a, h in hourly.items() if h.size == 24 and not np.any(np.isnan(h)) and np.std(h) > 0)
        if len(names) >= 2:
            m = np.stack([hourly[a] for a in names])
            r = np.corrcoef(m)
            for i, j in zip(*np.nonzero(np.triu(r <= max_corr, 1)), strict=True):
                a, b = names[i], names[j]
                if b not in inter.get(a, set()):
                    comp.setdefault(a, set()).add(b)
                    comp.setdefault(b, set()).add(a)
    return {a: (sorted(inter.get(a, ())), sorted(comp.get(a, ()))) for a in sorted(set(inter) | set(comp))}


@dataclass
class Advisor:
    """Co-location advice kept up to date from anomalies and hourly CPU profiles (bounded, event time).

    The advice is recomputed at most once per ``every_s`` of event time (it is O(apps²) in the
    hourly correlation); ``max_apps`` bounds the hourly profiles kept.
    """

    pairs: PairCounts = field(default_factory=PairCounts)
    hourly: dict[str, np.ndarray] = field(default_factory=dict)
    every_s: float = 300.0
    max_apps: int = 5000
    min_episodes: int = 2
    _at: float | None = None
    _advice: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)

    def add_anomaly(self, anomaly: Anomaly) -> None:
        self.pairs.add(anomaly)

    def add_hourly(self, app: str, hourly: np.ndarray) -> None:
        if app in self.hourly or len(self.hourly) < self.max_apps:
            self.hourly[app] = hourly

    def advice(self, app: str, ts: float) -> tuple[list[str], list[str]]:
        if self._at is None or ts - self._at >= self.every_s or ts < self._at:
            self._advice = colocation_advice(self.pairs.counts, self.hourly, min_episodes=self.min_episodes)
            self._at = ts
        return self._advice.get(app, ([], []))
