"""Prometheus metrics of the stream worker (declared once, units in names), served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MESSAGES = Counter("kubetide_streams_messages_total", "messages consumed, by topic", ["topic"])
DEADLETTERS = Counter("kubetide_streams_deadletters_total", "messages dead-lettered, by origin topic and reason",
                      ["topic", "reason"])
DECISIONS = Counter("kubetide_streams_decisions_total", "decisions emitted, by strategy", ["strategy"])
PROFILES = Counter("kubetide_streams_profiles_total", "profile messages emitted")
TICKS = Counter("kubetide_streams_ticks_planned_total", "metric ticks completed and planned")
LATE_SUMMARIES = Gauge("kubetide_streams_late_summaries", "node summaries dropped because their tick was planned")
PROFILED_APPS = Gauge("kubetide_streams_profiled_apps", "apps with a profile state cached on this worker")
