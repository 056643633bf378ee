"""Kubernetes HorizontalPodAutoscaler (autoscaling/v2) replica calculation as a pure state machine.

Same meaning as ``pkg/controller/podautoscaler`` (horizontal.go, replica_calculator.go), but on
event time: the controller's in-memory history (recommendations, scale events) is the immutable
:class:`HpaState` that :func:`step` takes and returns.

Per-metric proposals (``None`` = the metric could not be computed):

- :func:`replicas_for_utilization` — a Resource metric with ``averageUtilization`` (CPU): ratio of
  the pods' summed usage to summed requests (integer percent, as Kubernetes computes it) over the
  target; inside ``tolerance`` (0.1) → current replicas; else ``ceil(ratio × ready pods)``. Pods
  without a sample (NaN) count as using ``max(100 %, target)`` of their request when scaling down
  and 0 when scaling up; unready pods count as 0 when scaling up; the proposal never flips direction;
- :func:`replicas_for_average_value` — an External/Object metric with ``averageValue``
  (queue length, qps per replica): ``ceil(total / target_per_replica)`` outside the tolerance;
- :func:`replicas_for_ratio` — the plain ``ceil(current × metric / target)``.

:func:`step` then does what ``reconcileAutoscaler`` does for one sync at event time ``now``:

1. current = 0 while min > 0 → autoscaling disabled, hold at 0; current > max → max;
   current < min → min (no behaviour applies to these corrections);
2. the highest valid proposal wins; if every metric is invalid, or some are invalid and the valid
   ones would scale down, **hold** (never scale down on a gap) — nothing is recorded;
3. stabilisation: the recommendation is kept within [min of the proposals recorded in the last
   ``scale_up.stabilization_window_seconds``, max of those in the last
   ``scale_down.stabilization_window_seconds``] (defaults 0 s and 300 s: scale-down follows the
   highest recommendation of the last 5 min); the history starts with the current replica count;
4. rate limits: every policy gives a limit from the replica count at the start of its
   ``period_seconds`` (current − changes made within the period): Pods ± value, Percent
   × (1 ± value/100) (rounded up for scale-up, down for scale-down); ``select_policy`` Max takes
   the policy allowing the largest change, Min the smallest, Disabled forbids that direction;
5. clamp to [min_replicas, max_replicas]; a change is recorded as a scale event.

Defaults (Kubernetes' when ``behavior`` is set): scale-up — no stabilisation, 100 % or 4 pods per
15 s, Max; scale-down — 300 s stabilisation, 100 % per 15 s, Max. (Without any ``behavior``,
Kubernetes uses an older path: 5 min downscale stabilisation and a per-sync up limit of
``max(2 × current, 4)``; with the default policies and the default 15 s sync period the two agree.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]


@dataclass(frozen=True)
class HpaPolicy:
    type: PolicyType = "Percent"
    value: int = 100
    period_seconds: int = 15

    def validate(self) -> None:
        if self.value <= 0:
            raise ValueError("value: must be > 0")
        if not 0 < self.period_seconds <= 1800:
            raise ValueError("period_seconds: must be in (0, 1800]")


@dataclass(frozen=True)
class HpaScalingRules:
    stabilization_window_seconds: int = 0
    select_policy: SelectPolicy = "Max"
    policies: tuple[HpaPolicy, ...] = (HpaPolicy("Percent", 100, 15),)

    def validate(self) -> None:
        if not 0 <= self.stabilization_window_seconds <= 3600:
            raise ValueError("stabilization_window_seconds: must be in [0, 3600]")
        if not self.policies and self.select_policy != "Disabled":
            raise ValueError("policies: at least one policy unless select_policy is Disabled")
        for i, p in enumerate(self.policies):
            try:
                p.validate()
            except ValueError as exc:
                raise ValueError(f"policies[{i}].{exc}") from None


def default_scale_up() -> HpaScalingRules:
    return HpaScalingRules(0, "Max", (HpaPolicy("Percent", 100, 15), HpaPolicy("Pods", 4, 15)))


def default_scale_down() -> HpaScalingRules:
    return HpaScalingRules(300, "Max", (HpaPolicy("Percent", 100, 15),))


@dataclass(frozen=True)
class HpaBehavior:
    scale_up: HpaScalingRules = field(default_factory=default_scale_up)
    scale_down: HpaScalingRules = field(default_factory=default_scale_down)

    def validate(self) -> None:
        for name in ("scale_up", "scale_down"):
            try:
                getattr(self, name).validate()
            except ValueError as exc:
                raise ValueError(f"{name}.{exc}") from None


@dataclass(frozen=True)
class HpaSettings:
    """An HPA's spec as far as replica calculation goes (YAML: ``min_replicas``, ``behavior``…)."""

    min_replicas: int = 1
    max_replicas: int = 10
    tolerance: float = 0.1
    behavior: HpaBehavior = field(default_factory=HpaBehavior)

    def validate(self) -> None:
        if self.min_replicas < 0:
            raise ValueError("min_replicas: must be >= 0")
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError("max_replicas: must be >= 1 and >= min_replicas")
        if not 0 <= self.tolerance < 1:
            raise ValueError("tolerance: must be in [0, 1)")
        try:
            self.behavior.validate()
        except ValueError as exc:
            raise ValueError(f"behavior.{exc}") from None


