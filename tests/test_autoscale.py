"""Per-workload autoscaling: predictive, reactive, custom-metric and cron triggers (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from kubetide.config import ConfigError, build
from kubetide.models import AutoscaleDecision, WorkloadRef
from streams.core.autoscale import (
    AutoscalePolicy,
    CronTrigger,
    MetricTrigger,
    PredictiveFit,
    PredictiveTrigger,
    WorkloadObservation,
    load_policies,
    plan,
    predictive,
    step,
    zone_shares,
)
from streams.core.hpa import HpaState

WL = WorkloadRef(namespace="shop", kind="Deployment", name="web")
IV = 60.0


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def _diurnal_history(days=3, now=_ts("2024-05-01T12:00:00"), noise=0.05, seed=0):
    n = int(days * 86400 / IV)
    t = now - (n - 1 - np.arange(n)) * IV
    x = 4 + 3 * np.sin(2 * np.pi * (t - 6 * 3600) / 86400)  # peak at 12:00 UTC
    return x + np.random.default_rng(seed).normal(0, noise, n), now


def _obs(**kw):
    base = dict(workload=WL, now=_ts("2024-05-01T12:00:00"), current_replicas=10, cpu_request_cores=1.0,
                interval_s=IV)
    base.update(kw)
    return WorkloadObservation(**base)


def test_cron_across_dst_change_berlin():
    c = CronTrigger(start="0 6 * * *", end="0 20 * * *", timezone="Europe/Berlin", replicas=8)
    # 06:00 CET = 05:00 UTC on Saturday 30 March 2024, 06:00 CEST = 04:00 UTC on Sunday 31 March
    assert not c.active(_ts("2024-03-30T04:30:00"))
    assert c.active(_ts("2024-03-30T05:00:00"))
    assert c.active(_ts("2024-03-31T04:00:00"))
    assert not c.active(_ts("2024-03-31T03:59:00"))
    assert not c.active(_ts("2024-03-31T18:00:00"))  # 20:00 CEST: ended
    assert c.active(_ts("2024-03-31T17:59:00"))
    # and back in October: 06:00 CET = 05:00 UTC
    assert not c.active(_ts("2024-10-27T04:30:00"))
    assert c.active(_ts("2024-10-27T05:00:00"))


def test_cron_trigger_sets_replicas_and_wins():
    pol = AutoscalePolicy(min_replicas=1, max_replicas=30, reactive=False,
                          predictive=PredictiveTrigger(enabled=False),
                          cron=(CronTrigger(start="0 8 * * *", end="0 18 * * *", replicas=12, name="office"),))
    d = plan(pol, _obs(current_replicas=3, now=_ts("2024-05-01T09:00:00")))
    assert d is not None and d.trigger == "office" and d.desired_replicas == 7  # 100 % or 4 pods per 15 s
    assert d.evidence["replicas.office"] == 12
    assert plan(pol, _obs(current_replicas=3, now=_ts("2024-05-01T19:00:00"))) is None  # no trigger: hold


def test_custom_metric_queue_length():
    pol = AutoscalePolicy(max_replicas=50, reactive=False, predictive=PredictiveTrigger(enabled=False),
                          metrics=(MetricTrigger(metric="queue_length", target_per_replica=30),))
    now = _ts("2024-05-01T12:00:00")
    d = plan(pol, _obs(current_replicas=4, now=now, metrics={"queue_length": (now - 5, 240.0)}))
    assert d.trigger == "metric:queue_length" and d.desired_replicas == 8  # ceil(240 / 30)
    # a stale sample is missing, not zero: no scale-down
    _st, d, ev = step(HpaState(), pol, _obs(current_replicas=8, now=now, metrics={"queue_length": (now - 900, 0.0)}))
    assert d is None and ev["hpa_reason"] == "InvalidMetrics"


def test_predictive_provisions_for_the_coming_peak():
    hist, now = _diurnal_history()
    # at 11:00 UTC the peak (7 cores at 12:00) is inside the 30-minute window only partially;
    # ask at 11:40: the forecast max over the next 30 min is close to 7 cores
    now2 = now - 20 * 60
    hist2 = hist[:-20]
    pol = AutoscalePolicy(min_replicas=1, max_replicas=50, target_cpu_utilization=50,
                          predictive=PredictiveTrigger(prediction_window_s=1800, margin=0.1))
    _st, _d, ev = step(HpaState(), pol, _obs(current_replicas=14, now=now2, cpu_history=hist2, cpu_request_cores=1.0))
    assert ev["predictive_status"] == "ok"
    assert ev["period_s"] == 86400
    assert 6.5 <= ev["forecast_peak_cores"] / 1.1 <= 7.5
    assert ev["replicas.predictive"] == int(np.ceil(ev["forecast_peak_cores"] / 0.5))
    assert ev["forecast_error"] < 0.1
    assert ev["replicas.predictive"] >= ev["replicas.reactive"]


def test_predictive_falls_back_when_not_periodic():
    rng = np.random.default_rng(3)
    hist = 5 + rng.normal(0, 0.5, 3 * 1440)
    pol = AutoscalePolicy(max_replicas=50, target_cpu_utilization=50)
    _st, d, ev = step(HpaState(), pol, _obs(current_replicas=4, cpu_history=hist))
    assert ev["predictive_status"].startswith("fallback: CPU history is not periodic")
    assert "replicas.predictive" not in ev and d is not None and d.trigger == "reactive"
    assert "not periodic" in d.reason


def test_predictive_falls_back_on_high_error():
    hist, _now = _diurnal_history(noise=2.0, seed=5)
    pol = AutoscalePolicy(max_replicas=50, predictive=PredictiveTrigger(max_error=0.01))
    _, _, ev = step(HpaState(), pol, _obs(cpu_history=hist))
    assert ev["predictive_status"].startswith("fallback: forecast error")
    assert ev["forecast_error"] > 0.01


def test_combination_max_wins_and_decision_is_deterministic():
    hist, now = _diurnal_history()
    pol = AutoscalePolicy(min_replicas=1, max_replicas=100, target_cpu_utilization=70,
                          metrics=(MetricTrigger(metric="qps", target_per_replica=100),),
                          cron=(CronTrigger(start="0 0 * * *", end="59 23 * * *", replicas=3, name="floor"),))
    obs = _obs(current_replicas=10, now=now, cpu_history=hist, metrics={"qps": (now, 2500.0)},
               zone_usage={"eu-1a": 3.0, "eu-1b": 1.0, "eu-1c": 0.0})
    _st1, d1, ev = step(HpaState(), pol, obs)
    _st2, d2, _ = step(HpaState(), pol, obs)
    assert isinstance(d1, AutoscaleDecision) and d1 == d2 and d1.id == d2.id
    assert d1.trigger == "metric:qps" and ev["replicas.metric:qps"] == 25
    assert ev["replicas.floor"] == 3
    assert d1.desired_replicas == 20  # scale-up limited to 100 % per 15 s
    assert d1.zones == {"eu-1a": 0.75, "eu-1b": 0.25, "eu-1c": 0.0}
    assert d1.expires_at == now + pol.ttl_s and d1.made_at == now
    AutoscaleDecision.model_validate(d1.to_dict())  # round-trips through the contract


def test_scale_down_is_stabilised():
    pol = AutoscalePolicy(max_replicas=50, predictive=PredictiveTrigger(enabled=False),
                          metrics=(MetricTrigger(metric="qps", target_per_replica=100),), reactive=False)
    now = _ts("2024-05-01T12:00:00")
    st, d, _ = step(HpaState(), pol, _obs(current_replicas=20, now=now, metrics={"qps": (now, 2000.0)}))
    assert d is None
    st, d, ev = step(st, pol, _obs(current_replicas=20, now=now + 60, metrics={"qps": (now + 60, 500.0)}))
    assert d is None and ev["hpa_reason"] == "ScaleDownStabilized"
    st, d, _ = step(st, pol, _obs(current_replicas=20, now=now + 361, metrics={"qps": (now + 361, 500.0)}))
    assert d is not None and d.desired_replicas == 5


def test_trusted_forecast_shortens_scale_down_stabilisation():
    hist, now = _diurnal_history()
    seeded = HpaState(recommendations=((now - 120, 30),), started=True)  # a spike's count, 2 min ago

    def run(**pred):
        pol = AutoscalePolicy(max_replicas=50, predictive=PredictiveTrigger(prediction_window_s=600, **pred))
        return step(seeded, pol, _obs(current_replicas=30, now=now, cpu_history=hist,
                                      pod_cpu_cores=np.full(30, 0.1), pod_ready=np.ones(30, dtype=bool)))

    _, d, ev = run()  # default: 60 s while the forecast is trusted
    assert ev["predictive_status"] == "ok" and ev["scale_down_window_s"] == 60
    assert d is not None and d.desired_replicas == ev["replicas.predictive"] < 30
    _, d, ev = run(scale_down_stabilization_s=None)  # the behaviour's 300 s
    assert d is None and ev["hpa_reason"] == "ScaleDownStabilized" and "scale_down_window_s" not in ev
    _, d, ev = run(max_error=0.001)  # forecast not trusted: the reactive 5 waits for the behaviour's window
    assert ev["predictive_status"].startswith("fallback") and "scale_down_window_s" not in ev
    assert ev["replicas.reactive"] == 5 and d is None and ev["hpa_reason"] == "ScaleDownStabilized"
    with pytest.raises(ValueError, match="scale_down_stabilization_s"):
        PredictiveTrigger(scale_down_stabilization_s=-1).validate()


def _pred(values, current, **kw):
    """The predictive trigger on a given forecast (60 s buckets, 5-bucket window, request 1 core at 35 %; short
    peaks at the target like any other unless ``short_peak_utilization`` is given)."""
    kw.setdefault("short_peak_utilization", None)
    pol = AutoscalePolicy(max_replicas=100, target_cpu_utilization=35, tolerance=0.1,
                          predictive=PredictiveTrigger(prediction_window_s=300, margin=0.0, **kw))
    fit = PredictiveFit("ok", values=np.asarray(values, dtype=float), interval_s=IV)
    return predictive(pol, _obs(current_replicas=current, prediction=fit)).replicas


def test_predictive_scale_up_takes_the_whole_ramp_at_once():
    ramp = [3.5, 3.5, 3.5, 3.5, 5.25, 14.0, 14.0, 3.5]  # the spike's leading edge is in the window, its top just after
    assert _pred(ramp, 10, scale_up_lookahead_s=0) == 15  # 5.25 / 0.35: one step now, the next a minute later
    assert _pred(ramp, 10, scale_up_lookahead_s=120) == 40  # 14 / 0.35 at once
    assert _pred([3.5] * 8, 10, scale_up_lookahead_s=120) == 10  # nothing to provision for: no change


def test_predictive_scale_down_coalesces_and_never_undoes_itself():
    after = [5.25, 4.2] + [3.5] * 10  # the tail of a spike, then the level
    assert _pred(after, 30, scale_down_lookahead_s=0) == 15  # 5.25 / 0.35, then 10 once the tail has passed
    # the forecast still falls by more than the tolerance within 120 s: hold, then take the ramp at once
    assert _pred(after, 30, scale_down_lookahead_s=120) == 30
    assert _pred(after[2:], 30, scale_down_lookahead_s=120) == 10
    assert _pred([3.6, 3.5] + [3.4] * 10, 30, scale_down_lookahead_s=120) == 10  # a slow decline: no hold
    before = [3.5] * 6 + [14.0] * 4  # the next spike starts just after the window
    assert _pred(before, 40, scale_down_lookahead_s=0) == 10
    assert _pred(before, 40, scale_down_lookahead_s=120) == 40  # it would be scaled up again: hold
    with pytest.raises(ValueError, match="scale_up_lookahead_s"):
        PredictiveTrigger(scale_up_lookahead_s=-1).validate()


def test_zone_shares():
    assert zone_shares({}) == {}
    assert zone_shares({"a": 1, "b": 1}) == {"a": 0.5, "b": 0.5}
    assert zone_shares({"a": float("nan"), "b": 2}) == {"b": 1.0}


def test_policy_from_yaml_and_errors():
    pols = load_policies({"shop/web": {
        "min_replicas": 2, "max_replicas": 40, "target_cpu_utilization": 60,
        "predictive": {"prediction_window_s": 900, "margin": 0.2},
        "metrics": [{"metric": "queue_length", "target_per_replica": 30}],
        "cron": [{"start": "0 8 * * 1-5", "end": "0 20 * * 1-5", "timezone": "Europe/Berlin", "replicas": 10}],
        "behavior": {"scale_down": {"stabilization_window_seconds": 600}},
    }})
    p = pols["shop/web"]
    assert p.predictive.prediction_window_s == 900 and p.metrics[0].target_per_replica == 30
    assert p.behavior.scale_down.stabilization_window_seconds == 600
    assert p.behavior.scale_up.policies[1].value == 4  # defaults kept
    assert build(AutoscalePolicy, {}, "x") == AutoscalePolicy()
    with pytest.raises(ConfigError, match=r"x.cron\[0\].start"):
        build(AutoscalePolicy, {"cron": [{"start": "every day", "end": "0 1 * * *"}]}, "x")
    with pytest.raises(ConfigError, match=r"x.cron\[0\].timezone"):
        build(AutoscalePolicy, {"cron": [{"start": "0 1 * * *", "end": "0 2 * * *", "timezone": "Mars/Olympus"}]}, "x")
    with pytest.raises(ConfigError, match=r"x.metrics\[0\].target_per_replica"):
        build(AutoscalePolicy, {"metrics": [{"metric": "qps", "target_per_replica": 0}]}, "x")
    with pytest.raises(ConfigError, match=r"x\.target_cpu_utilization"):
        build(AutoscalePolicy, {"target_cpu_utilization": 0}, "x")
    with pytest.raises(ConfigError, match=r"x\.predictive\.margin"):
        build(AutoscalePolicy, {"predictive": {"margin": -1}}, "x")


# ---- short forecast peaks: provisioned at short_peak_utilization, not at the target ----------------------------

def _short_policy(**kw):
    return AutoscalePolicy(max_replicas=100, target_cpu_utilization=70, tolerance=0.1,
                           predictive=PredictiveTrigger(prediction_window_s=1800, margin=0.0, short_peak_s=600,
                                                        short_peak_utilization=100, **kw))


def test_provision_cores_short_spike_counts_at_the_short_peak_utilisation():
    from streams.core.autoscale import provision_cores
    base, spike = 7.0, 7.0 * 1.8
    vals = np.array([base] * 10 + [spike] * 3 + [base] * 20)  # a 3-minute spike 10 minutes ahead
    plain = provision_cores(vals, IV, 1800, margin=0.0)
    assert plain == spike
    got = provision_cores(vals, IV, 1800, margin=0.0, short_peak_s=600, factor=0.7)
    assert got == pytest.approx(max(base, spike * 0.7))  # 8.82: the spike at 100 %, not at the 70 % target
    # the same rise held for 10 minutes or more is a level, provisioned at the target
    held = np.array([base] * 10 + [spike] * 10 + [base] * 20)
    assert provision_cores(held, IV, 1800, margin=0.0, short_peak_s=600, factor=0.7) == spike
    # a rise within the tolerance of the level held (the rounded top of a tide) stays the plain maximum
    top = np.array([base] * 10 + [base * 1.05] * 3 + [base] * 20)
    assert provision_cores(top, IV, 1800, margin=0.0, short_peak_s=600, factor=0.7) == base * 1.05
    # a spike at the very end of the forecast may last: the truncated window counts it as held
    end = np.array([base] * 28 + [spike] * 2)
    assert provision_cores(end, IV, 1800, margin=0.0, short_peak_s=600, factor=0.7) == spike
    # the margin applies to both the level and the peak
    got_m = provision_cores(vals, IV, 1800, margin=0.1, short_peak_s=600, factor=0.7)
    assert got_m == pytest.approx(1.1 * max(base, spike * 0.7))


def test_predictive_does_not_start_pods_for_a_short_spike_the_pods_can_serve():
    # 10 pods of 1 core at 70 % serve 7 cores; a 3-minute spike to 9.1 cores (1.3x) is 91 % of the request
    vals = np.array([7.0] * 10 + [9.1] * 3 + [7.0] * 20)
    fit = PredictiveFit("ok", values=vals, interval_s=IV, error=0.05)
    res = predictive(_short_policy(), _obs(current_replicas=10, prediction=fit))
    assert res.replicas == 10
    # the published peak stays the forecast's; what the count was sized to is given apart
    assert res.peak_cores == pytest.approx(9.1) and res.provision_cores == pytest.approx(7.0)
    old = AutoscalePolicy(max_replicas=100, target_cpu_utilization=70, tolerance=0.1,
                          predictive=PredictiveTrigger(prediction_window_s=1800, margin=0.0,
                                                       short_peak_utilization=None))
    assert predictive(old, _obs(current_replicas=10, prediction=fit)).replicas == 13  # ceil(9.1 / 0.7)
    # a spike beyond what the pods serve at their request still gets pods, sized at 100 %
    big = np.array([7.0] * 10 + [14.0] * 3 + [7.0] * 20)
    fit_b = PredictiveFit("ok", values=big, interval_s=IV, error=0.05)
    assert predictive(_short_policy(), _obs(current_replicas=10, prediction=fit_b)).replicas == 14  # 14 / 1.0


def test_reactive_waits_out_a_forecast_short_peak_but_not_a_surprise():
    pods = np.full(10, 0.91)  # the spike is under way: 9.1 cores on 10 pods of 1 core, 91 % > 70 % × 1.1
    during = np.array([9.1] * 2 + [7.0] * 20)  # the forecast: 2 more minutes of spike, then the level
    fit = PredictiveFit("ok", values=during, interval_s=IV, error=0.05, recent=np.array([7.0] * 5 + [9.1]))
    _st, d, ev = step(HpaState(), _short_policy(), _obs(current_replicas=10, prediction=fit, pod_cpu_cores=pods))
    assert ev["short_peak"] is True and ev["replicas.reactive"] == 10 and d is None
    # at the spike's last minute the forecast ahead is already back at the level: the passed values say it was
    # expected
    tail = PredictiveFit("ok", values=np.array([7.0] * 20), interval_s=IV, error=0.05,
                         recent=np.array([7.0] * 5 + [9.1] * 3))
    _st, d, ev = step(HpaState(), _short_policy(), _obs(current_replicas=10, prediction=tail, pod_cpu_cores=pods))
    assert ev["short_peak"] is True and d is None
    # a load the forecast did not expect: the reactive trigger scales at the target, as Kubernetes' HPA
    flat = PredictiveFit("ok", values=np.array([7.0] * 20), interval_s=IV, error=0.05, recent=np.array([7.0] * 8))
    _st, d, ev = step(HpaState(), _short_policy(), _obs(current_replicas=10, prediction=flat, pod_cpu_cores=pods))
    assert "short_peak" not in ev and d is not None and d.desired_replicas == 13 and d.trigger == "reactive"
    # a rise the forecast expects to last is no short peak either
    lasting = PredictiveFit("ok", values=np.array([9.1] * 20), interval_s=IV, error=0.05,
                            recent=np.array([7.0] * 5 + [9.1]))
    _st, d, ev = step(HpaState(), _short_policy(), _obs(current_replicas=10, prediction=lasting, pod_cpu_cores=pods))
    assert "short_peak" not in ev and d is not None and d.desired_replicas == 13
    # an untrusted forecast never relaxes the reactive trigger
    bad = PredictiveFit("fallback: forecast error 40.0% above 25%", interval_s=IV, error=0.4)
    _st, d, ev = step(HpaState(), _short_policy(), _obs(current_replicas=10, prediction=bad, pod_cpu_cores=pods))
    assert d is not None and d.desired_replicas == 13


def test_short_peak_settings_are_validated():
    with pytest.raises(ValueError, match="short_peak_utilization"):
        PredictiveTrigger(short_peak_utilization=0).validate()
    with pytest.raises(ValueError, match="short_peak_s"):
        PredictiveTrigger(short_peak_s=-1).validate()
    assert PredictiveTrigger(short_peak_utilization=None).short_peak_factor(70) is None
    assert PredictiveTrigger(short_peak_utilization=60).short_peak_factor(70) is None  # not above the target
    assert PredictiveTrigger().short_peak_factor(70) == pytest.approx(0.7)


def test_shifted_fit_keeps_the_passed_values_as_recent():
    fit = PredictiveFit("ok", values=np.arange(5.0), interval_s=IV)
    s = fit.shifted(2).shifted(1)
    assert list(s.values) == [3.0, 4.0] and list(s.recent) == [0.0, 1.0, 2.0]
    assert fit.shifted(0) is fit
