"""The stream worker's metrics: its own few, plus adapters onto kubetide's one catalogue.

The agents call ``MESSAGES.labels(topic).inc()`` and friends; the adapters below record
the same events in the catalogue metrics of :mod:`kubetide.metrics` (the names the Grafana
dashboards read), so nothing is counted twice under different names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from kubetide import metrics as catalogue

PROFILES = Counter("kubetide_streams_profiles_total", "profile messages emitted")
TICKS = Counter("kubetide_streams_ticks_planned_total", "metric ticks completed and planned")
LATE_SUMMARIES = Gauge("kubetide_streams_late_summaries", "node summaries dropped because their tick was planned")
PROFILED_APPS = Gauge("kubetide_streams_profiled_apps", "apps with a profile state cached on this worker")
SLICES = Counter("kubetide_streams_app_slices_total",
                 "per-app slices of node scrapes profiled (several per app-samples message)")


class _Bound:
    def __init__(self, fn, *labels: str) -> None:  # type: ignore[no-untyped-def]
        self._fn, self._labels = fn, labels

    def inc(self, n: int = 1) -> None:
        self._fn(*self._labels, n)


class _Adapter:
    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        self._fn = fn

    def labels(self, *labels: str) -> _Bound:
        return _Bound(self._fn, *labels)


MESSAGES = _Adapter(lambda topic, n: catalogue.observe_consumed(topic, n))
DEADLETTERS = _Adapter(lambda topic, reason, n: [catalogue.observe_deadletter(topic, reason) for _ in range(n)])
DECISIONS = _Adapter(lambda strategy, n: catalogue.observe_decision("deschedule", strategy, n))


def observe_decision(d: object) -> None:
    """Count a decision under its type (the topic's last part: deschedule, autoscale, nodescale)."""
    from streams.core.planner import decision_topic

    catalogue.observe_decision(decision_topic(d).rsplit(".", 1)[-1], getattr(d, "strategy", ""))
