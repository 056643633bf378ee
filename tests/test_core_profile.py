"""Per-app profiles: percentiles vs numpy, bounded memory, windows, serialisation, emission (pure)."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from kubetide import models as m
from kubetide.codec import decode, encode
from kubetide.config import ConfigError, build
from streams.core.messages import AppSamples, PlannerInput, app_requests, split_metrics
from streams.core.profile import (
    AppProfileState,
    NodeBatcher,
    ProfileSettings,
    classify,
    peak_hours,
    profile_message,
    should_emit,
    state_key,
    update_and_profile,
)
from streams.core.sketch import rank_interval
from tests.samples import samples
from tests.test_core_state import T0, pod_ev

QS = (0.50, 0.90, 0.95, 0.99)
EPS = 0.01  # the rank-error target


def rank_ok(est: float, data: np.ndarray, q: float, eps: float = EPS) -> bool:
    """The rank of ``est`` in ``data`` is within ``eps`` of ``q`` (rank interval [share <, share ≤])."""
    lo, hi = rank_interval(data, est)
    r = q * (data.size - 1) / data.size
    return lo - eps - 1e-12 <= r <= hi + eps + 1e-12


def feed(st: AppProfileState, cpu: np.ndarray, mem: np.ndarray, *, t0: float = T0, per: int = 50,
         step: float = 10.0) -> None:
    for i in range(0, len(cpu), per):
        st.update(AppSamples(ts=t0 + step * (i // per), namespace="shop", app="web",
                             pod=[f"p{j}" for j in range(len(cpu[i:i + per]))],
                             cpu_cores=cpu[i:i + per].tolist(), mem_bytes=mem[i:i + per].tolist()))


def dist(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    return {"lognormal": lambda: rng.lognormal(-1, 1, n), "uniform": lambda: rng.uniform(0, 4, n),
            "pareto": lambda: rng.pareto(1.1, n), "cauchy": lambda: np.abs(rng.standard_cauchy(n)),
            "bimodal": lambda: np.concatenate([rng.normal(0.2, 0.02, n // 2), rng.normal(3, 0.3, n - n // 2)]).clip(0),
            "constant": lambda: np.full(n, 0.75), "zeros": lambda: np.zeros(n),
            "mostly-zero": lambda: np.where(rng.uniform(size=n) < 0.97, 0.0, rng.exponential(1, n)),
            "discrete": lambda: rng.integers(0, 5, n).astype(float) / 4}[name]()


@pytest.mark.parametrize("name", ["lognormal", "uniform", "pareto", "cauchy", "bimodal", "constant", "zeros",
                                  "mostly-zero", "discrete"])
def test_percentiles_within_one_percent_rank_of_numpy(name: str) -> None:
    rng = np.random.default_rng(42)
    n = 60_000
    cpu = dist(name, n, rng)
    mem = rng.lognormal(20, 0.4, n)
    s = ProfileSettings()
    st = AppProfileState(s)
    feed(st, cpu, mem, step=2.0, per=50)  # 1200 messages, 2 s apart: 40 min, inside every window
    for wi in range(len(s.windows_s)):
        count, pc, pm = st.percentiles(wi)
        assert count == n
        assert st.rank_error_bound(wi) <= EPS
        for q, est in zip(QS, (pc.p50, pc.p90, pc.p95, pc.p99), strict=True):
            assert rank_ok(est, cpu, q), (name, q, est, rank_interval(cpu, est))
            assert est in cpu  # a stored sample, never an interpolation
        for q, est in zip(QS, (pm.p50, pm.p90, pm.p95, pm.p99), strict=True):
            assert rank_ok(est, mem, q), (name, q, est)
        assert pc.max == cpu.max() and pm.max == mem.max()


def test_large_bucket_keeps_one_percent_with_few_values() -> None:
    rng = np.random.default_rng(7)
    n = 1_000_000
    cpu, mem = rng.lognormal(0, 1.5, n), rng.pareto(1.5, n)
    st = AppProfileState(ProfileSettings(windows_s=(3600.0,), buckets_per_window=1))
    st.add_samples(T0, cpu, mem)
    n0, pc, pm = st.percentiles(0)
    assert n0 == n and st.rank_error_bound(0) <= 0.006
    for q, est in zip(QS, (pc.p50, pc.p90, pc.p95, pc.p99), strict=True):
        assert rank_ok(est, cpu, q, 0.002)  # measured error is far below the proven bound
    for q, est in zip(QS, (pm.p50, pm.p90, pm.p95, pm.p99), strict=True):
        assert rank_ok(est, mem, q, 0.002)
    assert st.stored() <= 2048 * 11  # k values per level, log2(n / k) + 1 levels


def test_memory_is_bounded_by_layout_not_sample_count() -> None:
    rng = np.random.default_rng(3)
    s = ProfileSettings(windows_s=(600.0, 3600.0), buckets_per_window=6, sketch_k=256)
    st = AppProfileState(s)
    sizes = []
    for rounds in range(6):  # 6 x 2 h of data, 100 samples every 10 s
        n = 72_000
        feed(st, rng.lognormal(0, 1, n), rng.lognormal(20, 0.3, n), t0=T0 + rounds * 7200, per=100)
        sizes.append((st.stored(), len(st.to_bytes()), sum(len(w) for w in st.buckets)))
    assert all(nb <= len(s.windows_s) * (s.buckets_per_window + 1) for _, _, nb in sizes)
    # state stops growing once the windows are full: the last rounds are about the same size
    assert max(x[0] for x in sizes[2:]) < 1.3 * min(x[0] for x in sizes[2:])
    assert max(x[1] for x in sizes[2:]) < 1.3 * min(x[1] for x in sizes[2:])
    count, _, _ = st.percentiles(0)
    assert count <= 100 * 600 / 10  # only the last 10 minutes (by bucket)


def test_windows_slide_in_event_time_and_old_samples_are_dropped() -> None:
    s = ProfileSettings(windows_s=(60.0, 600.0), buckets_per_window=6)
    st = AppProfileState(s)
    st.add_samples(T0, np.array([10.0]), np.array([1e9]))
    st.add_samples(T0 + 300, np.array([1.0]), np.array([1e9]))
    n60, c60, _ = st.percentiles(0)
    n600, c600, _ = st.percentiles(1)
    assert (n60, c60.max) == (1, 1.0) and (n600, c600.max) == (2, 10.0)
    st.add_samples(T0 - 10_000, np.array([99.0]), np.array([1e9]))  # too old for both windows
    assert st.percentiles(1)[0] == 2 and st.percentiles(1)[1].max == 10.0
    st.add_samples(T0 + 290, np.array([5.0]), np.array([1e9]))  # late, but inside both windows
    assert st.percentiles(1)[0] == 3 and st.percentiles(0)[0] == 2
    st.add_samples(T0 + 1000, np.array([2.0]), np.array([1e9]))  # everything before slides out
    assert st.percentiles(1)[0] == 1 and st.percentiles(1)[1].max == 2.0


def test_serialisation_roundtrip_and_layout_change() -> None:
    rng = np.random.default_rng(5)
    s = ProfileSettings()
    st = AppProfileState(s)
    feed(st, rng.lognormal(0, 1, 20_000), rng.lognormal(20, 0.3, 20_000))
    st.requests = (0.5, 1e9)
    again = AppProfileState.from_bytes(st.to_bytes(), s)
    assert again.to_bytes() == st.to_bytes()
    assert profile_message(again) == profile_message(st)
    other = AppProfileState.from_bytes(st.to_bytes(), ProfileSettings(buckets_per_window=6))
    assert other.n_total() == 0 and other.requests == (0.5, 1e9)  # sketches restart, metadata kept


def _daily(days: float, *, periodic: bool, seed: int = 0) -> AppProfileState:
    rng = np.random.default_rng(seed)
    st = AppProfileState(ProfileSettings(), namespace="shop", app="tide")
    n = int(days * 288)
    t = np.arange(n) * 300.0
    hour = (t / 3600.0) % 24
    level = 1.0 + 0.8 * np.exp(-((hour - 14) ** 2) / 6) if periodic else 1.0 + 0.3 * np.cumsum(
        rng.normal(0, 0.05, n)).clip(-3, 3)
    for i in range(n):
        cpu = np.clip(level[i] + rng.normal(0, 0.1, 4), 0, None)
        st.add_samples(T0 + t[i], cpu, np.full(4, 1e9))
    return st


def test_diurnal_app_has_a_daily_period_and_peak_hours() -> None:
    st = _daily(4, periodic=True)
    p = profile_message(st)
    assert p.period_s == 86400.0 and p.period_strength >= 0.5
    assert p.peak_hours and set(p.peak_hours) <= {12, 13, 14, 15, 16} and 14 in p.peak_hours
    assert peak_hours(st.hourly()) == p.peak_hours


def test_non_periodic_app_has_no_period() -> None:
    for seed in range(3):
        for days in (4, 7):
            p = profile_message(_daily(days, periodic=False, seed=seed))
            assert p.period_s is None and p.period_strength is None and p.peak_hours == [], (seed, days)
    assert peak_hours(np.ones(24)) == [] and peak_hours(np.full(24, np.nan)) == []


def test_autoscaled_tide_is_found_in_the_app_total() -> None:
    """An HPA holds per-pod CPU near its target while replicas follow a 5x daily tide: the period is
    in the app's total CPU (what the history keeps), not in the per-pod mean, which stays flat."""
    rng = np.random.default_rng(3)
    st = AppProfileState(ProfileSettings(), namespace="shop", app="hpa")
    per_pod_means = []
    for i in range(4 * 24 * 30):  # 4 days, one scrape round every 2 min
        ts = T0 + 120.0 * i
        demand = 6.0 + 4.0 * math.sin(2 * math.pi * ts / 86400.0)  # cores: 2 at night, 10 at peak
        n = max(1, round(demand / 0.5))  # replicas sized for 0.5 cores each
        cpu = np.clip(demand / n + rng.normal(0, 0.05, n), 0, None)
        names = [f"hpa-{k}" for k in range(n)]
        for node, part in enumerate((slice(0, n // 2), slice(n // 2, n))):  # two nodes, scraped 7 s apart
            if names[part]:
                st.update(AppSamples(ts=ts + 7.0 * node, namespace="shop", app="hpa", pod=names[part],
                                     cpu_cores=cpu[part].tolist(), mem_bytes=[1e9] * len(names[part])))
        per_pod_means.append(cpu.mean())
    assert np.std(per_pod_means) < 0.05  # the per-pod mean carries no tide
    h = st.history()
    assert h.max() / h.min() > 3  # the total does: 2 -> 10 cores
    np.testing.assert_allclose(np.nanmax(h), 10.0, rtol=0.1)
    p = profile_message(st)
    assert p.period_s == 86400.0, p.period_s


def test_history_counts_rounds_not_messages_or_pods() -> None:
    """Two pods, each scraped once per 10 s on its own node: 30 rounds per 5-minute slot."""
    st = AppProfileState(ProfileSettings(), namespace="shop", app="web")
    for k in range(60):
        for node, pod in enumerate(("web-a", "web-b")):
            st.update(AppSamples(ts=T0 + 10.0 * k + node, namespace="shop", app="web", pod=[pod],
                                 cpu_cores=[1.5], mem_bytes=[1e9]))
    np.testing.assert_allclose(st.history(), [3.0, 3.0])
    again = AppProfileState.from_bytes(st.to_bytes(), st.settings)  # mid-slot restart keeps the pod counts
    assert again.slot_pods == st.slot_pods and again.to_bytes() == st.to_bytes()


def test_version_3_state_keeps_sketches_and_restarts_history() -> None:
    rng = np.random.default_rng(1)
    st = AppProfileState(ProfileSettings())
    feed(st, rng.lognormal(0, 1, 5_000), rng.lognormal(20, 0.3, 5_000))
    d = orjson.loads(st.to_bytes())
    d["v"] = 3
    for k in ("hist_rounds", "slot_pods"):
        del d[k]
    old = AppProfileState.from_bytes(orjson.dumps(d), st.settings)
    assert old.percentiles(0) == st.percentiles(0) and old.n_total() == st.n_total()
    assert old.hist_last is None and old.history().size == 0


def test_history_is_bounded_ring() -> None:
    st = AppProfileState(ProfileSettings(history_slots=288))
    for i in range(3 * 288):
        st.add_samples(T0 + 300.0 * i, np.array([float(i)]), np.array([1.0]))
    h = st.history()
    assert h.size == 288 and h[-1] == 3 * 288 - 1 and h[0] == 2 * 288
    assert st.hist_sum.size == 288


def test_state_key_separates_namespaces() -> None:
    assert state_key("shop", "web") != state_key("blog", "web") == "blog/web"


def test_emission_once_per_event_time_minute() -> None:
    s = ProfileSettings()
    raw, emitted = None, []
    for i in range(30):  # every 10 s for 5 minutes
        msg = AppSamples(ts=T0 + 10 * i, namespace="shop", app="web", pod=["a"], cpu_cores=[0.5], mem_bytes=[1e9])
        raw, prof = update_and_profile(raw, msg, s)
        if prof is not None:
            emitted.append(prof.ts)
    assert emitted == [T0 + 60 * k for k in range(5)]
    # requests-only messages never emit
    raw2, prof = update_and_profile(None, AppSamples(ts=T0, namespace="shop", app="web",
                                                     requests=m.Resources(cpu_cores=1, mem_bytes=1e9)), s)
    assert prof is None and not should_emit(AppProfileState.from_bytes(raw2, s), T0)


def test_profile_message_type_and_recommendation() -> None:
    s = ProfileSettings(min_samples=10)
    rng = np.random.default_rng(9)
    st = AppProfileState(s)
    st.update(AppSamples(ts=T0, namespace="shop", app="web", requests=m.Resources(cpu_cores=1.0, mem_bytes=4e9)))
    feed(st, rng.uniform(0.8, 1.0, 500), rng.uniform(0.9e9, 1e9, 500), per=5)
    p = profile_message(st)
    assert p.type == "cpu-bound" and p.app == "web" and p.namespace == "shop" and p.period_s is None
    assert p.pods == 5 and [w.window_s for w in p.windows] == [3600.0, 86400.0, 604800.0]
    assert p.recommended.cpu_cores == pytest.approx(p.windows[-1].cpu_cores.p95 * 1.2)
    assert p.requests == m.Resources(cpu_cores=1.0, mem_bytes=4e9)
    m.Profile.model_validate(p.to_dict())  # a valid contract message
    pc = m.Percentiles(p50=0.1, p90=0.5, p95=0.6, p99=0.9, max=1)
    pm = m.Percentiles(p50=1e9, p90=1e9, p95=1e9, p99=1e9, max=1e9)
    assert classify(5, pc, pm, (1, 1e9), s) == "unknown"  # too few samples
    assert classify(50, pc, pm, None, s) == "bursty"
    flat = m.Percentiles(p50=0.5, p90=0.5, p95=0.5, p99=0.5, max=0.5)
    assert classify(50, flat, pm, None, s) == "unknown"
    assert classify(50, flat, pm, (0.5, 1e9), s) == "balanced"
    assert classify(50, flat, pm, (0.5, 4e9), s) == "cpu-bound"
    assert classify(50, flat, pm, (2.0, 1e9), s) == "memory-bound"
    p2 = profile_message(st, interferes_with=["batch"], complements=["nightly", "etl"])
    assert p2.interferes_with == ["batch"] and p2.complements == ["etl", "nightly"]


@pytest.mark.parametrize("bad", [{"windows_s": []}, {"windows_s": [60, 60]}, {"windows_s": [-1]},
                                 {"buckets_per_window": 0}, {"sketch_k": 63}, {"stage_size": 0},
                                 {"history_slot_s": 0}, {"history_slots": 1}, {"min_period_strength": 2},
                                 {"period_min_cycles": 1},
                                 {"emit_interval_s": -1}, {"margin": 0.5}, {"min_samples": 0},
                                 {"bursty_ratio": 1}, {"dominance": 0.5}, {"pods_window_s": -1}])
def test_profile_settings_validation(bad: dict) -> None:
    with pytest.raises(ConfigError, match=f"streams.profiler.{next(iter(bad))}"):
        build(ProfileSettings, bad, "streams.profiler")


# ---------------------------------------------------------------- internal messages

def test_split_metrics_and_internal_messages_roundtrip() -> None:
    cm = samples()["cluster.metrics"]
    apps, pin = split_metrics(cm)
    assert [(a.app, a.pod, a.cpu_cores) for a in apps] == [("web", ["web-1", "web-2"], [3.5, 3.4])]
    assert pin.node.node == "node-a-0" and pin.node.cpu_pct == pytest.approx(7.1 / 8 * 100)
    for msg, topic in ((apps[0], "kubetide.internal.app-samples"), (pin, "kubetide.internal.planner-input")):
        assert decode(topic, encode(msg)) == msg
    ev = pod_ev("shop", "web-1", "n1")
    req = app_requests(ev)
    assert req.requests.cpu_cores == 0.5 and req.cpu_cores == []
    fwd = PlannerInput(ts=ev.ts, kind="event", event=ev)
    assert decode("kubetide.internal.planner-input", encode(fwd)) == fwd
    with pytest.raises(ValueError):
        PlannerInput(ts=T0, kind="node", event=ev)
    with pytest.raises(ValueError):
        AppSamples(ts=T0, namespace="a", app="b", pod=["x"], cpu_cores=[], mem_bytes=[])


def test_node_batcher_equals_per_scrape_updates() -> None:
    rng = np.random.default_rng(11)
    s = ProfileSettings(windows_s=(600.0, 3600.0), buckets_per_window=6, sketch_k=64)
    batched: dict[str, AppProfileState] = {}
    direct: dict[str, AppProfileState] = {}
    nb = NodeBatcher(s, batched, scrapes=4)
    names = [f"p{i}" for i in range(9)]
    apps = ["web", "db", "web", "", "db", "web", "cache", "web", "db"]
    for k in range(500):  # 10 s apart, crossing buckets and history slots; the pod list changes once
        if k == 250:
            names, apps = names[:6], apps[:6]
        ts = T0 + 10.0 * k + (5.0 if k % 7 == 0 else 0.0)
        cpu, mem = rng.lognormal(0, 1, len(names)), rng.lognormal(20, 0.3, len(names))
        nb.add(ts, ["shop"] * len(names), names, apps, cpu.tolist(), mem.tolist())
        for a in sorted(set(apps) - {""}):
            idx = [i for i, x in enumerate(apps) if x == a]
            st = direct.setdefault(state_key("shop", a), AppProfileState(s, namespace="shop", app=a))
            st.add_samples(ts, cpu[idx], mem[idx])
    nb.flush()
    assert sorted(batched) == sorted(direct) == ["shop/cache", "shop/db", "shop/web"]
    for key, st in direct.items():
        for wi in range(2):
            assert batched[key].percentiles(wi)[0] == st.percentiles(wi)[0]
        np.testing.assert_allclose(batched[key].history(), st.history())
        assert batched[key].last_ts == st.last_ts


def test_dominant_period_is_the_one_explaining_most_variance() -> None:
    """A 5x daily tide with 3-minute spikes every hour: both periods are real, the tide dominates."""
    from streams.core.profile import periodicity

    slot = 300.0
    t = np.arange(int(5 * 86400 / slot)) * slot
    tide = 1.0 + 4.0 * np.exp(-(((t / 3600.0) % 24 - 14) ** 2) / 8.0)
    spikes = np.where((t % 3600) < slot, 2.5, 0.0)
    x = tide + spikes + np.random.default_rng(3).normal(0, 0.05, t.size)
    period, strength, _ = periodicity(x, slot, np.full(24, np.nan))
    assert period == 86400.0 and strength is not None
