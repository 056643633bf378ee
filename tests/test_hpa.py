"""Kubernetes HPA v2 replica calculation and behaviour as a pure state machine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetide.config import ConfigError, build
from streams.core.hpa import (
    HpaBehavior,
    HpaPolicy,
    HpaScalingRules,
    HpaSettings,
    HpaState,
    reactive_cpu_step,
    replicas_for_average_value,
    replicas_for_ratio,
    replicas_for_utilization,
    step,
)

NAN = float("nan")


def test_tolerance_and_ratio():
    assert replicas_for_ratio(10, 0.65, 0.6) == 10  # ratio 1.083: inside the 0.1 tolerance
    assert replicas_for_ratio(10, 0.54, 0.6) == 10  # 0.9: still inside
    assert replicas_for_ratio(10, 0.72, 0.6) == 12  # 1.2 → ceil(12)
    assert replicas_for_ratio(10, 0.3, 0.6) == 5
    assert replicas_for_ratio(10, None, 0.6) is None


def test_utilization_like_kubernetes():
    req = [1.0, 1.0, 1.0]
    assert replicas_for_utilization(3, [0.9, 0.9, 0.9], req, 60) == 5  # 90 % / 60 % × 3 = 4.5 → 5
    assert replicas_for_utilization(3, [0.63, 0.63, 0.63], req, 60) == 3  # 105 %: tolerance
    # a pod without a sample counts as 100 % of its request when scaling down (so: less scale-down)
    assert replicas_for_utilization(3, [0.1, NAN, 0.1], req, 60) == 2
    assert replicas_for_utilization(2, [0.1, 0.1], [1.0, 1.0], 60) == 1
    # … and as 0 when scaling up; here that brings the ratio back into tolerance: no change
    assert replicas_for_utilization(3, [0.9, NAN, 0.9], req, 60) == 3
    # unready pods count as 0 when scaling up
    assert replicas_for_utilization(4, [1.0, 1.0, 1.0, 0.0], [1.0] * 4, 50, ready=[True, True, True, False]) == 6
    assert replicas_for_utilization(3, [NAN, NAN, NAN], req, 60) is None


def test_average_value_metric():
    assert replicas_for_average_value(2, 300, 30) == 10  # queue 300, 30 per replica
    assert replicas_for_average_value(10, 310, 30) == 10  # within tolerance of 10 × 30
    assert replicas_for_average_value(0, 31, 30) == 2
    assert replicas_for_average_value(3, None, 30) is None


S = HpaSettings(min_replicas=2, max_replicas=20)


def test_min_max_and_disabled():
    _, r = step(HpaState(), 0, 25, [30], S)
    assert r.desired == 20 and r.reason == "TooManyReplicas"
    _, r = step(HpaState(), 0, 1, [1], S)
    assert r.desired == 2 and r.reason == "TooFewReplicas"
    _, r = step(HpaState(), 0, 0, [5], S)
    assert r.desired == 0 and r.reason == "ScalingDisabled"
    _, r = step(HpaState(), 0, 10, [1], HpaSettings(2, 20, behavior=HpaBehavior(scale_down=HpaScalingRules(0))))
    assert r.desired == 2 and r.reason == "TooFewReplicas"


def test_scale_up_default_policies_rate_limit():
    st_ = HpaState()
    st_, r = step(st_, 0, 2, [20], S)
    assert r.desired == 6 and r.reason == "ScaleUpLimit"  # max(100 % → 4, 4 pods → 6)
    st_, r = step(st_, 10, 6, [20], S)
    assert r.desired == 6  # still inside the 15 s period that started at 2 replicas
    st_, r = step(st_, 16, 6, [20], S)
    assert r.desired == 12  # new period: 100 % of 6
    st_, r = step(st_, 32, 12, [40], S)
    assert r.desired == 20 and r.reason == "TooManyReplicas"


def test_select_policy_min_and_disabled():
    up = HpaScalingRules(0, "Min", (HpaPolicy("Percent", 100, 15), HpaPolicy("Pods", 4, 15)))
    s = HpaSettings(1, 50, behavior=HpaBehavior(scale_up=up))
    _, r = step(HpaState(), 0, 10, [40], s)
    assert r.desired == 14  # min(20, 14)
    s = HpaSettings(1, 50, behavior=HpaBehavior(scale_up=HpaScalingRules(0, "Disabled", ())))
    _, r = step(HpaState(), 0, 10, [40], s)
    assert r.desired == 10
    down = HpaScalingRules(0, "Disabled", ())
    _, r = step(HpaState(), 0, 10, [1], HpaSettings(1, 50, behavior=HpaBehavior(scale_down=down)))
    assert r.desired == 10


def test_scale_down_pods_and_percent_policies():
    down = HpaScalingRules(0, "Max", (HpaPolicy("Pods", 2, 60), HpaPolicy("Percent", 10, 60)))
    s = HpaSettings(1, 100, behavior=HpaBehavior(scale_down=down))
    st_, r = step(HpaState(), 0, 40, [10], s)
    assert r.desired == 36 and r.reason == "ScaleDownLimit"  # Max change: 10 % of 40 = 4 > 2 pods
    st_, r = step(st_, 30, 36, [10], s)
    assert r.desired == 36  # the 60 s period already removed 4
    st_, r = step(st_, 61, 36, [10], s)
    assert r.desired == 32  # Max: the larger change of 2 pods (34) and floor(36 × 0.9) = 32
    s_min = HpaSettings(1, 100, behavior=HpaBehavior(scale_down=HpaScalingRules(0, "Min", down.policies)))
    _, r = step(HpaState(), 0, 40, [10], s_min)
    assert r.desired == 38  # Min: the smaller change (2 pods)


def test_stabilization_window_keeps_max_recent_recommendation():
    st_ = HpaState()
    st_, r = step(st_, 0, 10, [10], S)
    st_, r = step(st_, 60, 10, [8], S)
    assert r.desired == 10 and r.reason == "ScaleDownStabilized"
    st_, r = step(st_, 120, 10, [6], S)
    assert r.desired == 10
    st_, r = step(st_, 301, 10, [4], S)  # the 10 from t=0 fell out of the window; 8 (t=60) is the max
    assert r.desired == 8
    st_, r = step(st_, 361, 8, [4], S)
    assert r.desired == 6
    st_, r = step(st_, 700, 6, [4], S)
    assert r.desired == 4


def test_scale_down_window_override_is_per_sync_and_keeps_history():
    st_, r = step(HpaState(), 0, 10, [10], S)
    st_, r = step(st_, 60, 10, [4], S, scale_down_window_s=30)
    assert r.desired == 4  # the 10 of t=0 is older than the 30 s override
    # without the override the configured 300 s window applies again: the recommendations it covers were kept
    st_, r = step(HpaState(), 0, 10, [10], S)
    st_, r = step(st_, 60, 10, [6], S, scale_down_window_s=30)
    assert r.desired == 6
    st_, r = step(st_, 90, 6, [4], S)
    assert r.desired == 6 and r.reason == "ScaleDownStabilized"  # the 6 of t=60 (and the 10) are in 300 s


def test_up_stabilization_window():
    s = HpaSettings(1, 50, behavior=HpaBehavior(scale_up=HpaScalingRules(60, "Max", (HpaPolicy("Pods", 100, 15),))))
    st_, r = step(HpaState(), 0, 5, [5], s)
    st_, r = step(st_, 10, 5, [9], s)
    assert r.desired == 5 and r.reason == "ScaleUpStabilized"  # the min of the last 60 s is 5
    st_, r = step(st_, 70, 5, [9], s)
    assert r.desired == 9


def test_never_scale_down_on_missing_metrics():
    _, r = step(HpaState(), 0, 8, [None], S)
    assert r.desired == 8 and r.reason == "InvalidMetrics"
    _, r = step(HpaState(), 0, 8, [3, None], S)
    assert r.desired == 8 and r.reason == "InvalidMetrics"
    _, r = step(HpaState(), 0, 8, [12, None], S)  # a valid metric asking for more still scales up
    assert r.desired == 12
    _, r = step(HpaState(), 0, 8, [], S)
    assert r.desired == 8


def test_reactive_cpu_step_baseline():
    _, r = reactive_cpu_step(HpaState(), 0, 4, np.full(4, 0.9), np.full(4, 1.0), 60, S)
    assert r.desired == 6


def test_settings_from_yaml_mapping():
    s = build(HpaSettings, {"min_replicas": 1, "max_replicas": 5, "behavior": {
        "scale_down": {"stabilization_window_seconds": 60, "select_policy": "Min",
                       "policies": [{"type": "Pods", "value": 1, "period_seconds": 30}]}}}, "hpa")
    assert s.behavior.scale_down.policies == (HpaPolicy("Pods", 1, 30),)
    assert s.behavior.scale_up.stabilization_window_seconds == 0
    with pytest.raises(ConfigError, match=r"hpa\.max_replicas"):
        build(HpaSettings, {"min_replicas": 5, "max_replicas": 2}, "hpa")
    with pytest.raises(ConfigError, match="select_policy"):
        build(HpaSettings, {"behavior": {"scale_up": {"select_policy": "Fastest"}}}, "hpa")
    with pytest.raises(ConfigError, match=r"behavior.scale_down.policies\[0\].value"):
        build(HpaSettings, {"behavior": {"scale_down": {"policies": [{"type": "Pods", "value": 0}]}}}, "hpa")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 60), st.one_of(st.none(), st.integers(0, 200))), min_size=1, max_size=40),
       st.integers(1, 30))
def test_step_invariants(seq, start):
    s = HpaSettings(min_replicas=1, max_replicas=50)
    state, cur, now = HpaState(), start, 0.0
    for dt, proposal in seq:
        now += dt
        state, r = step(state, now, cur, [proposal], s)
        assert 1 <= r.desired <= 50 or (cur > 50 and r.desired == 50)
        if proposal is None:
            assert r.desired == cur  # hold on a gap
        if r.desired < cur and proposal is not None:
            assert r.desired >= min(proposal, cur) or r.desired == s.min_replicas
        cur = r.desired
