"""Assembling metric ticks for the planner from node summaries arriving in any order (pure).

The rule (a per-node watermark with an event-time lateness bound):

- A summary belongs to tick ``T`` = its ``ts`` (or ``floor(ts / tick_s) * tick_s`` when
  ``tick_s > 0``, for collectors that do not stamp every node of a scrape round alike).
- Tick ``T`` is *complete* once every **known ready node** (from the cluster state) has sent a
  summary for ``T`` or for a later tick (each node's summaries arrive in order: one node is one
  key, so one partition), or as soon as a summary arrives for a tick later than
  ``T + lateness_s`` (a node that stopped reporting cannot hold planning back longer than that,
  in event time). Ticks complete in ascending order. Nodes with no summary in a completed tick
  are *missing* for it: never sources, never targets.
- ``lateness_s = 0`` is the plain rule "plan T when all ready nodes reported it or when any
  later tick arrives". It is not the default because node scrapes come through different
  partitions of ``cluster.metrics``, which a consumer may read far apart (a backlog, a replay):
  one node's next tick then routinely arrives before another node's current one.
- With no known ready node, only the lateness bound completes a tick.
- A summary for a tick at or before the last completed tick is late and dropped (counted in
  :attr:`TickAssembler.late`). At most ``max_pending`` ticks are held open (bounded memory).

The output depends only on the input order, never on wall time, so replay is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.core.messages import NodeSummary


@dataclass
class TickAssembler:
    tick_s: float = 0.0
    lateness_s: float = 60.0
    max_pending: int = 64
    pending: dict[float, dict[str, NodeSummary]] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)  # node -> latest tick it reported
    last_completed: float | None = None
    late: int = 0
    _lagging: str | None = field(default=None, init=False, repr=False, compare=False)  # see _all_reported

    def tick_of(self, ts: float) -> float:
        return math.floor(ts / self.tick_s) * self.tick_s if self.tick_s > 0 else ts

    def add(self, s: NodeSummary, ready_nodes: Iterable[str]) -> list[tuple[float, dict[str, NodeSummary]]]:
        """Add one summary; return the ticks it completes, oldest first."""
        t = self.tick_of(s.ts)
        if self.last_completed is not None and t <= self.last_completed:
            self.late += 1
            return []
        self.pending.setdefault(t, {})[s.node] = s
        self.seen[s.node] = max(t, self.seen.get(s.node, t))
        return self._complete(ready_nodes)

    def recheck(self, ready_nodes: Iterable[str]) -> list[tuple[float, dict[str, NodeSummary]]]:
        """Complete what can be completed after the set of ready nodes changed (e.g. a node was deleted)."""
        return self._complete(ready_nodes)

    def forget(self, node: str) -> None:
        self.seen.pop(node, None)

    def _complete(self, ready_nodes: Iterable[str]) -> list[tuple[float, dict[str, NodeSummary]]]:
        if not self.pending:
            return []
        ready = list(ready_nodes)
        newest = max(self.pending)
        done: list[tuple[float, dict[str, NodeSummary]]] = []
        for pt in sorted(self.pending):
            overflow = len(self.pending) - len(done) > self.max_pending
            if newest > pt + self.lateness_s or overflow or self._all_reported(pt, ready):
                done.append((pt, self.pending[pt]))
            else:
                break
        for pt, _ in done:
            del self.pending[pt]
            self.last_completed = pt
        return done

    def _all_reported(self, pt: float, ready: list[str]) -> bool:
        """Has every node of ``ready`` reported ``pt`` or a later tick (``pt`` <= the nodes' watermark)?

        The last node found behind is remembered and asked first: while it still is, the answer is no at
        once (a summary completes nothing until its tick's last node reported). Otherwise the nodes are
        scanned from the end of ``ready``, so with summaries arriving in node order a scan stops at the
        first node it asks and only the tick's last summary scans them all."""
        if not ready:
            return False  # no known ready node: only the lateness bound completes a tick
        seen, lag = self.seen, self._lagging
        if lag is not None and seen.get(lag, -math.inf) < pt and lag in ready:
            return False
        for n in reversed(ready):
            if seen.get(n, -math.inf) < pt:
                self._lagging = n
                return False
        self._lagging = None
        return True
