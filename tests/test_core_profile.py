"""Per-app profiles: percentiles vs numpy, bounded memory, windows, serialisation, emission (pure)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from kubetide import models as m
from kubetide.codec import decode, encode
from kubetide.config import ConfigError, build
from streams.core.messages import AppSamples, PlannerInput, app_requests, split_metrics
from streams.core.profile import (
    AppProfileState,
    LogHist,
    ProfileSettings,
    classify,
    profile_message,
    should_emit,
    update_and_profile,
)
from tests.samples import samples
from tests.test_core_state import T0, pod_ev

QS = (50, 90, 95, 99)


def within(est: float, data: np.ndarray, q: float, alpha: float) -> bool:
    """est is within relative alpha of the order statistic at rank floor(q (n-1)) (numpy 'lower'/'higher')."""
    lo = np.percentile(data, q, method="lower")
    hi = np.percentile(data, q, method="higher")
    return lo * (1 - alpha) - 1e-12 <= est <= hi * (1 + alpha) + 1e-12


def feed(st: AppProfileState, cpu: np.ndarray, mem: np.ndarray, *, t0: float = T0, per: int = 50,
         step: float = 10.0) -> None:
    for i in range(0, len(cpu), per):
        st.update(AppSamples(ts=t0 + step * (i // per), namespace="shop", app="web",
                             pod=[f"p{j}" for j in range(len(cpu[i:i + per]))],
                             cpu_cores=cpu[i:i + per].tolist(), mem_bytes=mem[i:i + per].tolist()))


@pytest.mark.parametrize("dist", ["lognormal", "uniform", "bimodal", "constant"])
def test_percentiles_match_numpy_within_relative_accuracy(dist: str) -> None:
    rng = np.random.default_rng(42)
    n = 20_000
    cpu = {"lognormal": rng.lognormal(-1, 1, n), "uniform": rng.uniform(0, 4, n),
           "bimodal": np.concatenate([rng.normal(0.2, 0.02, n // 2), rng.normal(3, 0.3, n // 2)]).clip(0),
           "constant": np.full(n, 0.75)}[dist]
    rng.shuffle(cpu)
    mem = rng.lognormal(20, 0.4, n)
    s = ProfileSettings()
    st = AppProfileState(s)
    feed(st, cpu, mem, step=5.0)  # 400 messages, 5 s apart: all inside both windows
    for wi in range(2):
        count, pc, pm = st.percentiles(wi)
        assert count == n
        for q, est in zip(QS, (pc.p50, pc.p90, pc.p95, pc.p99), strict=True):
            assert within(est, cpu, q, s.relative_accuracy), (dist, q, est)
        for q, est in zip(QS, (pm.p50, pm.p90, pm.p95, pm.p99), strict=True):
            assert within(est, mem, q, s.relative_accuracy), (dist, q, est)
        assert pc.max == cpu.max() and pm.max == mem.max()


@settings(max_examples=60, deadline=None)
@given(hst.lists(hst.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=300),
       hst.sampled_from([0.005, 0.01, 0.02]))
def test_loghist_quantiles_property(values: list[float], alpha: float) -> None:
    data = np.asarray(values)
    gamma = (1 + alpha) / (1 - alpha)
    h = LogHist()
    h.add_keys(LogHist.key_of(data, np.log(gamma), 1e-9))
    est = h.quantiles((0.5, 0.9, 0.95, 0.99), gamma)
    for q, e in zip(QS, est, strict=True):
        lo = np.percentile(data, q, method="lower")
        hi = np.percentile(data, q, method="higher")
        assert (lo * (1 - alpha) - 1e-9 if lo > 1e-9 else 0) <= e <= max(hi * (1 + alpha), 1e-9) + 1e-9


def test_merge_equals_single_histogram() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(0, 1, 1000), rng.lognormal(1, 1, 1000)
    lg = np.log(1.01 / 0.99)
    ha, hb, hab = LogHist(), LogHist(), LogHist()
    ha.add_keys(LogHist.key_of(a, lg, 1e-9))
    hb.add_keys(LogHist.key_of(b, lg, 1e-9))
    hab.add_keys(LogHist.key_of(np.concatenate([a, b]), lg, 1e-9))
    ha.merge(hb)
    assert np.array_equal(ha.keys, hab.keys) and np.array_equal(ha.counts, hab.counts)


def test_memory_is_bounded_by_layout_not_sample_count() -> None:
    rng = np.random.default_rng(3)
    s = ProfileSettings(windows_s=(600.0, 3600.0), buckets_per_window=6)
    st = AppProfileState(s)
    sizes = []
    for rounds in range(6):  # 6 x 2 h of data, 100 samples every 10 s
        n = 72_000
        feed(st, rng.lognormal(0, 1, n), rng.lognormal(20, 0.3, n), t0=T0 + rounds * 7200, per=100)
        sizes.append((st.bins(), len(st.to_bytes()), sum(len(w) for w in st.buckets)))
    assert all(b <= len(s.windows_s) * s.buckets_per_window * 2 * s.max_bins for b, _, _ in sizes)
    assert all(nb <= len(s.windows_s) * (s.buckets_per_window + 1) for _, _, nb in sizes)
    # state stops growing once the windows are full: the last rounds are about the same size
    assert max(x[1] for x in sizes[2:]) < 1.5 * min(x[1] for x in sizes[2:])
    count, _, _ = st.percentiles(0)
    assert count <= 100 * 600 / 10  # only the last 10 minutes (by bucket)


def test_collapse_bounds_bins() -> None:
    h = LogHist()
    data = np.logspace(-8, 8, 5000)
    h.add_keys(LogHist.key_of(data, np.log(1.01 / 0.99), 1e-9), max_bins=100)
    assert h.keys.size == 100 and h.n == 5000


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


def test_serialisation_roundtrip_and_layout_change() -> None:
    rng = np.random.default_rng(5)
    s = ProfileSettings()
    st = AppProfileState(s)
    feed(st, rng.lognormal(0, 1, 2000), rng.lognormal(20, 0.3, 2000))
    st.requests = (0.5, 1e9)
    again = AppProfileState.from_bytes(st.to_bytes(), s)
    assert again.to_bytes() == st.to_bytes()
    assert profile_message(again) == profile_message(st)
    other = AppProfileState.from_bytes(st.to_bytes(), ProfileSettings(buckets_per_window=6))
    assert other.n_total() == 0 and other.requests == (0.5, 1e9)  # histograms restart, metadata kept


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
    assert p.pods == 5 and [w.window_s for w in p.windows] == [3600.0, 86400.0]
    assert p.recommended.cpu_cores == pytest.approx(p.windows[1].cpu_cores.p95 * 1.2)
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


@pytest.mark.parametrize("bad", [{"windows_s": []}, {"windows_s": [60, 60]}, {"windows_s": [-1]},
                                 {"buckets_per_window": 0}, {"relative_accuracy": 0}, {"max_bins": 1},
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
