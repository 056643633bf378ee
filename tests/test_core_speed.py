"""The hot-path indexes and shortcuts give the same answers as the plain computations they replace (pure)."""

from __future__ import annotations

import math
import random

import numpy as np

from kubetide import models as m
from streams.core.forecast import _candidates as fc_candidates
from streams.core.messages import NodeSummary
from streams.core.state import ZONE_LABEL, ClusterState, EvictorSettings, Key, _evictable, evictable, spread_counts
from streams.core.ticks import TickAssembler
from tests.test_core_state import T0, node_ev, pdb_ev, pod_ev, state_of, summary


class PlainTickAssembler(TickAssembler):
    """The tick rule as first written: the watermark is the minimum over every ready node, every time."""

    def _complete(self, ready_nodes):  # type: ignore[no-untyped-def]
        if not self.pending:
            return []
        ready = list(ready_nodes)
        watermark = min((self.seen.get(n, -math.inf) for n in ready), default=-math.inf)
        newest = max(self.pending)
        done: list[tuple[float, dict[str, NodeSummary]]] = []
        for pt in sorted(self.pending):
            overflow = len(self.pending) - len(done) > self.max_pending
            if pt <= watermark or newest > pt + self.lateness_s or overflow:
                done.append((pt, self.pending[pt]))
            else:
                break
        for pt, _ in done:
            del self.pending[pt]
            self.last_completed = pt
        return done


def test_tick_assembler_matches_the_plain_watermark_rule() -> None:
    """Random arrival orders, silent / late nodes, ready sets that change (nodes added, deleted, not ready):
    the remembered lagging node never changes which ticks complete, nor when."""
    rng = random.Random(7)
    for case in range(60):
        nodes = [f"n{i}" for i in range(rng.randint(1, 8))]
        kw = {"lateness_s": rng.choice([0.0, 20.0, 60.0]), "max_pending": rng.choice([2, 64])}
        fast, plain = TickAssembler(**kw), PlainTickAssembler(**kw)
        ready = list(nodes)
        for t in range(25):
            ts = T0 + 10 * t
            order = [n for n in nodes if rng.random() > 0.15]  # some nodes skip a tick
            if rng.random() < 0.5:
                rng.shuffle(order)
            for n in order:
                late = rng.random() < 0.05
                s = summary(ts - 10 if late else ts, n, 1)
                got, want = fast.add(s, ready), plain.add(s, ready)
                assert [(p, sorted(x)) for p, x in got] == [(p, sorted(x)) for p, x in want], (case, t, n)
            if rng.random() < 0.2:  # the ready set changes (a node deleted, not ready, or back)
                ready = [n for n in nodes if rng.random() > 0.3]
                if rng.random() < 0.3:
                    ready = []
                got, want = fast.recheck(ready), plain.recheck(ready)
                assert [p for p, _ in got] == [p for p, _ in want], (case, t)
        assert (fast.last_completed, fast.late, sorted(fast.pending)) == \
            (plain.last_completed, plain.late, sorted(plain.pending))


def test_tick_assembler_remembered_lagging_node_must_still_be_ready() -> None:
    ta = TickAssembler(lateness_s=1000)
    ta.add(summary(T0, "a", 1), ["a", "b"])  # b lags
    assert ta.pending
    # b is no longer ready (deleted): the tick completes although b never reported
    assert [t for t, _ in ta.recheck(["a"])] == [T0]


def plain_spread_counts(state: ClusterState, namespace: str, pod: m.PodSnapshot, c: m.TopologySpread,
                        moved: dict[Key, str] | None = None) -> dict[str, int]:
    """spread_counts as first written: every ready node's domain, then every pod of the state, per call."""
    moved = moved or {}
    counts: dict[str, int] = {}
    for n in state.ready_nodes():
        node = state.nodes[n]
        if all(node.labels.get(k) == v for k, v in pod.node_selector.items()):
            d = state.zone_of(n, c.topology_key)
            if d is not None:
                counts.setdefault(d, 0)
    if not c.match_labels:
        return counts
    for k, p in state.pods.items():
        if k[0] != namespace or p.phase != "Running" or not p.ready or not p.node:
            continue
        if any(p.labels.get(lk) != lv for lk, lv in c.match_labels.items()):
            continue
        d = state.zone_of(moved.get(k, p.node), c.topology_key)
        if d is not None and d in counts:
            counts[d] += 1
    return counts


def test_spread_counts_match_the_plain_count_across_events() -> None:
    """The memoised domains and members follow every event (pods placed, deleted, not ready; nodes not ready,
    relabelled) and the moves of the tick, for zone and other topology keys and node selectors."""
    rng = random.Random(11)
    zones, pools = ["a", "b", "c"], ["x", "y"]

    def node(i: int) -> m.ClusterEvent:
        return node_ev(f"n{i}", zone=rng.choice(zones), ready=rng.random() > 0.2,
                       labels={"pool": rng.choice(pools), "rack": rng.choice(["r1", "r2"])})

    def pod(i: int) -> m.ClusterEvent:
        return pod_ev(rng.choice(["shop", "batch"]), f"p{i}", rng.choice([None, *[f"n{j}" for j in range(6)]]),
                      app=rng.choice(["web", "api"]), phase=rng.choice(["Running", "Running", "Pending"]),
                      ready=rng.random() > 0.2, labels={"app": rng.choice(["web", "api"]),
                                                         "tier": rng.choice(["fe", "be"])})

    st = state_of(*[node(i) for i in range(6)], *[pod(i) for i in range(30)])
    constraints = [m.TopologySpread(max_skew=1, topology_key=key, match_labels=labels)
                   for key in (ZONE_LABEL, "rack", "pool")
                   for labels in ({"app": "web"}, {"app": "api", "tier": "fe"}, {})]
    selectors: list[dict[str, str]] = [{}, {"pool": "x"}, {"pool": "y", "rack": "r2"}]
    for step in range(40):
        ev = node(rng.randrange(6)) if rng.random() < 0.3 else pod(rng.randrange(34))
        if ev.kind == "Pod" and rng.random() < 0.2:
            ev = ev.model_copy(update={"type": "DELETED"})
        st.apply_event(ev)
        moved = {k: f"n{rng.randrange(6)}" for k in rng.sample(sorted(st.pods), 3)}
        cache: dict = {}
        for c in constraints:
            for sel in selectors:
                for ns in ("shop", "batch"):
                    probe = m.PodSnapshot(node="n0", phase="Running", node_selector=sel,
                                          requests=m.Resources(cpu_cores=0, mem_bytes=0))
                    want = plain_spread_counts(st, ns, probe, c, moved)
                    assert spread_counts(st, ns, probe, c, moved) == want, (step, c, sel, ns)
                    assert list(spread_counts(st, ns, probe, c, moved)) == list(want)  # same domain order
                    got = spread_counts(st, ns, probe, c, moved, cache)
                    got[next(iter(got), "none")] = -1  # the caller may change what it got
                    assert spread_counts(st, ns, probe, c, moved, cache) == want


