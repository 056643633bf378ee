"""Shared by the dashboard tests: every panel query of the checked-in dashboards, and small helpers
for talking to a real Prometheus server (Debian package ``prometheus``) over its HTTP API."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from kubetide.broker import free_port

__all__ = ["DASHBOARD_DIR", "dashboard_queries", "free_port", "panels", "query", "stop"]

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "compose" / "grafana" / "dashboards"


def panels(items: list[dict]) -> list[dict]:
    """The panels of a dashboard, those inside rows included."""
    out = []
    for p in items:
        out.extend(panels(p.get("panels") or []) if p.get("type") == "row" else [p])
    return out


def dashboard_queries(rate_interval: str, interval: str = "15s") -> list[tuple[str, str, int, str]]:
    """(dashboard file, panel title, target index, PromQL) of every target of every dashboard, with
    Grafana's ``$__rate_interval`` and ``$__interval`` replaced by the given durations."""
    out = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        for panel in panels(json.loads(path.read_text())["panels"]):
            for i, target in enumerate(panel.get("targets") or []):
                expr = target["expr"].replace("$__rate_interval", rate_interval).replace("$__interval", interval)
                out.append((path.name, panel["title"], i, expr))
    return out


def query(url: str, **params: str) -> dict:
    """GET ``url`` with query parameters, the JSON answer (e.g. ``query(f"{prom}/api/v1/query", query=q)``)."""
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(params)}", timeout=10) as resp:
        return json.loads(resp.read())


def stop(proc: subprocess.Popen) -> None:
    """Terminate, then kill after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
