"""Placement hints: prevention instead of repair (pure; not a descheduling strategy, not in the registry).

From an app's profile (type ``cpu-bound`` / ``memory-bound``) and the apps it interferes with,
:func:`placement_patch` produces a JSON merge patch (RFC 7386) for the workload's pod template:

- the label ``kubetide.io/profile-type: <type>`` and a *preferred* pod anti-affinity on that label
  with the same value (weight ``same_type_weight``), so the scheduler spreads pods that compete for
  the same resource over nodes;
- a *preferred* pod anti-affinity on ``app_label In [<interfering apps>]`` (weight
  ``interference_weight``), so interfering apps are not placed together.

Opt-in per namespace: only namespaces listed in ``namespaces`` or labelled
``kubetide.io/placement-hints: "true"``. A merge patch replaces lists whole, so the patch carries
the template's existing preferred terms plus kubetide's (kubetide's own terms are recognised and
replaced, never duplicated). :func:`dry_run_diff` shows what the patch would change.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubetide.models import Profile

PROFILE_TYPE_LABEL = "kubetide.io/profile-type"
OPT_IN_LABEL = "kubetide.io/placement-hints"
HINT_TYPES = ("cpu-bound", "memory-bound")


@dataclass(frozen=True)
class PlacementSettings:
    namespaces: tuple[str, ...] = ()
    same_type_weight: int = 50
    interference_weight: int = 100
    topology_key: str = "kubernetes.io/hostname"
    app_label: str = "app"

    def validate(self) -> None:
        for f in ("same_type_weight", "interference_weight"):
            if not 1 <= getattr(self, f) <= 100:
                raise ValueError(f"{f}: must be in [1, 100] (a preferred term's weight)")
        if not self.topology_key:
            raise ValueError("topology_key: must not be empty")
        if not self.app_label:
            raise ValueError("app_label: must not be empty")


def opted_in(namespace: str, settings: PlacementSettings, namespace_labels: Mapping[str, str] | None = None) -> bool:
    return namespace in settings.namespaces or (namespace_labels or {}).get(OPT_IN_LABEL) == "true"


def _term(weight: int, key: str, values: list[str], topology_key: str) -> dict[str, Any]:
    return {"weight": weight, "podAffinityTerm": {
        "topologyKey": topology_key,
        "labelSelector": {"matchExpressions": [{"key": key, "operator": "In", "values": values}]}}}


def placement_patch(namespace: str, template: Mapping[str, Any], profile: Profile | None,
                    interfering_apps: Iterable[str], settings: PlacementSettings,
                    namespace_labels: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The JSON merge patch for ``template`` (a pod template: ``{"metadata": ..., "spec": ...}``),
    or None when the namespace has not opted in or nothing would change."""
    if not opted_in(namespace, settings, namespace_labels):
        return None
    ptype = profile.type if profile is not None and profile.type in HINT_TYPES else None
    own_app = profile.app if profile is not None else template.get("metadata", {}).get("labels", {}).get(
        settings.app_label)
    others = sorted({a for a in interfering_apps if a and a != own_app}
                    | {a for a in (profile.interferes_with if profile else []) if a and a != own_app})
    spec = template.get("spec", {}) or {}
    existing = list(spec.get("affinity", {}).get("podAntiAffinity", {})
                    .get("preferredDuringSchedulingIgnoredDuringExecution", []) or [])
    kept = [t for t in existing if not _ours(t, settings)]
    ours = []
    if ptype:
        ours.append(_term(settings.same_type_weight, PROFILE_TYPE_LABEL, [ptype], settings.topology_key))
    if others:
        ours.append(_term(settings.interference_weight, settings.app_label, others, settings.topology_key))
    labels = dict(template.get("metadata", {}).get("labels", {}) or {})
    patch: dict[str, Any] = {}
    if ptype and labels.get(PROFILE_TYPE_LABEL) != ptype:
        patch["metadata"] = {"labels": {PROFILE_TYPE_LABEL: ptype}}
    elif not ptype and PROFILE_TYPE_LABEL in labels:
        patch["metadata"] = {"labels": {PROFILE_TYPE_LABEL: None}}
    terms = kept + ours
    if terms != existing:
        patch["spec"] = {"affinity": {"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": terms or None}}}
    return {"spec": {"template": patch}} if patch else None


def _ours(term: Mapping[str, Any], s: PlacementSettings) -> bool:
    """A term kubetide wrote: on the profile-type label, or on ``app_label`` with kubetide's interference weight."""
    pat = term.get("podAffinityTerm", {})
    exprs = pat.get("labelSelector", {}).get("matchExpressions", [])
    if pat.get("topologyKey") != s.topology_key or len(exprs) != 1:
        return False
    key = exprs[0].get("key")
    return key == PROFILE_TYPE_LABEL or (key == s.app_label and term.get("weight") == s.interference_weight)


def merge_patch(doc: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch (None deletes a key; lists are replaced whole)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(doc) if isinstance(doc, Mapping) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def dry_run_diff(deployment: Mapping[str, Any], patch: Mapping[str, Any] | None) -> str:
    """A unified diff of the deployment (as sorted JSON) before and after the patch ('' = no change)."""
    if not patch:
        return ""
    before = json.dumps(deployment, indent=2, sort_keys=True).splitlines()
    after = json.dumps(merge_patch(deployment, patch), indent=2, sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(before, after, "before", "after", lineterm=""))