def test_evictable_memo_follows_events_ticks_and_settings() -> None:
    """The per-pod answer is kept until the next event, and only for the same pod snapshot, settings and tick."""
    st = state_of(node_ev("n1"), pod_ev("shop", "p", "n1", created_at=T0), pdb_ev("shop", "pdb", {"app": "web"}, 0))
    key = ("shop", "p")
    assert evictable(key, st.pods[key], st) == (False, "pdb-pdb")
    st.apply_event(pdb_ev("shop", "pdb", {"app": "web"}, 1, type="MODIFIED"))  # an event: asked again
    assert evictable(key, st.pods[key], st) == (True, "ok")
    young, any_age = EvictorSettings(min_pod_age_s=100), EvictorSettings(min_pod_age_s=0)
    st.apply_tick(T0 + 50, {})
    assert evictable(key, st.pods[key], st, young) == (False, "too-young")
    assert evictable(key, st.pods[key], st, any_age) == (True, "ok")  # other settings: not the memoised answer
    assert evictable(key, st.pods[key], st, young) == (False, "too-young")
    st.apply_tick(T0 + 150, {})  # the next tick, no event: the pod has grown old enough
    assert evictable(key, st.pods[key], st, young) == (True, "ok")
    other = st.pods[key].model_copy(update={"phase": "Pending"})  # another snapshot under the same key
    assert evictable(key, other, st) == (False, "phase-pending")


def test_evictable_memo_matches_the_plain_check_in_a_planner_run() -> None:
    """Every answer the strategies got in a run equals the plain (unmemoised) check at that moment."""
    from streams.core import state as core_state
    from tests.test_core_thrash import simulate

    asked: list[bool] = []
    memoised = core_state.evictable

    def checked(key: Key, pod: m.PodSnapshot, state: ClusterState,
                settings: EvictorSettings | None = None) -> tuple[bool, str]:
        got = memoised(key, pod, state, settings)
        assert got == _evictable(key, pod, state, settings or state.evictor, state.tick_ts)
        asked.append(True)
        return got

    core_state.evictable = checked
    try:
        simulate()
    finally:
        core_state.evictable = memoised
    assert asked


def _plain_candidates(x: np.ndarray, interval_s: float, lags: list[int], method: str) -> dict:
    """forecast._candidates' seasonal family as first written: every candidate computes its own profile."""
    from streams.core import forecast as fc

    out = fc_candidates(x, interval_s, lags, method)
    nonneg = bool(np.nanmin(x) >= 0) if (~np.isnan(x)).any() else False
    if lags:
        big = max(lags)
        for hl_frac in (1 / 48, 1 / 8, 1 / 2):
            for dec in (0.5, 0.85):
                hl = max(1.0, big * hl_frac)
                key = f"h={hl:g},d={dec:g}"
                out[f"seasonal:{key}"] = lambda t, h, hl=hl, dec=dec: fc._seasonal(t, lags, h, halflife=hl, decay=dec)
                if nonneg:
                    out[f"seasonal-log:{key}"] = (lambda t, h, hl=hl, dec=dec: np.expm1(
                        fc._seasonal(np.log1p(np.maximum(t, 0)), lags, h, halflife=hl, decay=dec)))
        main_period = big * interval_s
        for hl_frac in (1 / 48, 1 / 8):
            hl = max(1.0, big * hl_frac)
            out[f"blend:h={hl:g}"] = lambda t, h, hl=hl: 0.5 * (
                fc._seasonal(t, lags, h, halflife=hl, decay=0.85)
                + fc.fft_filter(t, interval_s, h, period_s=main_period, level_halflife=hl))
    if method == "auto":
        return out
    return {k: v for k, v in out.items() if k.split(":")[0] == method}


