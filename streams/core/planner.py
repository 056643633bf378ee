"""The planner's pure loop: planner-input messages in, descheduling decisions out.

State lives in memory only. After a restart it is rebuilt from the collector's periodic
``SYNC`` restatements of every object (informer-style resync) and from new metric ticks: until
a Node and its Pods have been restated the node is unknown, and a source needs ``consecutive``
fresh ticks again, so a restart delays decisions but never makes a wrong one on stale data.
(The anti-thrash memory — windows, cooldowns, backoff — is in memory too: after a restart the
actuator's own rate limits and idempotency still hold.)

Within a tick the strategies run in registry order and each one's decisions are recorded in the
state (:meth:`ClusterState.record`) before the next plans, so they share limits and targets.
Anomalies (interference findings) enter through :meth:`Planner.apply_anomaly`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from kubetide import topics
from kubetide.models import Anomaly, AutoscaleDecision, DescheduleDecision, NodescaleDecision
from streams.core.messages import NodeSummary, PlannerInput
from streams.core.state import ClusterState, EvictorSettings, GuardSettings
from streams.core.strategies import Strategy
from streams.core.ticks import TickAssembler

Decision = DescheduleDecision | AutoscaleDecision | NodescaleDecision

# Which topic each decision type goes to (the planner agent and the offline/replay paths route by it).
DECISION_TOPICS: dict[type, str] = {
    DescheduleDecision: topics.DECISIONS_DESCHEDULE,
    AutoscaleDecision: topics.DECISIONS_AUTOSCALE,
    NodescaleDecision: topics.DECISIONS_NODESCALE,
}


def decision_topic(d: Any) -> str:
    return DECISION_TOPICS[type(d)]


def decision_kafka_key(d: Any) -> bytes:
    """The Kafka key of a decision: the workload (``ns/Kind/name``), or the node group for node scaling."""
    wl = getattr(d, "workload", None)
    return (wl.key if wl is not None else d.node_group).encode()


class TickPlanner(Protocol):
    """A whole-cluster planner run once per completed tick, after the descheduling strategies
    (autoscaling, node scaling). It reads the shared :class:`ClusterState` and returns decisions."""

    def plan(self, state: ClusterState, ts: float) -> list[Any]: ...


class Planner:
    def __init__(self, strategies: Sequence[tuple[Strategy, Any]], evictor: EvictorSettings | None = None,
                 *, history: int = 10, tick_s: float = 0.0, lateness_s: float = 60.0,
                 guard: GuardSettings | None = None, tick_planners: Sequence[TickPlanner] = ()) -> None:
        self.strategies = list(strategies)
        self.tick_planners = list(tick_planners)
        need = max([getattr(st, "consecutive", 1) for _, st in self.strategies] + [1])
        self.state = ClusterState(history=max(history, need), evictor=evictor or EvictorSettings(),
                                  guard=guard or GuardSettings())
        self.ticks = TickAssembler(tick_s=tick_s, lateness_s=lateness_s)
        self.keep_s = max([max(getattr(st, "node_cooldown_s", 0.0), getattr(st, "pod_cooldown_s", 0.0))
                           for _, st in self.strategies] + [0.0])
        self.ticks_planned = 0

    @classmethod
    def from_settings(cls, settings: Any) -> Planner:
        """A planner from a :class:`~streams.core.settings.StreamsSettings` (strategies, evictor, planner, guard)."""
        return cls(settings.strategies, settings.evictor, history=settings.planner.history,
                   tick_s=settings.planner.tick_s, lateness_s=settings.planner.lateness_s,
                   guard=getattr(settings, "guard", None),
                   tick_planners=settings.tick_planners() if hasattr(settings, "tick_planners") else ())

    def apply_anomaly(self, anomaly: Anomaly) -> None:
        """An interference finding (open or cleared) for the Interference strategy and keep-apart pairs."""
        self.state.apply_anomaly(anomaly)

    def handle(self, msg: PlannerInput) -> list[Decision]:
        if msg.kind == "event":
            assert msg.event is not None
            self.state.apply_event(msg.event)
            done = []
            if msg.event.kind == "Node":
                if msg.event.type == "DELETED":
                    self.ticks.forget(msg.event.name)
                done = self.ticks.recheck(self.state.ready_nodes())
        else:
            assert msg.node is not None
            done = self.ticks.add(msg.node, self.state.ready_nodes())
        return self._plan_ticks(done)

    def _plan_ticks(self, done: list[tuple[float, dict[str, NodeSummary]]]) -> list[Decision]:
        out: list[Decision] = []
        for ts, summaries in done:
            out.extend(self.plan_tick(ts, summaries))
        return out

    def plan_tick(self, ts: float, summaries: dict[str, NodeSummary]) -> list[Decision]:
        self.state.apply_tick(ts, summaries)
        self.ticks_planned += 1
        out: list[Decision] = []
        for strategy, settings in self.strategies:
            decisions = strategy.plan(self.state, settings)
            for d in decisions:
                self.state.record(d)
            out.extend(decisions)
        for tp in self.tick_planners:
            out.extend(tp.plan(self.state, ts))
        self.state.prune_decisions(ts, self.keep_s)
        return out