@dataclass(frozen=True)
class HpaState:
    """The controller's memory for one HPA, in event time (seconds)."""

    recommendations: tuple[tuple[float, int], ...] = ()  # (ts, unstabilised recommendation)
    scale_up_events: tuple[tuple[float, int], ...] = ()  # (ts, replicas added)
    scale_down_events: tuple[tuple[float, int], ...] = ()  # (ts, replicas removed)
    started: bool = False  # the recommendation history was seeded with the replica count at first sight


@dataclass(frozen=True)
class HpaStep:
    desired: int
    reason: str  # Kubernetes-style: DesiredWithinRange, ScaleUpLimit, ScaleDownStabilized, InvalidMetrics…
    message: str
    proposal: int | None = None  # the winning metric proposal (before stabilisation and limits)
    stabilized: int | None = None


# ---------------------------------------------------------------- per-metric proposals

def _milli(cores: np.ndarray) -> np.ndarray:
    return np.ceil(np.round(cores * 1000.0, 6)).astype(np.int64)


def replicas_for_utilization(current_replicas: int, usage_cores: Sequence[float] | np.ndarray,
                             request_cores: Sequence[float] | np.ndarray, target_utilization: float, *,
                             ready: Sequence[bool] | np.ndarray | None = None, tolerance: float = 0.1) -> int | None:
    """Kubernetes' ``GetResourceReplicas``: one entry per pod; ``NaN`` usage = no sample (missing).

    ``ready=False`` marks pods that are not ready (or still in their CPU initialisation period).
    Returns ``None`` when no pod has a sample or requests are missing (the metric is invalid).
    """
    usage = np.asarray(usage_cores, dtype=float)
    req = np.asarray(request_cores, dtype=float)
    if usage.shape != req.shape:
        raise ValueError("usage_cores and request_cores must have one entry per pod")
    rdy = np.ones(len(usage), dtype=bool) if ready is None else np.asarray(ready, dtype=bool)
    if len(usage) == 0 or np.any(~np.isfinite(req)) or np.any(req <= 0):
        return None
    missing = np.isnan(usage)
    unready = ~missing & ~rdy
    counted = ~missing & rdy
    ready_count = int(counted.sum())
    if ready_count == 0 and not missing.any():
        return None
    if ready_count == 0:
        return None  # no metrics for any pod: Kubernetes reports an error
    req_m = _milli(req)
    # (np.nan_to_num would give the same: NaN is masked anyway, and ±inf stays ±inf after the scaling in _milli)
    use_m = np.where(missing, 0, _milli(np.where(missing, 0.0, usage)))

    def ratio(mask: np.ndarray, extra: np.ndarray | None = None) -> float:
        total = int(use_m[mask].sum()) + (int(extra.sum()) if extra is not None else 0)
        util = (total * 100) // int(req_m[mask].sum())  # integer percent, as GetResourceUtilizationRatio
        return util / target_utilization

    usage_ratio = ratio(counted)
    scale_up_with_unready = bool(unready.any()) and usage_ratio > 1.0
    if not scale_up_with_unready and not missing.any():
        if abs(1.0 - usage_ratio) <= tolerance:
            return current_replicas
        return math.ceil(usage_ratio * ready_count)
    # re-run with the missing pods at max(100 %, target) of their request (scale down) or 0 (scale up),
    # and the unready pods at 0 when scaling up
    use2 = use_m.copy()
    mask = counted.copy()
    if missing.any():
        if usage_ratio < 1.0:
            use2[missing] = req_m[missing] * max(100.0, target_utilization) // 100
        else:
            use2[missing] = 0
        mask |= missing
    if scale_up_with_unready:
        use2[unready] = 0
        mask |= unready
    total = int(use2[mask].sum())
    new_ratio = ((total * 100) // int(req_m[mask].sum())) / target_utilization
    if (abs(1.0 - new_ratio) <= tolerance or (usage_ratio < 1.0 < new_ratio)
            or (usage_ratio > 1.0 > new_ratio)):
        return current_replicas
    new_replicas = math.ceil(new_ratio * int(mask.sum()))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (new_ratio > 1.0 and new_replicas < current_replicas):
        return current_replicas
    return new_replicas


def replicas_for_average_value(current_replicas: int, total_value: float | None, target_per_replica: float, *,
                               tolerance: float = 0.1) -> int | None:
    """External/Object metric with ``averageValue`` (e.g. queue length per replica), like KEDA:
    ``ceil(total / target_per_replica)`` unless ``total / (target × current)`` is within tolerance."""
    if total_value is None or not math.isfinite(total_value) or target_per_replica <= 0:
        return None
    if current_replicas > 0:
        usage_ratio = total_value / (target_per_replica * current_replicas)
        if abs(1.0 - usage_ratio) <= tolerance:
            return current_replicas
    return math.ceil(total_value / target_per_replica - 1e-9)


def replicas_for_ratio(current_replicas: int, metric_value: float | None, target_value: float, *,
                       tolerance: float = 0.1) -> int | None:
    """``ceil(current × metric / target)``, unchanged while ``|metric/target − 1| <= tolerance``."""
    if metric_value is None or not math.isfinite(metric_value) or target_value <= 0:
        return None
    usage_ratio = metric_value / target_value
    if abs(1.0 - usage_ratio) <= tolerance:
        return current_replicas
    return math.ceil(usage_ratio * current_replicas - 1e-9)


# ---------------------------------------------------------------- behaviour

def _change_in_period(events: tuple[tuple[float, int], ...], now: float, period: float) -> int:
    cutoff = now - period
    return sum(change for ts, change in events if ts > cutoff)


def scale_up_limit(current: int, state: HpaState, now: float, rules: HpaScalingRules) -> int:
    if rules.select_policy == "Disabled":
        return current
    pick = min if rules.select_policy == "Min" else max
    result: int | None = None
    for p in rules.policies:
        start = (current - _change_in_period(state.scale_up_events, now, p.period_seconds)
                 + _change_in_period(state.scale_down_events, now, p.period_seconds))
        proposed = start + p.value if p.type == "Pods" else math.ceil(start * (1 + p.value / 100.0) - 1e-9)
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def scale_down_limit(current: int, state: HpaState, now: float, rules: HpaScalingRules) -> int:
    if rules.select_policy == "Disabled":
        return current
    pick = max if rules.select_policy == "Min" else min
    result: int | None = None
    for p in rules.policies:
        start = (current - _change_in_period(state.scale_up_events, now, p.period_seconds)
                 + _change_in_period(state.scale_down_events, now, p.period_seconds))
        proposed = start - p.value if p.type == "Pods" else math.floor(start * (1 - p.value / 100.0) + 1e-9)
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def _prune(state: HpaState, now: float, s: HpaSettings) -> HpaState:
    b = s.behavior
    keep_rec = max(b.scale_up.stabilization_window_seconds, b.scale_down.stabilization_window_seconds)
    up_longest = max([p.period_seconds for p in b.scale_up.policies] or [0])
    down_longest = max([p.period_seconds for p in b.scale_down.policies] or [0])
    return HpaState(  # like markScaleEventsOutdated: events older than the direction's longest period
        recommendations=tuple(r for r in state.recommendations if r[0] >= now - keep_rec),
        scale_up_events=tuple(e for e in state.scale_up_events if e[0] >= now - up_longest),
        scale_down_events=tuple(e for e in state.scale_down_events if e[0] >= now - down_longest),
        started=state.started,
    )


def _record_event(state: HpaState, now: float, current: int, desired: int) -> HpaState:
    if desired > current:
        return replace(state, scale_up_events=(*state.scale_up_events, (now, desired - current)))
    if desired < current:
        return replace(state, scale_down_events=(*state.scale_down_events, (now, current - desired)))
    return state


def step(state: HpaState, now: float, current_replicas: int, proposals: Sequence[int | None] | int | None,
         settings: HpaSettings, *, scale_down_window_s: float | None = None) -> tuple[HpaState, HpaStep]:
    """One HPA sync at event time ``now``: (new state, desired replicas with the reason).

    ``scale_down_window_s`` replaces ``behavior.scale_down.stabilization_window_seconds`` for this sync
    only (a caller that knows more than the HPA, e.g. a trusted forecast, may shorten it); the
    recommendations are still kept for the configured window, so a later sync without it sees them."""
    s = settings
    if isinstance(proposals, int) or proposals is None:
        proposals = [proposals]
    state = _prune(state, now, s)
    if current_replicas == 0 and s.min_replicas != 0:
        return state, HpaStep(0, "ScalingDisabled", "scaling is disabled since the replica count of the target is zero")
    if current_replicas > s.max_replicas:
        return (_record_event(state, now, current_replicas, s.max_replicas),
                HpaStep(s.max_replicas, "TooManyReplicas", "current number of replicas above max_replicas"))
    if current_replicas < s.min_replicas:
        return (_record_event(state, now, current_replicas, s.min_replicas),
                HpaStep(s.min_replicas, "TooFewReplicas", "current number of replicas below min_replicas"))
    valid = [p for p in proposals if p is not None]
    invalid = len(proposals) - len(valid)
    if not valid:
        return state, HpaStep(current_replicas, "InvalidMetrics",
                              f"no metric could be computed ({invalid} invalid): holding {current_replicas}")
    proposal = max(valid)
    if invalid and proposal < current_replicas:
        return state, HpaStep(current_replicas, "InvalidMetrics",
                              f"{invalid} of {len(proposals)} metrics invalid and the rest would scale down: "
                              f"holding {current_replicas}", proposal=proposal)
    if not state.started:  # like maybeInitScaleDownStabilizationWindow: start from the current count
        state = replace(state, recommendations=((now, current_replicas),), started=True)
    b = s.behavior
    up_cut = now - b.scale_up.stabilization_window_seconds
    down_cut = now - (b.scale_down.stabilization_window_seconds if scale_down_window_s is None
                      else scale_down_window_s)
    up_rec, down_rec = proposal, proposal
    for ts, rec in state.recommendations:
        if ts > up_cut:
            up_rec = min(up_rec, rec)
        if ts > down_cut:
            down_rec = max(down_rec, rec)
    stabilized = min(max(current_replicas, up_rec), down_rec)
    state = replace(state, recommendations=(*state.recommendations, (now, proposal)))
    desired, reason, message = stabilized, "DesiredWithinRange", "the desired count is within the acceptable range"
    if stabilized != proposal:
        reason = "ScaleDownStabilized" if stabilized > proposal else "ScaleUpStabilized"
        message = (f"recent recommendations were {'higher' if stabilized > proposal else 'lower'} than the current "
                   f"one ({proposal}), applying the {'highest' if stabilized > proposal else 'lowest'} recent "
                   f"recommendation ({stabilized})")
    if stabilized > current_replicas:
        limit = max(scale_up_limit(current_replicas, state, now, b.scale_up), current_replicas)
        allowed = min(s.max_replicas, limit)
        if stabilized > allowed:
            desired = allowed
            if limit < s.max_replicas:
                reason = "ScaleUpLimit"
                message = "the desired replica count is increasing faster than the maximum scale rate"
            else:
                reason, message = "TooManyReplicas", "the desired replica count is more than the maximum replica count"
    elif stabilized < current_replicas:
        limit = min(scale_down_limit(current_replicas, state, now, b.scale_down), current_replicas)
        allowed = max(s.min_replicas, limit)
        if stabilized < allowed:
            desired = allowed
            if limit > s.min_replicas:
                reason = "ScaleDownLimit"
                message = "the desired replica count is decreasing faster than the maximum scale rate"
            else:
                reason, message = "TooFewReplicas", "the desired replica count is less than the minimum replica count"
    state = _record_event(state, now, current_replicas, desired)
    return state, HpaStep(desired, reason, message, proposal=proposal, stabilized=stabilized)


def reactive_cpu_step(state: HpaState, now: float, current_replicas: int, usage_cores: Sequence[float] | np.ndarray,
                      request_cores: Sequence[float] | np.ndarray, target_utilization: float, settings: HpaSettings,
                      *, ready: Sequence[bool] | np.ndarray | None = None) -> tuple[HpaState, HpaStep]:
    """The baseline: a plain CPU-utilisation HPA (one Resource metric) for one sync."""
    proposal = replicas_for_utilization(current_replicas, usage_cores, request_cores, target_utilization,
                                        ready=ready, tolerance=settings.tolerance)
    return step(state, now, current_replicas, [proposal], settings)