def test_shared_seasonal_profiles_forecast_bit_for_bit() -> None:
    """Candidates sharing a profile (same series, horizon, decay) forecast exactly what each computing its own
    does: same values, same backtest errors, same chosen method."""
    from streams.core import forecast as fc

    rng = np.random.default_rng(3)
    t = np.arange(1500)
    for case in range(8):
        day = rng.choice([96, 144, 288])
        x = 5 + 3 * np.sin(2 * np.pi * t / day) + 0.5 * np.sin(2 * np.pi * t / (day // 4)) \
            + rng.normal(0, 0.3 + 0.2 * case, len(t))
        if case % 2:
            x[rng.random(len(t)) < 0.05] = np.nan  # gaps
        if case % 3 == 0:
            x = x - 6  # negative values: no log candidates
        x = x[: rng.integers(600, 1500)]
        for method in ("auto", "seasonal", "seasonal-log", "blend"):
            try:
                shared = fc.forecast(x, 60.0, 120, method=method)
            except ValueError:
                continue
            fc._candidates = _plain_candidates
            try:
                plain = fc.forecast(x, 60.0, 120, method=method)
            finally:
                fc._candidates = fc_candidates
            assert shared.method == plain.method, (case, method)
            assert shared.backtest == plain.backtest, (case, method)
            assert np.array_equal(shared.values, plain.values, equal_nan=True), (case, method)
            assert np.array_equal(shared.upper, plain.upper, equal_nan=True), (case, method)


def plain_pdbs_for(state: ClusterState, namespace: str, pod: m.PodSnapshot) -> list[tuple[Key, m.PdbSnapshot]]:
    return [(k, b) for k, b in sorted(state.pdbs.items())
            if k[0] == namespace and b.match_labels
            and all(pod.labels.get(lk) == lv for lk, lv in b.match_labels.items())]


def test_pdbs_for_follows_selector_and_status_changes() -> None:
    """Random PDBs appear, go, change their selector or only their status, between pod events: pdbs_for always
    equals the plain scan with the current snapshots, and a status-only change keeps the selector memo."""
    rng = random.Random(5)
    st = state_of(node_ev("n1"), *[pod_ev(ns, f"p{i}", "n1", app=app, labels={"app": app, "tier": tier})
                                   for i, (ns, app, tier) in enumerate(
                                       (rng.choice(["shop", "batch"]), rng.choice(["web", "api", "db"]),
                                        rng.choice(["fe", "be"])) for _ in range(12))])
    selectors = [{"app": "web"}, {"app": "api"}, {"tier": "fe"}, {"app": "db", "tier": "be"}, {}]
    kept = 0
    for step in range(150):
        ns, name = rng.choice(["shop", "batch"]), f"pdb{rng.randrange(4)}"
        before = st.pdb_selectors_version
        old = st.pdbs.get((ns, name))
        r = rng.random()
        if r < 0.15 and old is not None:
            st.apply_event(pdb_ev(ns, name, dict(old.match_labels), 0, type="DELETED"))
        elif r < 0.35 or old is None:
            st.apply_event(pdb_ev(ns, name, rng.choice(selectors), rng.randrange(3),
                                  type="ADDED" if old is None else "MODIFIED"))
        elif r < 0.8:  # status only
            st.apply_event(pdb_ev(ns, name, dict(old.match_labels), rng.randrange(3), type="MODIFIED"))
            assert st.pdb_selectors_version == before
            kept += 1
        else:  # a pod event in between
            i = rng.randrange(12)
            st.apply_event(pod_ev(rng.choice(["shop", "batch"]), f"p{i}", "n1",
                                  labels={"app": rng.choice(["web", "api", "db"]), "tier": rng.choice(["fe", "be"])}))
        for k, p in sorted(st.pods.items()):
            got = st.pdbs_for(k[0], p)
            assert got == plain_pdbs_for(st, k[0], p), (step, k)
            assert all(b is st.pdbs[pk] for pk, b in got)  # the current snapshots
    assert kept > 30


# ---------------------------------------------------------------- interference detector

def plain_cpu_correlations(state, mi, col, memo=None):  # type: ignore[no-untyped-def]
    """cpu_correlations as first written: every candidate recomputes the centred CPU window."""
    rows = state.window_rows()
    y = state.val[mi, rows, col]
    ok = ~np.isnan(y)
    if ok.sum() < 4:
        return None
    y = y[ok]
    c = state.cpu[rows][ok]
    miss = np.isnan(c)
    if miss.any():
        colmean = np.where(miss, 0.0, c).sum(axis=0) / np.maximum((~miss).sum(axis=0), 1)
        c = np.where(miss, colmean, c)
    yc = y - y.mean()
    cc = c - c.mean(axis=0)
    ss = (cc * cc).sum(axis=0)
    own = cc[:, col]
    den = np.sqrt(ss * (yc @ yc))
    den_own = np.sqrt(ss * ss[col])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(den > 0, (cc.T @ yc) / np.where(den > 0, den, 1.0), 0.0),
                np.where(den_own > 0, (cc.T @ own) / np.where(den_own > 0, den_own, 1.0), 0.0))


def plain_learn(self) -> None:  # type: ignore[no-untyped-def]
    """NodeState._learn as first written: one path for any number of unlearned scrapes."""
    from streams.core.interference import METRICS, _ewm

    s = self.settings
    rows = self.window_rows(self.unlearned)
    self.unlearned = 0
    x = self.val[:, rows]
    valid = x == x
    x0 = np.where(valid, x, 0.0)
    w = valid - self.out[:, rows] * (1.0 - s.outlier_weight)
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
    self.learned += 1
    if self.learned % s.robust_every == 0:
        self.pmed, self.pblocks = plain_median(self.bmean)
        nu = max(s.learn_every - 1, 1)
        self.psd = plain_median(self.bstd, upper=True)[0] / (1 - 2 / (9 * nu)) ** 1.5
    self._thresholds()


def _churning_scrapes(seed: int, n: int = 700) -> list[m.ClusterMetrics]:
    """One node's scrapes: pods leave (their columns kept for a window: one-scrape learning steps) and
    join, a shared load that the latency follows (self-explained candidates, several per scrape), episodes
    of CPI interference, unmeasured (0) values and scrapes without a latency column."""
    rng = np.random.default_rng(seed)
    pool = [f"p{i}" for i in range(40)]
    live = pool[:10]
    out = []
    for i in range(n):
        if rng.random() < 0.05 and len(live) > 4:
            live = [p for p in live if p != live[int(rng.integers(len(live)))]]
        if rng.random() < 0.05:
            live = sorted({*live, pool[int(rng.integers(len(pool)))]})
        k = len(live)
        load = 1 + 0.8 * math.sin(i / 25) + rng.normal(0, 0.05)
        cpu = np.clip(load * rng.uniform(0.2, 1.0, k) + rng.normal(0, 0.05, k), 0, None)
        cpi = rng.lognormal(0, 0.05, k) * (1 + (rng.random(k) < 0.03) * 1.5)
        if (i // 60) % 3 == 1:
            cpi[: 2] *= 1.6  # an episode on the first pods
            cpu[-1] += 3.0
        lat = 20 * load * rng.lognormal(0, 0.03, k)
        cpi[rng.random(k) < 0.05] = 0.0  # not measured
        lat[rng.random(k) < 0.05] = 0.0
        out.append(m.ClusterMetrics(
            ts=T0 + 10 * i, node="n", window_s=10, node_usage=m.Resources(cpu_cores=float(cpu.sum()), mem_bytes=1),
            node_allocatable=m.Resources(cpu_cores=16, mem_bytes=1e10),
            pods=m.PodSamples(namespace=["a"] * k, name=live, app=[f"app{int(p[1:]) % 4}" for p in live],
                              cpu_cores=cpu.tolist(), mem_bytes=[1.0] * k, cpi=cpi.tolist(),
                              latency_ms=lat.tolist() if rng.random() > 0.02 else None)))
    return out


def plain_median(a: np.ndarray, upper: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """interference._median as first written (np.take_along_axis)."""
    srt = np.sort(a, axis=1)
    k = (a == a).sum(axis=1)
    i = np.minimum(k // 2, np.maximum(k - 1, 0)) if upper else np.maximum(k - 1, 0) // 2
    med = np.take_along_axis(srt, i[:, None, :], axis=1)[:, 0, :].astype(np.float64)
    return np.where(k > 0, med, np.nan), k


def plain_window_rows(self, n=None):  # type: ignore[no-untyped-def]
    """NodeState.window_rows as first written: a new array at every call."""
    w = self.settings.window
    n = min(w if n is None else n, self.scrapes)
    return (self.head - np.arange(n - 1, -1, -1)) % w


def plain_self_explained(settings, rc, col):  # type: ignore[no-untyped-def]
    """interference.self_explained as first written (np.nanmax over the others)."""
    from streams.core.interference import _distinct

    thr = settings.self_load_min_score
    if thr is None or rc is None:
        return False
    r = rc[0]
    if not np.isfinite(r[col]) or r[col] < thr:
        return False
    others = r[_distinct(settings, rc, col)]
    return bool(others.size == 0 or r[col] >= np.nanmax(others))


def test_interference_small_shortcuts_are_the_plain_rules() -> None:
    """The cached ring rows, the median's direct indexing and the max of the others without np.nanmax (NaN
    among them or not) give what the plain rules give, bit for bit."""
    import warnings

    from streams.core import interference as itf

    rng = np.random.default_rng(21)
    for _ in range(300):
        w = int(rng.integers(4, 40))
        st = itf.NodeState(itf.InterferenceSettings(window=w, flag_window=min(6, w), learn_every=min(12, w)))
        st.head, st.scrapes = int(rng.integers(-1, w)), int(rng.integers(0, 3 * w))
        for n in (None, int(rng.integers(0, w + 3))):
            got, want = st.window_rows(n), plain_window_rows(st, n)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (w, st.head, n)
            assert not got.flags.writeable
        a = rng.normal(1, 1, (2, int(rng.integers(1, 40)), int(rng.integers(0, 30)))).astype(
            rng.choice([np.float32, np.float64]))
        a[rng.random(a.shape) < rng.choice([0.0, 0.3, 0.9, 1.0])] = np.nan
        for upper in (False, True):
            (gm, gk), (wm, wk) = itf._median(a, upper), plain_median(a, upper)
            assert gm.dtype == wm.dtype and gm.tobytes() == wm.tobytes() and gk.tobytes() == wk.tobytes()
        p = int(rng.integers(1, 12))
        r = rng.uniform(-1, 1, p)
        r[rng.random(p) < rng.choice([0.0, 0.2, 1.0])] = np.nan
        own = rng.uniform(-1, 1, p)
        col = int(rng.integers(p))
        r[col] = rng.choice([r[col], 0.9, 0.6, np.nan])
        s = itf.InterferenceSettings(collinear_max=float(rng.choice([0.5, 0.8, 1.0])))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert itf.self_explained(s, (r, own), col) == plain_self_explained(s, (r, own), col)


def test_interference_shortcuts_match_the_plain_detector(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The shared CPU window of a scrape's candidates, the one-scrape learning step and the small shortcuts
    (cached ring rows, the median's indexing, the others' max) give the same anomalies and the same state, bit
    for bit, as the detector as first written."""
    from streams.core import interference as itf

    def run(plain: bool, msgs: list[m.ClusterMetrics]) -> tuple[list[dict], itf.NodeState]:
        with monkeypatch.context() as mp:
            if plain:
                mp.setattr(itf, "cpu_correlations", plain_cpu_correlations)
                mp.setattr(itf.NodeState, "_learn", plain_learn)
                mp.setattr(itf, "_median", plain_median)
                mp.setattr(itf.NodeState, "window_rows", plain_window_rows)
                mp.setattr(itf, "self_explained", plain_self_explained)
            st = itf.NodeState(itf.InterferenceSettings(warmup=10, learn_every=4, robust_every=2, window=20))
            out = [a.model_dump() for msg in msgs for a in itf.update(st, msg)]
        return out, st

    for seed in range(4):
        msgs = _churning_scrapes(seed)
        fast, st_fast = run(False, msgs)
        plain, st_plain = run(True, msgs)
        assert fast == plain, seed
        assert len(fast) > 3, seed  # the inputs do open episodes
        for name in ("val", "out", "bmean", "bstd", "mean", "m2", "cnt", "pmed", "psd", "thr", "thr_hot"):
            assert getattr(st_fast, name).tobytes() == getattr(st_plain, name).tobytes(), (seed, name)


def test_cpu_correlations_memo_is_the_plain_computation() -> None:
    """Random windows with absent pods (NaN CPU) and unmeasured samples: each candidate's correlations from
    the scrape's shared memo equal the plain computation's bit for bit."""
    from streams.core import interference as itf

    rng = np.random.default_rng(3)
    for case in range(40):
        st = itf.NodeState(itf.InterferenceSettings(window=12))
        p = int(rng.integers(1, 9))
        st.scrapes, st.head = int(rng.integers(3, 30)), int(rng.integers(0, 12))
        st.cpu = rng.uniform(0, 2, (12, p))
        st.cpu[rng.random((12, p)) < 0.1] = np.nan
        st.val = rng.uniform(0.5, 2, (2, 12, p))
        st.val[rng.random((2, 12, p)) < rng.choice([0.0, 0.2, 0.6])] = np.nan
        memo: dict = {}
        for mi in range(2):
            for col in range(p):
                got, want = itf.cpu_correlations(st, mi, col, memo), plain_cpu_correlations(st, mi, col)
                if want is None:
                    assert got is None, case
                else:
                    assert got is not None, case
                    assert [a.tobytes() for a in got] == [b.tobytes() for b in want], case


# ---------------------------------------------------------------- indexes caught up from pod events

def test_pod_indexes_catch_up_like_a_rebuild() -> None:
    """Random pod events (added, relabelled, moved, respread, deleted, re-added; several per version, the same pod
    several times) and other events: the label index and ZoneSpread's groups caught up from the pod log are
    what a rebuild gives — the same lists in the same order, the same snapshots, the same group constraints —
    also when the log was cut short (a rebuild) and when an earlier value is held by a caller (left unchanged)."""
    import streams.core.state as state_mod
    from streams.core.strategies import zonespread as zs

    rng = random.Random(5)
    soft = zs.ZoneSpreadSettings(include_soft=True)
    hard = zs.ZoneSpreadSettings()

    def spread() -> list[m.TopologySpread]:
        out = []
        for _ in range(rng.choice([0, 1, 1, 2])):
            out.append(m.TopologySpread(
                max_skew=rng.choice([1, 2]), topology_key=rng.choice([ZONE_LABEL, ZONE_LABEL, "rack"]),
                when_unsatisfiable=rng.choice(["DoNotSchedule", "ScheduleAnyway"]),
                match_labels=rng.choice([{"app": "web"}, {"app": "api"}, {"app": "web", "tier": "fe"}, {}])))
        return out

    def pod(i: int) -> m.ClusterEvent:
        return pod_ev(rng.choice(["shop", "batch"]), f"p{i}", rng.choice([None, "n0", "n1", "n2"]),
                      app=rng.choice(["web", "api"]), ready=rng.random() > 0.2,
                      labels=rng.choice([{"app": "web"}, {"app": "api", "tier": "fe"}, {"app": "web", "tier": "fe"},
                                         {}, {"app": "web", "x": str(rng.randrange(3))}]),
                      topology_spread=spread())

    old_max = state_mod.POD_LOG_MAX
    try:
        for case in range(6):
            state_mod.POD_LOG_MAX = rng.choice([8, 40, 100_000])
            st = state_of(node_ev("n0"), node_ev("n1"), *[pod(i) for i in range(20)])
            held = []
            for step in range(60):
                for _ in range(rng.choice([0, 1, 1, 3, 8])):
                    r = rng.random()
                    if r < 0.1:
                        st.apply_event(node_ev(f"n{rng.randrange(3)}", type="MODIFIED"))
                        continue
                    ev = pod(rng.randrange(30))
                    if r < 0.3 and (ev.namespace, ev.name) in st.pods:
                        ev = ev.model_copy(update={"type": "DELETED"})
                    st.apply_event(ev)
                index = st.pods_by_label()
                assert index == st._pods_by_label(), (case, step)
                assert all(a[1] is b[1] for t, lst in index.items() for a, b in zip(lst, st._pods_by_label()[t],
                                                                                       strict=True))
                for s in (soft, hard):
                    got, want = zs._groups(st, s), zs._build_groups(st, s)
                    assert got == want, (case, step)
                    assert all(got[g][0] is want[g][0] and all(a[1] is b[1] for a, b in zip(got[g][1], want[g][1],
                                                                                            strict=True))
                               for g in want), (case, step)
                if rng.random() < 0.3:
                    held.append((zs._groups(st, hard), {g: (v[0], list(v[1])) for g, v in zs._groups(st, hard).items()},
                                 st.pods_by_label(), {t: list(v) for t, v in st.pods_by_label().items()}))
            for groups, groups_copy, index, index_copy in held:  # what callers held was never changed
                assert {g: (v[0], list(v[1])) for g, v in groups.items()} == groups_copy
                assert {t: list(v) for t, v in index.items()} == index_copy
    finally:
        state_mod.POD_LOG_MAX = old_max


def test_per_node_memos_follow_pod_events_like_a_rebuild() -> None:
    """pods_on / workloads_on / requested_on, kept per node until a pod event on that node (the node it left or
    the node it is on), equal the plain computation after random pod moves, phase changes and deletions."""
    rng = random.Random(9)
    nodes = [f"n{i}" for i in range(5)]

    def pod(i: int) -> m.ClusterEvent:
        return pod_ev("shop", f"p{i}", rng.choice([None, *nodes]), app=rng.choice(["web", "api"]),
                      cpu=rng.choice([0.1, 0.25, 0.5]),
                      phase=rng.choice(["Running", "Running", "Pending", "Succeeded"]),
                      kind=rng.choice(["Deployment", None]))

    st = state_of(*[node_ev(n) for n in nodes], *[pod(i) for i in range(25)])
    for step in range(200):
        ev = pod(rng.randrange(30))
        if rng.random() < 0.2 and (ev.namespace, ev.name) in st.pods:
            ev = ev.model_copy(update={"type": "DELETED"})
        st.apply_event(ev)
        for n in rng.sample(nodes, 3):
            plain = [(k, st.pods[k]) for k in sorted(st.pods_by_node.get(n, ()))
                     if st.pods[k].phase in ("Running", "Pending")]
            got = st.pods_on(n)
            assert got == plain and all(a[1] is b[1] for a, b in zip(got, plain, strict=True)), (step, n)
            assert st.workloads_on(n) == frozenset(p.workload.key for _, p in plain if p.workload is not None)
            cpu = mem = 0.0
            for _, p in plain:
                cpu += p.requests.cpu_cores
                mem += p.requests.mem_bytes
            assert st.requested_on(n) == (cpu, mem), (step, n)


# ---------------------------------------------------------------- NodeScaler's per-pod sums

def plain_cost_mismatches(ns, state, elastic):  # type: ignore[no-untyped-def]
    """NodeScaler._cost_mismatches as first written: every node's pods checked at every call."""
    from streams.core.nodescale import DELETION_COST

    out = []
    fx_cost = None if ns.s.fixed_deletion_cost is None else str(ns.s.fixed_deletion_cost)
    for node in sorted(state.pods_by_node):
        snap = state.nodes.get(node)
        if snap is None:
            continue
        want = ns.elastic_cost(node) if node in elastic else fx_cost
        group = elastic.get(node) or snap.node_group or ""
        keys = [key for key, pod in state.pods_on(node)
                if pod.phase == "Running" and pod.workload is not None
                and pod.workload.kind in ("ReplicaSet", "Deployment")
                and key[0] not in ns.s.protected_namespaces and not ns.is_placeholder(key, pod)
                and pod.annotations.get(DELETION_COST) != want]
        if keys:
            out.append((node, group, want, keys))
    return out


def test_nodescale_sums_and_cost_checks_follow_pod_events_like_the_plain_rule() -> None:
    """Random pods on fixed and elastic nodes (placeholders, DaemonSet pods, protected namespaces, annotated
    costs), moved, re-annotated, deleted, and elastic nodes joining: the demand sums caught up from the pod log,
    the per-node cost checks and the per-node used CPU equal the plain computations (the same floats)."""
    from streams.core.nodescale import DELETION_COST, NodeScaler, NodeScaleSettings

    rng = random.Random(13)
    nodes = ["f1", "f2", "e1", "e2", "e3"]

    def node(n: str) -> m.ClusterEvent:
        group = "elastic" if n.startswith("e") else "fixed"
        return node_ev(n, cpu=8.0, node_group=group)

    def pod(i: int) -> m.ClusterEvent:
        ns = rng.choice(["shop", "shop", "kube-system", "overprovisioning"])
        app = "placeholder" if ns == "overprovisioning" else rng.choice(["web", "api"])
        cost = rng.choice([None, "-100", "-1000", "0"])
        return pod_ev(ns, f"p{i}", rng.choice([None, *nodes]), app=app, cpu=rng.choice([0.1, 0.3, 0.7]),
                      kind=rng.choice(["Deployment", "ReplicaSet", "DaemonSet", None]),
                      priority=rng.choice([0, 0, -1]), phase=rng.choice(["Running", "Running", "Pending", "Failed"]),
                      annotations={} if cost is None else {DELETION_COST: cost})

    st = state_of(*[node(n) for n in nodes[:3]], *[pod(i) for i in range(30)])
    ns = NodeScaler(NodeScaleSettings())
    for step in range(120):
        few = rng.random() < 0.3  # then the same pods change several times between two plans
        for _ in range(rng.choice([0, 1, 4, 12])):
            ev = pod(rng.randrange(6) if few else rng.randrange(40))
            if rng.random() < 0.2 and (ev.namespace, ev.name) in st.pods:
                ev = ev.model_copy(update={"type": "DELETED"})
            st.apply_event(ev)
        # the rows behind the demand sums are in the order of the state's pods
        assert list(ns._demand_rows(st)) == [k for k, p in st.pods.items() if ns._demanding(k, p)], step
        if step == 60:
            st.apply_event(node("e2"))
            st.apply_event(node("e3"))
        elastic = {n: g for n in sorted(st.nodes) if (g := ns.group_of(st, n)) is not None}
        for n in elastic:
            ns.join_seq.setdefault(n, len(ns.join_seq))
        assert ns._demand_fast(st, elastic) == ns._demand(st, elastic), step
        assert ns._cost_mismatches(st, elastic) == plain_cost_mismatches(ns, st, elastic), step
        for pod_cpu in (0.5, 1.0):
            free = 0.0
            for n, snap in st.nodes.items():
                if n in elastic or not snap.ready or snap.unschedulable:
                    continue
                used = sum(p.requests.cpu_cores for k, p in st.pods_on(n) if not ns.is_placeholder(k, p))
                free += math.floor(max(0.0, snap.allocatable.cpu_cores - used) / pod_cpu + 1e-9) * pod_cpu
            assert ns._free_cores(st, pod_cpu, elastic) == free, step


# ---------------------------------------------------------------- autoscaler

def test_autoscaler_measure_matches_the_plain_walk() -> None:
    """Workloads over nodes in several zones (ready or not, some pods on a node not known from the events), samples
    with pods missing, ticks with a node's summary missing: the per-tick measure from the prepared parts equals
    the walk over every pod (totals, per-pod arrays, zone usage and pods by zone, in the same order)."""
    from streams.core.autoscaler import Autoscaler, _zones

    rng = random.Random(21)
    nodes = {"n0": "a", "n1": "b", "n2": "c", "n3": "a"}
    fast_path = 0
    for case in range(30):
        evs = [node_ev(n, zone=z, labels={ZONE_LABEL: z}) for n, z in nodes.items()]
        evs.append(m.ClusterEvent(ts=T0, type="ADDED", kind="Deployment", namespace="shop", name="web",
                                  deployment=m.DeploymentSnapshot(replicas=rng.randint(1, 9))))
        for i in range(rng.randint(0, 12)):
            evs.append(pod_ev("shop", f"web-{i}", rng.choice([*nodes, "ghost", None]), app="web",
                              ready=rng.random() > 0.3, phase=rng.choice(["Running", "Running", "Pending"]),
                              created_at=T0 - rng.randint(0, 999)))
        st = state_of(*evs)
        for t in range(3):
            sums = {}
            for n in [*nodes, "ghost"]:
                if rng.random() < 0.15:
                    continue  # the node's summary is missing this tick
                pods = {k: rng.uniform(0, 2) for k, p in st.pods.items() if p.node == n and rng.random() > 0.2}
                sums[n] = summary(T0 + 10 * t, n, 1.0, pods=pods)
            st.apply_tick(T0 + 10 * t, sums)
            prep = Autoscaler._prepare(st, "shop", "web", None, _zones(st))
            assert prep is not None
            fast_path += prep.by_zone is not None
            got, want = Autoscaler._measure(st, prep), Autoscaler._measure_plain(st, prep)
            assert got.pod_cpu.tobytes() == want.pod_cpu.tobytes()
            assert got.pod_ready.tobytes() == want.pod_ready.tobytes()
            assert (got.replicas, got.request_cores, got.max_skew) == (want.replicas, want.request_cores, want.max_skew)
            assert (math.isnan(got.total_cores) and math.isnan(want.total_cores)) or got.total_cores == want.total_cores
            assert list(got.zone_usage.items()) == list(want.zone_usage.items()), case
            assert list(got.pods_by_zone.items()) == list(want.pods_by_zone.items()), case
    assert 0 < fast_path < 90  # both paths were taken


def test_hpa_usage_in_millicores_without_nan_to_num() -> None:
    """replicas_for_utilization masks the missing samples itself: replacing them by 0 before _milli gives the very
    millicores nan_to_num did (also for ±inf and huge values, which the scaling by 1000 takes to ±inf alike)."""
    from streams.core.hpa import _milli

    rng = np.random.default_rng(2)
    for _ in range(200):
        usage = rng.choice([0.0, 1e-9, 0.0005, 0.0015, 1.2345, 3.9999995, 1e300, np.inf, -np.inf, np.nan],
                           size=int(rng.integers(1, 12))) * rng.choice([1.0, rng.uniform(0, 3)])
        missing = np.isnan(usage)
        with np.errstate(invalid="ignore", over="ignore"):
            want = np.where(missing, 0, _milli(np.nan_to_num(usage)))
            got = np.where(missing, 0, _milli(np.where(missing, 0.0, usage)))
        assert got.tobytes() == want.tobytes()


def test_interference_strategy_ranks_suspects_once_per_anomaly_like_the_plain_sort() -> None:
    """The Interference strategy's suspects, ranked once per anomaly and kept until the next event, are what
    sorting them at every tick gives: same decisions over ticks where anomalies come, go, and pods move."""
    from streams.core.strategies import interference as si

    def plain_plan(state: ClusterState, s: si.InterferenceSettings) -> list[m.DescheduleDecision]:
        memo_free = ClusterState.cached

        def no_memo(self: ClusterState, name: str, build):  # type: ignore[no-untyped-def]
            return build() if name.startswith("interference-ranked/") else memo_free(self, name, build)

        ClusterState.cached = no_memo  # type: ignore[method-assign]
        try:
            return si.plan(state, s)
        finally:
            ClusterState.cached = memo_free  # type: ignore[method-assign]

    rng = random.Random(17)
    nodes = ["n0", "n1", "n2"]
    made = 0
    for case in range(8):
        evs = [node_ev(n) for n in nodes]
        evs += [pod_ev("shop", f"p{i}", rng.choice(nodes), app=f"a{i % 5}", priority=rng.choice([0, 10]))
                for i in range(15)]
        st_fast, st_plain = state_of(*evs), state_of(*evs)
        s = si.InterferenceSettings(min_score=rng.choice([0.0, 0.4]), max_evictions_per_tick=rng.choice([1, 3]))
        for t in range(20):
            ts = T0 + 10 * t
            for st in (st_fast, st_plain):
                st.apply_tick(ts, {n: summary(ts, n, 2.0, pods={k: 0.3 for k in st.pods_by_node.get(n, ())})
                                   for n in nodes})
            if rng.random() < 0.5:
                v, *ants = rng.sample(sorted(st_fast.pods), 4)
                node = st_fast.pods[v].node
                a = m.Anomaly(id=f"a{case}-{t}", ts=ts, node=node, state="open", metric="cpi", severity=0.5,
                              victim=m.PodRef(namespace=v[0], name=v[1], node=node),
                              antagonists=[m.Suspect(namespace=k[0], name=k[1], score=round(rng.uniform(0, 1), 2))
                                           for k in ants],
                              window_start=ts - 60, window_end=ts)
                for st in (st_fast, st_plain):
                    st.apply_anomaly(a)
            if rng.random() < 0.3:
                ev = pod_ev("shop", f"p{rng.randrange(15)}", rng.choice(nodes), app="a0")
                for st in (st_fast, st_plain):
                    st.apply_event(ev)
            got, want = si.plan(st_fast, s), plain_plan(st_plain, s)
            assert [d.model_dump() for d in got] == [d.model_dump() for d in want], (case, t)
            made += len(got)
            for st, ds in ((st_fast, got), (st_plain, want)):
                for d in ds:
                    st.record(d)
    assert made > 5  # the anomalies did lead to moves


# ---------------------------------------------------------------- predicted landing

def test_predicted_landing_memo_is_the_computed_landing_across_events_and_ticks() -> None:
    """Random nodes (zones, taints, cordons, not ready, deleted and re-added) and workload pods (spread constraints,
    tolerations, selectors; some on a node not known from the events, whose zone comes from the scrapes), random
    events and ticks between the questions: the landing memoised until the next event is what computing it gives,
    asked several times per version, also with moves booked (never memoised) and after a scrape changes the zone
    of an unknown node."""
    from streams.core.state import _landing, predicted_landing

    rng = random.Random(17)
    nodes = [f"n{i}" for i in range(7)]
    ghosts = ["g0", "g1"]  # nodes with pods but no Node event

    def node(n: str) -> m.ClusterEvent:
        taints = rng.choice([[], [], [m.Taint(key="x", effect=rng.choice(["NoSchedule", "PreferNoSchedule"]))]])
        return node_ev(n, cpu=rng.choice([2.0, 4.0, 8.0]), zone=rng.choice(["a", "b", "c"]), taints=taints,
                       unschedulable=rng.random() < 0.1, ready=rng.random() > 0.1,
                       labels={"disk": rng.choice(["ssd", "hdd"])}, type=rng.choice(["ADDED", "MODIFIED"]))

    def pod(i: int) -> m.ClusterEvent:
        spread = [m.TopologySpread(max_skew=rng.choice([1, 2]),
                                   topology_key=rng.choice([ZONE_LABEL, "kubernetes.io/hostname"]),
                                   when_unsatisfiable=rng.choice(["DoNotSchedule", "ScheduleAnyway"]),
                                   match_labels={"app": "web"}) for _ in range(rng.choice([0, 0, 1, 2]))]
        tol = rng.choice([[], [m.Toleration(key="x", operator="Exists")]])
        return pod_ev("shop", f"p{i}", rng.choice([None, *nodes, *nodes, *ghosts]), app=rng.choice(["web", "api"]),
                      cpu=rng.choice([0.1, 0.5, 1.5]), phase=rng.choice(["Running", "Running", "Pending"]),
                      topology_spread=spread, tolerations=tol,
                      node_selector=rng.choice([{}, {}, {"disk": "ssd"}]))

    ts = T0
    st = state_of(*[node(n) for n in nodes], *[pod(i) for i in range(30)])
    asked = 0
    for step in range(150):
        r = rng.random()
        if r < 0.5:
            for _ in range(rng.choice([1, 1, 3])):
                if rng.random() < 0.15:
                    n = rng.choice(nodes)
                    st.apply_event(node(n).model_copy(update={"type": "DELETED"}) if rng.random() < 0.3 else node(n))
                else:
                    ev = pod(rng.randrange(36))
                    if rng.random() < 0.2 and (ev.namespace, ev.name) in st.pods:
                        ev = ev.model_copy(update={"type": "DELETED"})
                    st.apply_event(ev)
        elif r < 0.8:  # a tick: the unknown nodes' zones may change with it, the version does not
            ts += 10
            sums = {n: summary(ts, n, rng.uniform(0, 8)) for n in [*nodes, *ghosts] if rng.random() > 0.2}
            for g in ghosts:
                if g in sums:
                    sums[g] = sums[g].model_copy(update={"zone": rng.choice(["a", "b", "c"])})
            st.apply_tick(ts, sums)
        placed = [(k, p) for k, p in st.pods.items() if p.node]
        for key, p in rng.sample(placed, min(len(placed), 6)):
            for _ in range(2):
                want = _landing(st, key, p, p.node, None, None, 0.0, None)[0]
                assert predicted_landing(st, key, p, p.node) == want, (step, key)
                asked += 1
            other = rng.choice(placed)
            moved = {other[0]: rng.choice(nodes)}
            extra = {rng.choice(nodes): (0.5, 1.0)}
            assert predicted_landing(st, key, p, p.node, moved=moved, extra_requests=extra) == \
                _landing(st, key, p, p.node, moved, extra, 0.0, None)[0], (step, key)
    assert asked > 500


def test_apart_index_is_rebuilt_only_for_other_pairs_and_equals_the_plain_index() -> None:
    """Pairs added, re-confirmed (only the time moves), pruned and re-added in another order, the dict replaced:
    the shared index equals the one built from the pairs (the same sets, kept_apart_from the same), and what a
    caller copied from it earlier is unchanged."""
    rng = random.Random(23)
    wls = [f"shop/w{i}" for i in range(8)]
    st = ClusterState()
    for step in range(400):
        r = rng.random()
        if r < 0.4:
            a, b = rng.sample(wls, 2)
            st.apart[(min(a, b), max(a, b))] = float(step)
        elif r < 0.55 and st.apart:
            del st.apart[rng.choice(list(st.apart))]
        elif r < 0.6:
            st.apart = {k: t for k, t in st.apart.items() if rng.random() < 0.7}
        elif r < 0.62 and st.apart:  # one pair gone and another come between two asks: as many pairs
            del st.apart[rng.choice(list(st.apart))]
            a, b = rng.sample(wls, 2)
            st.apart[(min(a, b), max(a, b))] = float(step)
        elif r < 0.67:
            items = list(st.apart.items())
            rng.shuffle(items)
            st.apart = dict(items)
        elif st.apart:
            st.apart[rng.choice(list(st.apart))] = float(step)  # re-confirmed: same pairs
        want = st._build_apart_index()
        got = st.apart_index()
        assert got == want, step
        for w in wls:
            assert st.kept_apart_from(w) == want.get(w, set()), (step, w)


def test_healthy_elsewhere_counts_follow_pod_events_like_the_plain_sum() -> None:
    """Random pods of a few workloads (Running or not, ready or not, on a node or not), moved, changed and deleted;
    asked about pods of the state and about snapshots that differ from it (another node, none): the per-version
    counts give the plain sum over the workload's pods."""
    from streams.core.state import Choice

    rng = random.Random(29)
    nodes = [f"n{i}" for i in range(5)]

    def pod(i: int) -> m.ClusterEvent:
        return pod_ev("shop", f"p{i}", rng.choice([None, *nodes]), app=rng.choice(["web", "api", "db"]),
                      phase=rng.choice(["Running", "Running", "Pending", "Failed"]), ready=rng.random() > 0.3,
                      kind=rng.choice(["Deployment", "Deployment", None]))

    def plain(state: ClusterState, key: Key, p: m.PodSnapshot) -> int:
        if p.workload is None:
            return 0
        return sum(1 for k, q in state.pods_by_workload().get(p.workload.key, [])
                   if k != key and q.phase == "Running" and q.ready and q.node and q.node != p.node)

    st = state_of(*[node_ev(n) for n in nodes], *[pod(i) for i in range(30)])
    for step in range(200):
        for _ in range(rng.choice([0, 1, 1, 4])):
            ev = pod(rng.randrange(36))
            if rng.random() < 0.2 and (ev.namespace, ev.name) in st.pods:
                ev = ev.model_copy(update={"type": "DELETED"})
            st.apply_event(ev)
        choice = Choice(st)
        for key, p in rng.sample(list(st.pods.items()), min(len(st.pods), 8)):
            assert choice.healthy_elsewhere(key, p) == plain(st, key, p), (step, key)
            q = p.model_copy(update={"node": rng.choice([None, "", *nodes])})  # a snapshot unlike the state's
            assert choice.healthy_elsewhere(key, q) == plain(st, key, q), (step, key, q.node)


def test_pods_by_workload_catches_up_like_a_rebuild() -> None:
    """Random pod events (added, moved to another workload or none, changed, deleted, re-added; several per version,
    the same pod several times), the pod log cut short (a rebuild): the index caught up from the pod log holds, per
    workload, the very lists a rebuild gives (the same keys in key order, the same snapshots), and what a caller
    held earlier is unchanged."""
    import streams.core.state as state_mod

    rng = random.Random(31)

    def pod(i: int) -> m.ClusterEvent:
        return pod_ev(rng.choice(["shop", "batch"]), f"p{i}", rng.choice([None, "n0", "n1"]),
                      app=rng.choice(["web", "api", "db"]), kind=rng.choice(["Deployment", "Deployment", None]),
                      phase=rng.choice(["Running", "Pending"]))

    old_max = state_mod.POD_LOG_MAX
    try:
        for case in range(6):
            state_mod.POD_LOG_MAX = rng.choice([8, 40, 100_000])
            st = state_of(node_ev("n0"), node_ev("n1"), *[pod(i) for i in range(25)])
            held = []
            for step in range(80):
                few = rng.random() < 0.3
                for _ in range(rng.choice([0, 1, 1, 3, 10])):
                    if rng.random() < 0.05:
                        st.apply_event(node_ev("n0", type="MODIFIED"))
                        continue
                    ev = pod(rng.randrange(4) if few else rng.randrange(35))
                    if rng.random() < 0.25 and (ev.namespace, ev.name) in st.pods:
                        ev = ev.model_copy(update={"type": "DELETED"})
                    st.apply_event(ev)
                got, want = st.pods_by_workload(), st._pods_by_workload()
                assert got == want, (case, step)
                assert all(a[1] is b[1] for wl in want for a, b in zip(got[wl], want[wl], strict=True)), (case, step)
                if rng.random() < 0.3:
                    held.append((got, {wl: list(v) for wl, v in got.items()}))
            for index, copy in held:
                assert {wl: list(v) for wl, v in index.items()} == copy
    finally:
        state_mod.POD_LOG_MAX = old_max


def test_prefer_no_schedule_count_and_apart_sets_are_the_plain_ones() -> None:
    """Nodes with and without taints of every effect, pods with and without tolerations: the count of untolerated
    PreferNoSchedule taints is the plain sum; and a choice's read-only apart sets are kept_apart_from's, which
    choosing targets never changes."""
    from streams.core.state import Choice, tolerates, untolerated_prefer_no_schedule

    rng = random.Random(37)
    effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"]
    for _ in range(500):
        node = m.NodeSnapshot(allocatable=m.Resources(cpu_cores=4, mem_bytes=1e9), taints=[
            m.Taint(key=rng.choice(["a", "b"]), value=rng.choice(["", "x"]), effect=rng.choice(effects))
            for _ in range(rng.choice([0, 0, 1, 2]))])
        tol = [m.Toleration(key=rng.choice(["a", "b", None]), operator=rng.choice(["Exists", "Equal"]),
                            value=rng.choice([None, "x"]), effect=rng.choice([None, *effects]))
               for _ in range(rng.choice([0, 1, 2]))]
        pod = m.PodSnapshot(node="n0", phase="Running", requests=m.Resources(cpu_cores=0.1, mem_bytes=1.0),
                            tolerations=tol)
        want = sum(1 for t in node.taints if t.effect == "PreferNoSchedule" and not tolerates(pod.tolerations, t))
        assert untolerated_prefer_no_schedule(pod, node) == want
    nodes = [f"n{i}" for i in range(4)]
    st = state_of(*[node_ev(n) for n in nodes],
                  *[pod_ev("shop", f"p{i}", nodes[i % 4], app=f"w{i % 5}") for i in range(20)])
    st.apply_tick(T0, {n: summary(T0, n, 1.0) for n in nodes})
    for step in range(100):
        a, b = rng.sample([f"shop/w{i}" for i in range(5)], 2)
        st.apart[(min(a, b), max(a, b))] = float(step)
        if rng.random() < 0.3:
            del st.apart[rng.choice(list(st.apart))]
        choice = Choice(st)
        for key, p in rng.sample(list(st.pods.items()), 5):
            wl = p.workload.key
            assert choice._apart_of(wl) == choice.kept_apart_from(wl) == st._build_apart_index().get(wl, set())
            choice.targets(key, p, p.node, (0.1, 1.0))
        assert st.apart_index() == st._build_apart_index(), step
