"""Kubernetes label selectors (metav1.LabelSelector), shared by kubesim, the actuator and the planners."""

from __future__ import annotations

from collections.abc import Mapping


def selector_matches(selector: Mapping | None, labels: Mapping[str, str]) -> bool:
    """``matchLabels`` + ``matchExpressions`` (In / NotIn / Exists / DoesNotExist) against ``labels``: an empty
    selector matches everything, a null one nothing (as in PDBs and affinity terms); an unknown operator
    matches nothing (the safe side)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True
