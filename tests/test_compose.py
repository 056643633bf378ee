"""compose/: the Compose file against the Compose Specification schema, and the stack's consistency
(images and builds, mounts, Prometheus targets vs services and ports, Grafana provisioning, KRaft)."""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from kubetide.cli import COMMANDS

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
WORKERS = {"collector": "collector", "streams-1": "streams", "streams-2": "streams", "actuator": "actuator"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _expand(value: str) -> str:
    """${VAR:-default} → default (what the file means with VAR unset)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)


def _flag(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


# ---------------------------------------------------------------- the specification

def test_compose_file_validates_against_the_compose_specification(compose):
    schema = json.loads((COMPOSE_DIR / "schema" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_vendored_schema_keeps_its_licence():
    assert "Apache License" in (COMPOSE_DIR / "schema" / "LICENSE").read_text()
    assert "compose-spec" in (COMPOSE_DIR / "README.md").read_text()


def _compose_binary() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if not shutil.which(cmd[0]):
            continue
        try:
            out = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if re.search(r"v?2\.\d+", out):
            return cmd
    return None


def test_docker_compose_config_accepts_the_file():
    cmd = _compose_binary()
    if cmd is None:
        pytest.skip("no Docker Compose v2 CLI installed (the schema test covers the specification)")
    proc = subprocess.run([*cmd, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True,
                          timeout=30, cwd=COMPOSE_DIR)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- consistency

def test_every_service_has_an_image_or_a_build_that_exists(services):
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name}: neither image nor build"
        build = svc.get("build")
        if build:
            context = (COMPOSE_DIR / build["context"]).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"


def test_dockerfile_installs_the_project_on_python_slim():
    text = (COMPOSE_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, flags=re.M)
    assert re.search(r"^RUN pip install \.", text, flags=re.M)
    assert re.search(r"^USER \d+", text, flags=re.M), "the image runs as a non-root user"
    for src in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, flags=re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which does not exist"
    packages = re.search(r'include = \[([^\]]*)\]', (ROOT / "pyproject.toml").read_text()).group(1)
    for pkg in re.findall(r'"(\w+)\*"', packages):
        assert f"COPY {pkg} " in text, f"the image misses package {pkg} listed in pyproject.toml"


def test_bind_mount_sources_exist(services):
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            source = _expand(vol).split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"{name}: mount source {source} missing"


def test_kafka_runs_in_kraft_mode_single_node(services):
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env), "KRaft mode: no ZooKeeper settings"
    node_id = env["KAFKA_NODE_ID"]
    voter_id, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert voter_id == node_id
    listeners = dict(reversed(item.split("://")) for item in env["KAFKA_LISTENERS"].split(","))
    by_name = {name: addr for addr, name in listeners.items()}
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in by_name and by_name[controller].endswith(":" + voter.split(":")[1])
    protocol_map = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(by_name) <= set(protocol_map)
    advertised = [item.split("://")[0] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    assert controller not in advertised and set(advertised) <= set(by_name)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID: a base64url 16-byte id"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    for name in (*WORKERS, "topics"):
        assert _flag(services[name]["command"], "--bootstrap-servers") == "kafka:9092", name


def test_topics_one_shot_runs_before_every_worker(services):
    topics = services["topics"]
    assert topics["command"][:2] == ["topics", "create"]
    assert topics.get("restart") == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in WORKERS:
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully", name


def test_workers_commands_are_kubetide_commands_with_valid_flags(services):
    """Each worker's command parses with that kubetide command's own argument parser."""
    for name, svc in {**{n: services[n] for n in WORKERS}, "topics": services["topics"],
                      "kubesim": services["kubesim"]}.items():
        command = svc["command"]
        assert command[0] in COMMANDS, f"{name}: {command[0]} is not a kubetide command"
        module = importlib.import_module(COMMANDS[command[0]][0])
        parser = argparse.ArgumentParser(prog=f"kubetide {command[0]}", exit_on_error=False)
        module.add_arguments(parser)
        try:
            parser.parse_args(command[1:])
        except (argparse.ArgumentError, SystemExit) as exc:
            pytest.fail(f"{name}: `kubetide {' '.join(command)}` does not parse: {exc}")


def test_two_stream_workers_with_distinct_ids(services):
    ids = {_flag(services[n]["command"], "--worker-id") for n in WORKERS if WORKERS[n] == "streams"}
    assert len(ids) == 2 and None not in ids


def test_prometheus_scrapes_every_worker_on_its_metrics_port(services):
    config = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]}
    expected = {f"{name}:{_flag(services[name]['command'], '--metrics-port')}" for name in WORKERS}
    assert None not in {_flag(services[n]["command"], "--metrics-port") for n in WORKERS}
    assert expected <= targets, f"not scraped: {expected - targets}"
    for target in targets - {"localhost:9090"}:
        host = target.split(":")[0]
        assert host in services, f"scrape target {target} names no service"
    prom = services["prometheus"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"] if v.startswith("./")}
    assert mounted["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]


def test_metrics_ports_match_the_catalogue_defaults(services):
    from kubetide.metrics import METRICS_PORTS

    for name, worker in WORKERS.items():
        assert int(_flag(services[name]["command"], "--metrics-port")) == METRICS_PORTS[worker]


def test_prometheus_config_passes_promtool():
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian package prometheus)")
    proc = subprocess.run([promtool, "check", "config", str(COMPOSE_DIR / "prometheus" / "prometheus.yml")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_provisioning_is_mounted_and_consistent(services):
    grafana = services["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    prov = COMPOSE_DIR / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert ds["type"] == "prometheus"
    host, port = ds["url"].removeprefix("http://").split(":")
    assert host in services and port == "9090"
    providers = yaml.safe_load((prov / "dashboards" / "kubetide.yml").read_text())["providers"]
    path = providers[0]["options"]["path"]
    assert mounts[path] == "./grafana/dashboards", "the dashboard provider reads where the dashboards are mounted"
    assert list((COMPOSE_DIR / "grafana" / "dashboards").glob("*.json"))
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (COMPOSE_DIR / "grafana" / "dashboards" / Path(home).name).is_file() and home.startswith(path)


def test_workers_get_the_config_and_a_kubeconfig(services):
    for name in ("collector", "actuator"):
        svc = services[name]
        mounts = {_expand(v).split(":")[1]: _expand(v).split(":")[0] for v in svc["volumes"]}
        assert mounts[svc["environment"]["KUBECONFIG"]] == "./kubesim.kubeconfig"
        assert mounts[svc["environment"]["KUBETIDE_CONFIG"]] == "./kubetide.yaml"
    kubeconfig = yaml.safe_load((COMPOSE_DIR / "kubesim.kubeconfig").read_text())
    server = kubeconfig["clusters"][0]["cluster"]["server"]
    kubesim = services["kubesim"]["command"]
    assert server == f"http://kubesim:{_flag(kubesim, '--port')}"
    assert _flag(kubesim, "--host") == "0.0.0.0"


def test_compose_config_file_is_valid_kubetide_config():
    from tests.test_deploy import assert_valid_kubetide_config

    assert_valid_kubetide_config(yaml.safe_load((COMPOSE_DIR / "kubetide.yaml").read_text()))
