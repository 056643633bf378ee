"""Per-workload autoscaling: predictive + reactive CPU, custom metrics and cron, combined like KEDA (pure).

A policy (YAML, one per workload; every field has a default)::

    min_replicas: 2
    max_replicas: 40
    target_cpu_utilization: 60        # percent of the pod's CPU request
    reactive: true                    # the plain HPA CPU trigger (always on unless false)
    predictive:                       # EHPA-style: forecast the workload's CPU, provision for the peak
      prediction_window_s: 1800       # look this far ahead (pods start slowly)
      margin: 0.1                     # + 10 % on the forecast peak
      max_error: 0.25                 # fall back to reactive when the backtest WAPE is above this
    metrics:                          # custom metrics from app.metrics (queue length, qps…)
      - {metric: queue_length, target_per_replica: 30}
    cron:                             # fixed replicas during a schedule, in a time zone (DST-safe)
      - {name: business-hours, start: "0 8 * * 1-5", end: "0 20 * * 1-5", timezone: Europe/Berlin, replicas: 10}
    behavior: {scale_down: {stabilization_window_seconds: 600}}   # Kubernetes HPA v2 behaviour

Triggers, each proposing a replica count (``None`` = no opinion or no data):

- **reactive** — Kubernetes' CPU utilisation rule (``hpa.replicas_for_utilization``) on the pods'
  current usage, or on the workload's last CPU sample ÷ current replicas when per-pod data is absent;
- **predictive** — periods of the CPU history (``forecast.detect_periods``) → forecast → maximum over
  the next ``prediction_window_s`` × (1 + ``margin``) → ``ceil(peak / (request × target))``, kept at the
  current count when within ± ``tolerance`` of what the current replicas serve (as the HPA's rule). It
  steps aside, with the reason in the evidence, when the history is not periodic, too short, has no
  recent sample, or the forecast's backtest error (WAPE, also published) is above ``max_error`` — the
  reactive trigger then decides alone. The fit (:func:`fit_predictive`) may be computed earlier and
  passed in ``WorkloadObservation.prediction`` (the tick planner refits every few minutes). A ramp of the
  forecast is taken in one change (``scale_up_lookahead_s`` / ``scale_down_lookahead_s``, :func:`_coalesce`),
  and while the forecast is trusted the scale-down stabilisation window is at most
  ``scale_down_stabilization_s`` (:func:`scale_down_window`). A forecast rise shorter than ``short_peak_s``
  is provisioned at ``short_peak_utilization`` % of the request instead of the target
  (:func:`provision_cores`), and while the load is such a peak the forecast expected
  (:func:`short_peak_now`) the reactive trigger sizes at that utilisation too;
- **metric** — ``ceil(value / target_per_replica)`` (external metric ``averageValue``, with the
  HPA tolerance) from the latest ``app.metrics`` value; a value older than ``max_age_s`` is missing
  (never read as 0);
- **cron** — active from each ``start`` firing to the next ``end`` firing (cron expressions in
  ``timezone``, via croniter on zone-aware local time, so a DST change moves the schedule with the
  wall clock); while active it proposes ``replicas``.

The highest proposal wins (as KEDA/HPA do across metrics) and is named as the trigger; the
HPA behaviour (stabilisation, rate policies, min/max, hold on missing metrics) is applied by
``hpa.step``. :func:`step` returns the new HPA state and an :class:`~kubetide.models.AutoscaleDecision`
when the desired count differs from the current one (deterministic id from the inputs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from croniter import croniter

from kubetide.models import AutoscaleDecision, WorkloadRef, decision_id
from streams.core import forecast as fc
from streams.core import hpa

STRATEGY = "Autoscale"


@dataclass(frozen=True)
class PredictiveTrigger:
    enabled: bool = True
    prediction_window_s: float = 1800.0
    margin: float = 0.1
    max_error: float = 0.25
    min_confidence: float = 0.3
    history_s: float = 14 * 86400.0  # use at most this much history
    method: str = "auto"
    # while the forecast is trusted (status ok), the scale-down stabilisation window is at most this long:
    # the forecast maximum over the prediction window already keeps what the next minutes need, so the
    # behaviour's (longer) window would only keep a past spike's replicas; None = the behaviour's window
    scale_down_stabilization_s: float | None = 60.0
    # coalesce the forecast's ramps into one change (fewer scale events): a scale-up provisions for the
    # window extended by scale_up_lookahead_s (the rest of the ramp, at once); a scale-down goes to the count
    # the window scale_down_lookahead_s later needs (the following steps of the ramp, at once), holds while the
    # forecast falls by more than the tolerance within that look-ahead (a spike's tail), and never scales down
    # what that later window needs again
    scale_up_lookahead_s: float = 120.0
    scale_down_lookahead_s: float = 120.0
    # a forecast rise that lasts less than short_peak_s (an hourly spike of a few minutes) is provisioned at
    # short_peak_utilization % of the request instead of the target: the target's headroom is for load nobody
    # forecast, and pods started for a short peak mostly start after it and then hold nodes; a level held for
    # short_peak_s or longer is provisioned at the target as before. None (or a value <= the target) = off
    short_peak_s: float = 600.0
    short_peak_utilization: float | None = 100.0

    @property
    def horizon_s(self) -> float:
        """How far ahead the trigger reads the forecast."""
        return self.prediction_window_s + max(self.scale_up_lookahead_s, self.scale_down_lookahead_s)

    def validate(self) -> None:
        if self.prediction_window_s <= 0:
            raise ValueError("prediction_window_s: must be > 0")
        if not 0 <= self.margin <= 5:
            raise ValueError("margin: must be in [0, 5]")
        if self.max_error <= 0:
            raise ValueError("max_error: must be > 0")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError("min_confidence: must be in [0, 1]")
        if self.history_s <= 0:
            raise ValueError("history_s: must be > 0")
        if self.method not in fc.METHODS:
            raise ValueError(f"method: must be one of {', '.join(fc.METHODS)}")
        if self.scale_down_stabilization_s is not None and not 0 <= self.scale_down_stabilization_s <= 3600:
            raise ValueError("scale_down_stabilization_s: must be in [0, 3600]")
        for f in ("scale_up_lookahead_s", "scale_down_lookahead_s", "short_peak_s"):
            if not 0 <= getattr(self, f) <= 3600:
                raise ValueError(f"{f}: must be in [0, 3600]")
        if self.short_peak_utilization is not None and not 0 < self.short_peak_utilization <= 200:
            raise ValueError("short_peak_utilization: must be in (0, 200] or null")

    def short_peak_factor(self, target_pct: float) -> float | None:
        """target ÷ short-peak utilisation (< 1) when short peaks are provisioned apart, else None."""
        u = self.short_peak_utilization
        if u is None or u <= target_pct or self.short_peak_s <= 0:
            return None
        return target_pct / u


def provision_cores(values: np.ndarray, interval_s: float, window_s: float, *, margin: float,
                    short_peak_s: float = 0.0, factor: float | None = None, tolerance: float = 0.1) -> float:
    """The cores to provision at the target for the forecast ``values`` over the first ``window_s``:
    :func:`forecast.window_max` × (1 + ``margin``), except that a rise lasting less than ``short_peak_s`` counts
    only × ``factor`` (target ÷ short-peak utilisation) — the result is max(the highest level the forecast holds
    for ``short_peak_s`` (its forward rolling minimum; truncated at the end of the forecast, so never lower
    than a level that may last) × (1 + ``margin``), the peak × ``factor``). A peak within ``tolerance`` of that
    held level (the rounded top of a tide) is no short peak: the plain maximum. ``factor`` None = the plain
    window maximum."""
    return _provision(values, interval_s, window_s, margin=margin, short_peak_s=short_peak_s, factor=factor,
                      tolerance=tolerance)[1]


def _provision(values: np.ndarray, interval_s: float, window_s: float, *, margin: float, short_peak_s: float,
               factor: float | None, tolerance: float) -> tuple[float, float]:
    """(the plain window maximum × (1 + margin), :func:`provision_cores`): the caller that publishes the
    forecast's peak beside the sized one gets both from one pass."""
    peak = fc.window_max(values, interval_s, window_s, margin=margin)
    if factor is None or not math.isfinite(peak):
        return peak, peak
    v = np.asarray(values, dtype=float)
    k = max(1, math.ceil(window_s / interval_s - 1e-9))
    span = max(1, math.ceil(short_peak_s / interval_s - 1e-9))
    head = v[:k + span - 1]
    if len(head) < k + span - 1:
        head = np.concatenate([head, np.full(k + span - 1 - len(head), np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(np.where(np.isnan(head), np.inf, head), span)[:k]
    held = win.min(axis=1)
    held = held[np.isfinite(held)]
    sustained = float(held.max()) * (1.0 + margin) if len(held) else peak
    if peak <= sustained * (1.0 + tolerance):
        return peak, peak
    return peak, max(sustained, peak * factor)


@dataclass(frozen=True)
class MetricTrigger:
    metric: str = ""
    target_per_replica: float = 1.0
    name: str = ""
    max_age_s: float = 300.0

    @property
    def label(self) -> str:
        return self.name or f"metric:{self.metric}"

    def validate(self) -> None:
        if not self.metric:
            raise ValueError("metric: required (an app.metrics metric name, e.g. queue_length)")
        if self.target_per_replica <= 0:
            raise ValueError("target_per_replica: must be > 0")
        if self.max_age_s <= 0:
            raise ValueError("max_age_s: must be > 0")


@dataclass(frozen=True)
class CronTrigger:
    start: str = ""
    end: str = ""
    replicas: int = 1
    timezone: str = "UTC"
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"cron:{self.start}"

    def validate(self) -> None:
        for f in ("start", "end"):
            expr = getattr(self, f)
            if not expr or not croniter.is_valid(expr):
                raise ValueError(f"{f}: {expr!r} is not a valid cron expression")
        if self.replicas < 0:
            raise ValueError("replicas: must be >= 0")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone {self.timezone!r}") from None

    def active(self, now: float) -> bool:
        """True from a ``start`` firing until the next ``end`` firing (start inclusive, end exclusive)."""
        local = datetime.fromtimestamp(now, UTC).astimezone(ZoneInfo(self.timezone))
        nxt_start = croniter(self.start, local).get_next(float)
        nxt_end = croniter(self.end, local).get_next(float)
        return nxt_end < nxt_start


@dataclass(frozen=True)
class AutoscalePolicy:
    min_replicas: int = 1
    max_replicas: int = 10
    target_cpu_utilization: float = 70.0
    reactive: bool = True
    predictive: PredictiveTrigger = field(default_factory=PredictiveTrigger)
    metrics: tuple[MetricTrigger, ...] = ()
    cron: tuple[CronTrigger, ...] = ()
    behavior: hpa.HpaBehavior = field(default_factory=hpa.HpaBehavior)
    tolerance: float = 0.1
    ttl_s: float = 120.0

    def validate(self) -> None:
        self.hpa_settings().validate()
        if not 0 < self.target_cpu_utilization <= 100:
            raise ValueError("target_cpu_utilization: must be in (0, 100]")
        if self.ttl_s <= 0:
            raise ValueError("ttl_s: must be > 0")
        for name, items in (("predictive", [self.predictive]), ("metrics", self.metrics), ("cron", self.cron)):
            for i, item in enumerate(items):
                try:
                    item.validate()
                except ValueError as exc:
                    raise ValueError(f"{name}{'' if name == 'predictive' else f'[{i}]'}.{exc}") from None

    def hpa_settings(self) -> hpa.HpaSettings:
        return hpa.HpaSettings(self.min_replicas, self.max_replicas, self.tolerance, self.behavior)


@dataclass(frozen=True)
class WorkloadObservation:
    """What the planner knows about one workload at event time ``now``."""

    workload: WorkloadRef
    now: float
    current_replicas: int
    cpu_request_cores: float  # per pod
    cpu_history: np.ndarray = field(default_factory=lambda: np.array([]))  # workload total cores, NaN = missing
    interval_s: float = 60.0  # of cpu_history; its last sample is at ``now``
    pod_cpu_cores: np.ndarray | None = None  # current per-pod usage (NaN = no sample)
    pod_ready: np.ndarray | None = None
    metrics: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (ts, value)
    zone_usage: Mapping[str, float] = field(default_factory=dict)  # zone -> cores used by the workload
    # A forecast fitted earlier (``fit_predictive``), its first value the sample right after ``now``;
    # None = fit one from ``cpu_history`` now.
    prediction: PredictiveFit | None = None


@dataclass(frozen=True)
class PredictiveFit:
    """A predictive trigger's forecast of the workload's CPU (cores), before the window maximum."""

    status: str  # "ok" or "fallback: <reason>"
    values: np.ndarray = field(default_factory=lambda: np.array([]))  # one per ``interval_s`` after the history
    interval_s: float = 60.0
    error: float | None = None
    method: str = ""
    period_s: float | None = None
    confidence: float | None = None
    # the forecast's values for the intervals already past (oldest first; kept across refits by the planner):
    # what the forecast expected up to now, so a short peak under way is still known as forecast at its tail
    recent: np.ndarray = field(default_factory=lambda: np.array([]))

    def shifted(self, samples: int) -> PredictiveFit:
        """The same fit seen ``samples`` intervals later (the values already past moved to ``recent``)."""
        n = max(0, samples)
        if n == 0:
            return self
        return replace(self, values=self.values[n:], recent=np.concatenate([self.recent, self.values[:n]])[-RECENT:])

    def with_recent(self, recent: np.ndarray) -> PredictiveFit:
        return replace(self, recent=np.asarray(recent, dtype=float)[-RECENT:])


RECENT = 64  # forecast values kept in PredictiveFit.recent


@dataclass(frozen=True)
class TriggerResult:
    name: str
    replicas: int | None
    note: str = ""


@dataclass(frozen=True)
class PredictiveResult:
    replicas: int | None
    status: str  # "ok" or "fallback: <reason>"
    peak_cores: float | None = None  # the forecast's peak (× (1 + margin)) the count answers
    # the cores the count provisions for at the target when short peaks count at short_peak_utilization (and
    # differ from ``peak_cores``); None otherwise
    provision_cores: float | None = None
    error: float | None = None
    method: str = ""
    period_s: float | None = None
    confidence: float | None = None
    # the load now is a short peak the forecast expected (see :func:`short_peak_now`): the reactive trigger then
    # sizes at the short-peak utilisation
    short_peak: bool = False


def fit_predictive(p: PredictiveTrigger, history: np.ndarray, interval_s: float,
                   horizon_s: float | None = None) -> PredictiveFit:
    """Detect the periods of ``history`` (workload cores every ``interval_s``, NaN = missing) and forecast
    ``horizon_s`` (default ``p.prediction_window_s``) after its last sample, or say why not."""
    x = np.asarray(history, dtype=float)
    keep = int(p.history_s / interval_s)
    x = x[-keep:] if keep > 0 else x
    if len(x) < 16 or np.isnan(x).all():
        return PredictiveFit("fallback: too little CPU history", interval_s=interval_s)
    if np.isnan(x[-max(1, len(x) // 4):]).all():
        return PredictiveFit("fallback: no recent CPU samples", interval_s=interval_s)
    periods = fc.detect_periods(x, interval_s, min_confidence=p.min_confidence)
    if not periods:
        return PredictiveFit("fallback: CPU history is not periodic", interval_s=interval_s)
    horizon = max(1, math.ceil((horizon_s or p.horizon_s) / interval_s))
    f = fc.forecast(x, interval_s, horizon, method=p.method, periods=periods)
    top = max(periods, key=lambda q: q.confidence)
    base = dict(interval_s=interval_s, error=f.backtest_error, method=f.method, period_s=top.period_s,
                confidence=top.confidence)
    if f.backtest_error is None:
        return PredictiveFit("fallback: forecast could not be backtested", **base)
    if f.backtest_error > p.max_error:
        return PredictiveFit(f"fallback: forecast error {f.backtest_error:.1%} above {p.max_error:.0%}", **base)
    return PredictiveFit("ok", values=np.asarray(f.values, dtype=float), **base)


def predictive(policy: AutoscalePolicy, obs: WorkloadObservation) -> PredictiveResult:
    p = policy.predictive
    if not p.enabled:
        return PredictiveResult(None, "fallback: predictive trigger disabled")
    fit = obs.prediction if obs.prediction is not None else fit_predictive(p, obs.cpu_history, obs.interval_s)
    base = dict(error=fit.error, method=fit.method, period_s=fit.period_s, confidence=fit.confidence)
    if fit.status != "ok":
        return PredictiveResult(None, fit.status, **base)
    factor = p.short_peak_factor(policy.target_cpu_utilization)
    plain, peak = _provision(fit.values, fit.interval_s, p.prediction_window_s, margin=p.margin,
                             short_peak_s=p.short_peak_s, factor=factor, tolerance=policy.tolerance)
    if not math.isfinite(peak):
        return PredictiveResult(None, "fallback: empty forecast", **base)
    per_pod = obs.cpu_request_cores * policy.target_cpu_utilization / 100.0
    if per_pod <= 0:
        return PredictiveResult(None, "fallback: no CPU request", **base)
    # the HPA's tolerance: a forecast within ±tolerance of what the current replicas serve at the target
    # keeps the current count (no ±1 changes from forecast jitter)
    r = hpa.replicas_for_ratio(obs.current_replicas, peak, obs.current_replicas * per_pod, tolerance=policy.tolerance) \
        if obs.current_replicas > 0 else None
    if r is None:
        r = math.ceil(peak / per_pod - 1e-9)
    r, peak = _coalesce(p, fit, r, peak, obs.current_replicas, per_pod, policy.tolerance, factor)
    short = factor is not None and short_peak_now(p, fit, _current_cores(obs), obs.current_replicas * per_pod,
                                                  policy.tolerance)
    if factor is None:
        return PredictiveResult(max(0, r), "ok", peak_cores=peak, **base)
    # the published peak stays the forecast's (a dashboard's "forecast demand"); what it was sized to goes apart
    raw = max(peak, plain)
    return PredictiveResult(max(0, r), "ok", peak_cores=raw, provision_cores=peak if peak != raw else None,
                            short_peak=short, **base)


def short_peak_now(p: PredictiveTrigger, fit: PredictiveFit, now_cores: float, served_at_target: float,
                   tolerance: float = 0.1) -> bool:
    """Is the load now a short peak the forecast expected? True when the load (``now_cores``) is at most what
    the forecast gave for the ``short_peak_s`` around now (its past values in ``fit.recent`` and its next ones)
    × (1 + margin), and the forecast falls within ``short_peak_s`` to what the current replicas serve at the
    target (``served_at_target``) × (1 + ``tolerance``) — a load above the forecast, or one that lasts, is not."""
    if not math.isfinite(now_cores):
        return False
    span = max(1, math.ceil(p.short_peak_s / fit.interval_s - 1e-9))
    ahead = np.asarray(fit.values[:span], dtype=float)
    around = np.concatenate([np.asarray(fit.recent[-span:], dtype=float), ahead])
    around, ahead = around[~np.isnan(around)], ahead[~np.isnan(ahead)]
    if not len(ahead):
        return False
    m = 1.0 + p.margin
    return now_cores <= float(around.max()) * m and float(ahead.min()) <= served_at_target * (1.0 + tolerance)


def _current_cores(obs: WorkloadObservation) -> float:
    """The workload's CPU now: the sum of its pods' samples (the mean of those present × pods when some are
    missing), else the history's last sample; NaN when unknown."""
    if obs.pod_cpu_cores is not None and len(obs.pod_cpu_cores):
        v = np.asarray(obs.pod_cpu_cores, dtype=float)
        ok = ~np.isnan(v)
        if ok.any():
            return float(v[ok].mean() * len(v))
    hist = np.asarray(obs.cpu_history, dtype=float)
    return float(hist[-1]) if len(hist) else math.nan


def _coalesce(p: PredictiveTrigger, fit: PredictiveFit, r: int, peak: float, current: int, per_pod: float,
              tolerance: float, factor: float | None = None) -> tuple[int, float]:
    """The predictive count ``r`` (for ``peak``) with the rest of a ramp of the forecast taken at once: a scale-up
    provisions for the window extended by ``scale_up_lookahead_s``; a scale-down goes to what the window
    ``scale_down_lookahead_s`` later needs (lower or higher than ``r``, never above ``current``: no scale-down
    that the forecast would undo within the look-ahead); while the forecast (without the margin) falls by more
    than the tolerance within the look-ahead (a spike's tail), it holds, so the ramp is taken in one change
    once its steep part has passed. Returns (count, the peak it provisions for)."""
    iv = fit.interval_s

    def need(values: np.ndarray, window_s: float, margin: float) -> float:
        return provision_cores(values, iv, window_s, margin=margin, short_peak_s=p.short_peak_s, factor=factor,
                               tolerance=tolerance)

    if r > current and p.scale_up_lookahead_s > 0:
        up = need(fit.values, p.prediction_window_s + p.scale_up_lookahead_s, p.margin)
        if math.isfinite(up) and up > peak:
            return max(r, math.ceil(up / per_pod - 1e-9)), up
    elif r < current and p.scale_down_lookahead_s > 0:
        k = max(1, math.ceil(p.scale_down_lookahead_s / iv - 1e-9))
        later = need(fit.values[k:], p.prediction_window_s, p.margin)
        near = need(fit.values, k * iv, 0.0)
        if math.isfinite(later) and math.isfinite(near):
            need_later = math.ceil(later / per_pod - 1e-9)
            need_near = math.ceil(near / (per_pod * (1 + tolerance)) - 1e-9)
            if need_near > need_later:
                # the forecast falls by more than the tolerance within the look-ahead (the tail of a spike):
                # hold, and take the whole ramp down in one change once its steep part has passed
                return current, near / (1 + tolerance)
            return min(current, need_later), later
    return r, peak


def reactive(policy: AutoscalePolicy, obs: WorkloadObservation, short_peak: bool = False) -> TriggerResult:
    """Kubernetes' CPU rule at the target — at the predictive trigger's ``short_peak_utilization`` instead while
    the load is a short peak the trusted forecast expected (``short_peak``)."""
    target = policy.target_cpu_utilization
    u = policy.predictive.short_peak_utilization
    if short_peak and u is not None and u > target:
        target, how = u, f" (a forecast short peak: at {u:g} %)"
    else:
        how = ""
    if obs.pod_cpu_cores is not None and len(obs.pod_cpu_cores):
        reqs = np.full(len(obs.pod_cpu_cores), obs.cpu_request_cores)
        r = hpa.replicas_for_utilization(obs.current_replicas, obs.pod_cpu_cores, reqs, target,
                                         ready=obs.pod_ready, tolerance=policy.tolerance)
        return TriggerResult("reactive", r, "per-pod CPU utilisation" + how)
    hist = np.asarray(obs.cpu_history, dtype=float)
    last = float(hist[-1]) if len(hist) else float("nan")
    if not math.isfinite(last) or obs.current_replicas <= 0:
        return TriggerResult("reactive", None, "no current CPU sample")
    util = last / (obs.current_replicas * obs.cpu_request_cores) * 100.0
    r = hpa.replicas_for_ratio(obs.current_replicas, util, target, tolerance=policy.tolerance)
    return TriggerResult("reactive", r, f"workload CPU utilisation {util:.0f} %{how}")


def metric_trigger(t: MetricTrigger, obs: WorkloadObservation, tolerance: float) -> TriggerResult:
    sample = obs.metrics.get(t.metric)
    if sample is None:
        return TriggerResult(t.label, None, f"no {t.metric} sample")
    ts, value = sample
    if obs.now - ts > t.max_age_s or not math.isfinite(value):
        return TriggerResult(t.label, None, f"{t.metric} sample is stale ({obs.now - ts:.0f} s old)")
    r = hpa.replicas_for_average_value(obs.current_replicas, value, t.target_per_replica, tolerance=tolerance)
    return TriggerResult(t.label, r, f"{t.metric}={value:g}, {t.target_per_replica:g} per replica")


def evaluate_triggers(policy: AutoscalePolicy,
                      obs: WorkloadObservation) -> tuple[list[TriggerResult], PredictiveResult]:
    """Every trigger's proposal. A ``None`` from reactive or metric is a missing metric (hold on
    scale-down); an inactive cron or a predictive fallback simply has no opinion and is left out."""
    out: list[TriggerResult] = []
    for c in policy.cron:
        if c.active(obs.now):
            out.append(TriggerResult(c.label, c.replicas, f"schedule active ({c.timezone})"))
    for m in policy.metrics:
        out.append(metric_trigger(m, obs, policy.tolerance))
    pred = predictive(policy, obs)
    if pred.replicas is not None:
        out.append(TriggerResult("predictive", pred.replicas,
                                 f"forecast peak {pred.peak_cores:.3g} cores in the next "
                                 f"{policy.predictive.prediction_window_s:g} s (+{policy.predictive.margin:.0%})"))
    if policy.reactive:
        out.append(reactive(policy, obs, short_peak=pred.short_peak))
    return out, pred


def zone_shares(zone_usage: Mapping[str, float]) -> dict[str, float]:
    vals = {z: float(v) for z, v in zone_usage.items() if v is not None and math.isfinite(v) and v >= 0}
    total = sum(vals.values())
    if total <= 0:
        return {}
    return {z: round(v / total, 4) for z, v in sorted(vals.items())}


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def scale_down_window(policy: AutoscalePolicy, pred: PredictiveResult) -> float | None:
    """The scale-down stabilisation window of this round when it differs from the behaviour's: the predictive
    trigger's ``scale_down_stabilization_s`` while its forecast is trusted and proposes a count, else None."""
    p = policy.predictive
    configured = float(policy.behavior.scale_down.stabilization_window_seconds)
    if not p.enabled or p.scale_down_stabilization_s is None or pred.replicas is None or pred.status != "ok":
        return None
    w = float(p.scale_down_stabilization_s)
    return w if w < configured else None


def step(state: hpa.HpaState, policy: AutoscalePolicy,
         obs: WorkloadObservation) -> tuple[hpa.HpaState, AutoscaleDecision | None, dict[str, Any]]:
    """One planning round: (new HPA state, a decision when the replica count should change, evidence)."""
    triggers, pred = evaluate_triggers(policy, obs)
    proposals = [t.replicas for t in triggers]
    settings = policy.hpa_settings()
    down_window = scale_down_window(policy, pred)
    new_state, res = hpa.step(state, obs.now, obs.current_replicas, proposals, settings,
                              scale_down_window_s=down_window)
    valid = [t for t in triggers if t.replicas is not None]
    winner = max(valid, key=lambda t: t.replicas) if valid else None  # first of the highest (cron, metric, …)
    evidence: dict[str, Any] = {
        "current_replicas": obs.current_replicas,
        "desired_replicas": res.desired,
        "hpa_reason": res.reason,
        "predictive_status": pred.status,
        "scale_down_window_s": _num(down_window),
        "forecast_peak_cores": _num(pred.peak_cores),
        "provision_cores": _num(pred.provision_cores),
        "short_peak": pred.short_peak or None,
        "forecast_error": _num(pred.error),
        "forecast_method": pred.method or None,
        "period_s": _num(pred.period_s),
        "period_confidence": _num(pred.confidence),
        "target_cpu_utilization": policy.target_cpu_utilization,
        "cpu_request_cores": _num(obs.cpu_request_cores),
    }
    for t in triggers:
        evidence[f"replicas.{t.name}"] = t.replicas
    evidence = {k: v for k, v in evidence.items() if v is not None}
    if res.desired == obs.current_replicas:
        return new_state, None, evidence
    trig = winner.name if winner is not None else "bounds"
    why = (f"{winner.name}: {winner.note} → {winner.replicas} replicas" if winner is not None else res.message)
    if pred.status != "ok" and policy.predictive.enabled:
        why += f"; predictive {pred.status}"
    reason = f"{why}; scale {obs.current_replicas} → {res.desired} ({res.reason})"
    did = decision_id(STRATEGY, obs.workload.key, obs.now, obs.current_replicas, res.desired,
                      sorted((t.name, t.replicas) for t in triggers if t.replicas is not None), res.reason)
    decision = AutoscaleDecision(
        id=did, made_at=obs.now, expires_at=obs.now + policy.ttl_s, strategy=STRATEGY, reason=reason,
        evidence=evidence, workload=obs.workload, current_replicas=obs.current_replicas,
        desired_replicas=res.desired, trigger=trig, zones=zone_shares(obs.zone_usage))
    return new_state, decision, evidence


def plan(policy: AutoscalePolicy, obs: WorkloadObservation,
         state: hpa.HpaState | None = None) -> AutoscaleDecision | None:
    """The decision for one round (use :func:`step` to carry the HPA state between rounds)."""
    return step(state or hpa.HpaState(), policy, obs)[1]


def load_policies(data: Mapping[str, Any] | None, where: str = "autoscale.workloads") -> dict[str, AutoscalePolicy]:
    """``{"namespace/name": policy}`` from a mapping of workload key to policy settings."""
    from kubetide.config import ConfigError, build

    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of namespace/name to an autoscaling policy")
    return {str(k): build(AutoscalePolicy, v, f"{where}.{k}") for k, v in data.items()}
