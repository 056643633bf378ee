"""deploy/: every manifest against the Kubernetes schemas, RBAC least privilege held exactly,
and the Deployments consistent with kubetide's commands, ports and config."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubetide.cli import COMMANDS
from kubetide.metrics import METRICS_PORTS

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30"
NAMESPACE = "kubetide"

# (apiGroup, resource, verb) that each worker may use: exactly these, nothing more.
RBAC: dict[str, set[tuple[str, str, str]]] = {
    "kubetide-collector": {
        *{("", r, v) for r in ("pods", "nodes", "namespaces") for v in ("get", "list", "watch")},
        *{("policy", "poddisruptionbudgets", v) for v in ("get", "list", "watch")},
        *{("apps", r, v) for r in ("deployments", "replicasets") for v in ("get", "list", "watch")},
        *{("metrics.k8s.io", r, v) for r in ("pods", "nodes") for v in ("get", "list")},
        ("custom.metrics.k8s.io", "pods/cpi", "get"), ("custom.metrics.k8s.io", "pods/latency_ms", "get"),
    },
    "kubetide-actuator": {
        ("", "pods", "get"), ("", "pods", "list"), ("", "pods", "patch"), ("", "pods/eviction", "create"),
        ("", "nodes", "list"), ("", "nodes", "patch"), ("", "namespaces", "get"), ("", "namespaces", "list"),
        ("policy", "poddisruptionbudgets", "list"), ("apps", "deployments", "get"), ("apps", "deployments", "patch"),
        ("apps", "deployments", "list"),  # `kubetide hints` (placement hints): the Deployments of opted-in namespaces
        ("apps", "deployments/scale", "get"), ("apps", "deployments/scale", "patch"),
        ("apps", "deployments/scale", "update"),
    },
}
WORKERS = {"kubetide-collector": ("collector", 1), "kubetide-streams": ("streams", 2),
           "kubetide-actuator": ("actuator", 1)}


def _docs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


DOCS = _docs()


def objects(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in DOCS if d["kind"] == kind}


def assert_valid_kubetide_config(config: Mapping[str, Any]) -> None:
    """The config builds every worker's settings (the same code the workers run at start)."""
    from kubetide.config import build, section
    from streams.core.settings import StreamsSettings
    from workers.actuator import ActuatorSettings
    from workers.collector import CollectorSettings

    assert section(config, "kafka").get("bootstrap_servers"), "kafka.bootstrap_servers is missing"
    assert set(config) <= {"kafka", "collector", "streams", "actuator"}, f"unknown sections: {set(config)}"
    build(CollectorSettings, section(config, "collector"), "collector")
    build(ActuatorSettings, section(config, "actuator"), "actuator")
    StreamsSettings.from_config(config)


@pytest.mark.parametrize(("file", "doc"), DOCS, ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCS])
def test_manifest_validates_against_the_kubernetes_schema(file, doc):
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{file}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_kustomization_lists_every_manifest():
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    files = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


def test_everything_namespaced_lives_in_the_kubetide_namespace():
    assert NAMESPACE in objects("Namespace")
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for file, doc in DOCS:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{file}: {doc['kind']}/{doc['metadata']['name']}"


def _granted(role: dict) -> set[tuple[str, str, str]]:
    out = set()
    for rule in role["rules"]:
        assert "resourceNames" not in rule or rule["resourceNames"]
        assert not rule.get("nonResourceURLs"), "no non-resource URLs"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def test_rbac_has_no_wildcards():
    for kind in ("ClusterRole", "Role"):
        for name, role in objects(kind).items():
            for rule in role.get("rules", []):
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in (rule.get(field) or []), f"{kind}/{name}: wildcard in {field}"
                    assert not any("*" in v for v in rule.get(field) or []), f"{kind}/{name}: wildcard in {field}"


def test_rbac_is_exactly_least_privilege():
    roles = {**objects("ClusterRole"), **objects("Role")}
    assert set(roles) == set(RBAC), "a role for the stream workers, or an unknown role, appeared"
    for name, expected in RBAC.items():
        granted = _granted(roles[name])
        assert granted == expected, f"{name}: extra {sorted(granted - expected)}, missing {sorted(expected - granted)}"
    for role in roles.values():
        for _group, resource, verb in _granted(role):
            assert verb not in ("delete", "deletecollection", "escalate", "bind", "impersonate"), (role, resource)
            assert resource not in ("secrets", "configmaps", "serviceaccounts/token"), (role, resource)


def test_bindings_tie_each_role_to_its_own_service_account():
    accounts = objects("ServiceAccount")
    bindings = {**objects("ClusterRoleBinding"), **objects("RoleBinding")}
    assert set(bindings) == set(RBAC)
    for name, binding in bindings.items():
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]
        assert name in accounts
    streams = accounts["kubetide-streams"]
    assert streams.get("automountServiceAccountToken") is False


def test_deployments_match_their_workers():
    deployments = objects("Deployment")
    assert set(deployments) == set(WORKERS)
    services = objects("Service")
    config_name = next(iter(objects("ConfigMap")))
    for name, (command, replicas) in WORKERS.items():
        dep = deployments[name]
        spec = dep["spec"]
        assert spec["replicas"] == replicas, name
        pod = spec["template"]
        assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        pspec = pod["spec"]
        assert pspec["serviceAccountName"] == name
        assert pspec["securityContext"]["runAsNonRoot"] is True
        (container,) = pspec["containers"]
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "memory" in container["resources"]["limits"] and "cpu" in container["resources"]["requests"]
        args = container["args"]
        assert args[0] == command
        port = int(args[args.index("--metrics-port") + 1])
        assert port == METRICS_PORTS[command]
        assert container["ports"] == [{"name": "metrics", "containerPort": port}]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        config_path = args[args.index("--config") + 1]
        volume = mounts[str(Path(config_path).parent)]
        assert {"name": volume, "configMap": {"name": config_name}} in pspec["volumes"]
        svc = services[name]
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert svc["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics"}]


def test_deployment_args_parse_with_the_kubetide_commands():
    for name, dep in objects("Deployment").items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        module = importlib.import_module(COMMANDS[args[0]][0])
        parser = argparse.ArgumentParser(prog=f"kubetide {args[0]}", exit_on_error=False)
        module.add_arguments(parser)
        try:
            parser.parse_args(args[1:])
        except (argparse.ArgumentError, SystemExit) as exc:
            pytest.fail(f"{name}: `kubetide {' '.join(args)}` does not parse: {exc}")


def test_pdb_keeps_a_stream_worker_and_never_blocks_all():
    (pdb,) = objects("PodDisruptionBudget").values()
    streams = objects("Deployment")["kubetide-streams"]
    labels = streams["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < streams["spec"]["replicas"]


def test_configmap_holds_a_valid_kubetide_config():
    (cm,) = objects("ConfigMap").values()
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert_valid_kubetide_config(config)
    assert config["actuator"]["dry_run"] is True, "ship in dry-run"
    assert NAMESPACE in config["actuator"]["protected_namespaces"], "kubetide never evicts itself"


def test_configmap_and_compose_config_agree_except_kafka():
    (cm,) = objects("ConfigMap").values()
    k8s = yaml.safe_load(cm["data"]["config.yaml"])
    compose = yaml.safe_load((ROOT / "compose" / "kubetide.yaml").read_text())
    k8s.pop("kafka")
    compose.pop("kafka")
    assert k8s == compose
