"""A pod annotation after a reconcile that changed nothing skips the ReplicaSet controller and the scheduler
(``Cluster.update_pod_meta``): the cluster must evolve exactly as with a full reconcile after every change."""

from __future__ import annotations

import random
from typing import Any

from kubesim.model import DELETION_COST, Cluster
from kubesim.scenario import load_scenario
from tests.test_kubesim_fleet import app, doc, elastic_groups


class FullReconcile(Cluster):
    """Every reconcile in full, and the usage arrays rebuilt after every pod change, as before the shortcuts."""

    def reconcile(self, *, settled: bool = False) -> None:
        super().reconcile()

    def update_pod_meta(self, namespace: str, name: str, *, labels: dict | None = None,
                        annotations: dict | None = None) -> Any:
        out = super().update_pod_meta(namespace, name, labels=labels, annotations=annotations)
        self._struct_dirty = True
        return out


def _scenario() -> Any:
    ph = app("placeholder", replicas=4, priority=-1, startup_s=0, requests={"cpu": "3", "memory": "1Gi"},
             demand={"cpu": 0}, tolerations=[{"key": "kubesim.io/elastic", "operator": "Exists"}])
    web = app("web", replicas=5, startup_s=20, requests={"cpu": "1", "memory": "1Gi"}, pdb={"maxUnavailable": 1},
              topology_spread=[{"max_skew": 1, "when_unsatisfiable": "DoNotSchedule"}])
    api = app("api", replicas=3, startup_s=0, requests={"cpu": "0.5", "memory": "1Gi"}, pdb={"minAvailable": "50%"})
    return load_scenario(doc([ph, web, api], groups=elastic_groups(max_nodes=4)))


def _run(cls: type[Cluster], seed: int) -> tuple[list[tuple], list[tuple], int]:
    c = cls(_scenario())
    events: list[tuple] = []
    c.listeners.append(lambda et, res, obj: events.append((et, res, getattr(obj, "name", ""), obj.rv)))
    settled = 0
    usage: list[tuple] = []  # after every step: what the usage model computed (from its per-pod arrays)
    rng = random.Random(seed)
    for _ in range(120):
        r = rng.random()
        pods = sorted(c.pods)
        if r < 0.55 and pods:  # a batch of annotations, as annotate-pods / scale-in victims
            for key in rng.sample(pods, min(len(pods), rng.randint(1, 6))):
                ann = dict(c.pods[key].annotations)
                if rng.random() < 0.3:
                    ann.pop(DELETION_COST, None)
                else:
                    ann[DELETION_COST] = str(rng.randint(-100, 100))
                before = c._settled == c.rv
                c.update_pod_meta(*key, annotations=ann)
                settled += before and cls is Cluster
        elif r < 0.7:
            c.set_replicas("shop", rng.choice(["web", "api", "placeholder"]), rng.randint(0, 7))
        elif r < 0.8 and pods:
            c.evict(*rng.choice(pods))
        elif r < 0.85 and pods:  # a label change always reconciles in full
            key = rng.choice(pods)
            c.update_pod_meta(*key, labels={**c.pods[key].labels, "touched": "yes"})
        else:
            c.step()
            usage.append((dict(c.sla), [(p.name, p.usage_cpu, p.usage_memory) for p in c.pods.values()],
                          [(n.name, n.usage_cpu, n.usage_memory) for n in c.nodes.values()], dict(c.counters)))
    state = sorted((k, p.node_name, p.phase, p.ready, tuple(sorted(p.annotations.items())))
                   for k, p in c.pods.items())
    state += sorted((k, pdb.disruptions_allowed, pdb.current_healthy) for k, pdb in c.pdbs.items())
    return events, [*state, *usage], settled


def test_annotations_after_a_settled_reconcile_change_nothing_else() -> None:
    shortcuts = 0
    for seed in range(6):
        ev_fast, st_fast, n = _run(Cluster, seed)
        ev_full, st_full, _ = _run(FullReconcile, seed)
        assert ev_fast == ev_full, seed
        assert st_fast == st_full, seed
        shortcuts += n
    assert shortcuts > 50  # the shortcut was taken (the comparison is not vacuous)


def test_settled_is_forgotten_after_any_change() -> None:
    c = Cluster(_scenario())
    key = next(k for k, p in c.pods.items() if p.app == "web")
    c.update_pod_meta(*key, annotations={DELETION_COST: "1"})
    assert c._settled == c.rv  # nothing left to do
    c.set_replicas("shop", "web", 9)  # pods created (some Pending): the scheduler had work
    assert c._settled is None
    rv = c.rv
    c.update_pod_meta(*key, labels={"app": "web", "x": "y"})  # labels: always in full (and nothing to do)
    assert c.rv > rv and c._settled == c.rv
