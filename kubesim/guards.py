"""Watchers over a :class:`kubesim.model.Cluster` that check safety properties from the outside.

:class:`PdbGuard` is a cluster listener: after every removal of a *ready* pod it checks each
PodDisruptionBudget covering the pod, and records a violation when fewer healthy pods are left than
the budget requires. Chaos runs and the rebalance tests use it as the independent referee of
"kubetide never broke a PDB"; it reads kubesim's own state, not anything kubetide reports.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubesim.model import Cluster


class PdbGuard:
    """``with PdbGuard(cluster) as guard: ...`` (or ``attach()`` … ``detach()``), then ``guard.violations``
    (one message each)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.violations: list[str] = []

    def __call__(self, etype: str, resource: str, obj: Any) -> None:
        if resource != "pods" or etype != "DELETED" or not getattr(obj, "ready", False):
            return
        pods = self.cluster.pods.values()
        for pdb in self.cluster.pdbs.values():
            if pdb.desired_healthy and pdb.matches(obj):
                healthy = sum(1 for p in pods if p.ready and p is not obj and pdb.matches(p))
                if healthy < pdb.desired_healthy:
                    self.violations.append(f"{pdb.namespace}/{pdb.name}: {healthy} healthy < "
                                           f"{pdb.desired_healthy} after {obj.name}")

    def attach(self) -> PdbGuard:
        if self not in self.cluster.listeners:
            self.cluster.listeners.append(self)
        return self

    def detach(self) -> None:
        if self in self.cluster.listeners:
            self.cluster.listeners.remove(self)

    def __enter__(self) -> PdbGuard:
        return self.attach()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.detach()
