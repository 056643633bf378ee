"""Write a kubeconfig that points kubernetes clients at a kubesim server with a bearer token."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def kubeconfig_dict(server_url: str, token: str, namespace: str = "default", name: str = "kubesim") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": server_url}}],
        "users": [{"name": f"{name}-user", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-user", "namespace": namespace}}],
        "current-context": name,
    }


def write_kubeconfig(path: str | Path, server_url: str, token: str, namespace: str = "default") -> Path:
    """Write the kubeconfig (mode 0600) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(kubeconfig_dict(server_url, token, namespace), sort_keys=False))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path
