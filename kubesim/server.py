"""kubesim HTTP layer: the Kubernetes REST subset (aiohttp) over a :class:`~kubesim.model.Cluster`.

Usage in-process::

    async with KubeSim("demo", speed=0) as sim:
        ...  # sim.url, sim.kubeconfig_path, sim.cluster
        await sim.advance(60)

Every response carries ``Date`` = the virtual time.  Watches stream newline-delimited
JSON events; a watch from a resourceVersion older than the retained history gets an
``ERROR`` event with a 410 ``Expired`` Status (``POST /kubesim/v1/compact`` forces it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import os
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from kubetide.labels import selector_matches

from . import render
from .kubeconfig import write_kubeconfig
from .model import Cluster
from .scenario import Scenario, Taint, load_scenario
from .store import EventLog, SelectorError, make_filter

log = logging.getLogger("kubesim")

USER_KEY = web.RequestKey("user", str)
Authenticator = Callable[[str], "str | None"]
Authorizer = Callable[[str, str, str, "str | None"], bool]


CUSTOM_METRICS = {"cpi": "cpi", "latency_ms": "latency_ms"}  # metric name -> Pod attribute


def format_milli(v: float) -> str:
    """A quantity as the custom metrics adapters write it: whole numbers plain, else milli-units."""
    milli = round(float(v) * 1000.0)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details, self.headers = code, reason, message, details, headers


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message}
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = details
    body["code"] = code
    return body


def _json(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                        headers=headers)


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class Resource:
    name: str
    kind: str
    group: str
    version: str
    namespaced: bool
    verbs: tuple[str, ...]
    short: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.name}.{self.group}" if self.group else self.name

    def not_found(self, name: str) -> ApiError:
        details = {"name": name, "kind": self.name}
        if self.group:
            details["group"] = self.group
        return ApiError(404, "NotFound", f'{self.qualified} "{name}" not found', details)


RESOURCES = {
    "namespaces": Resource("namespaces", "Namespace", "", "v1", False, ("get", "list", "watch", "patch"), ("ns",)),
    "nodes": Resource("nodes", "Node", "", "v1", False, ("get", "list", "watch", "patch"), ("no",)),
    "pods": Resource("pods", "Pod", "", "v1", True, ("delete", "get", "list", "watch", "patch"), ("po",)),
    "deployments": Resource("deployments", "Deployment", "apps", "v1", True,
                            ("get", "list", "watch", "patch"), ("deploy",)),
    "replicasets": Resource("replicasets", "ReplicaSet", "apps", "v1", True, ("get", "list", "watch"), ("rs",)),
    "poddisruptionbudgets": Resource("poddisruptionbudgets", "PodDisruptionBudget", "policy", "v1", True,
                                     ("get", "list", "watch"), ("pdb",)),
    "horizontalpodautoscalers": Resource("horizontalpodautoscalers", "HorizontalPodAutoscaler", "autoscaling", "v2",
                                         True, ("get", "list", "watch"), ("hpa",)),
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic-merge directives like ``$patch`` are ignored)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: list) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, test (enough for labels/annotations/taints)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(422, "Invalid", f"invalid JSON patch operation: {op!r}")
        parts = _pointer(op["path"])
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        kind = op["op"]
        try:
            if kind in ("add", "replace"):
                if isinstance(parent, list):
                    if last == "-":
                        parent.append(op.get("value"))
                    elif kind == "add":
                        parent.insert(int(last), op.get("value"))
                    else:
                        parent[int(last)] = op.get("value")
                else:
                    parent[last] = op.get("value")
            elif kind == "remove":
                if isinstance(parent, list):
                    parent.pop(int(last))
                else:
                    del parent[last]
            elif kind == "test":
                cur = parent[int(last)] if isinstance(parent, list) else parent.get(last)
                if cur != op.get("value"):
                    raise ApiError(422, "Invalid", f"test operation failed at {op['path']}")
            else:
                raise ApiError(422, "Invalid", f"unsupported JSON patch op {kind!r}")
        except (KeyError, IndexError, ValueError) as e:
            raise ApiError(422, "Invalid", f"JSON patch failed at {op['path']}: {e}") from None
    return doc


class FaultInjector:
    """Seeded API faults on the Kubernetes API paths (``/api``, ``/apis``, ``/version``; never the
    ``/kubesim`` control API or the health checks). Configured with :meth:`configure` (keys below, all
    optional; ``{}`` turns everything off), the ``faults=`` option of :class:`KubeSim`, ``$KUBESIM_FAULTS``
    (JSON) or ``POST /kubesim/v1/faults`` (``GET`` shows the configuration and what was injected, counted
    by kind since the server started):

    - ``error_rate`` (0-1) with ``codes`` (default [500, 503]): answer a request with one of the codes
      before it is handled (a Status body; 503 carries ``Retry-After: 1``);
    - ``slow_ms`` with ``slow_rate`` (default 1.0): delay that share of requests by ``slow_ms``;
    - ``drop_watch_rate`` with ``drop_watch_after_s`` (default 2.0): drop that share of watch streams
      (the connection is aborted, no clean end) at a random time within ``drop_watch_after_s``;
    - ``conflict_rate``: answer that share of writes (POST/PUT/PATCH/DELETE) 409 Conflict, unhandled;
    - ``lost_response_rate``: handle that share of writes, then answer 503 instead of the real answer
      (the change is made but the client does not know: retries must not apply it twice);
    - ``seed`` (default 0): the random streams the rolls come from. Conflicts and lost answers roll on
      a stream of their own that only writes draw from, so for a given seed the n-th write meets the
      same fault however many reads (watches, lists, retries' GETs) came in between.
    """

    KEYS = ("error_rate", "codes", "slow_ms", "slow_rate", "drop_watch_rate", "drop_watch_after_s",
            "conflict_rate", "lost_response_rate", "seed")
    WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, spec: Mapping[str, Any] | None = None) -> None:
        self.injected: Counter[str] = Counter()
        self.configure(spec or {})

    def configure(self, spec: Mapping[str, Any]) -> dict:
        if not isinstance(spec, Mapping):
            raise ValueError("faults: expected a JSON object")
        unknown = sorted(set(spec) - set(self.KEYS))
        if unknown:
            raise ValueError(f"faults: unknown key(s) {', '.join(unknown)} (known: {', '.join(self.KEYS)})")

        def rate(key: str, default: float = 0.0) -> float:
            v = spec.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"faults.{key}: must be a number in [0, 1]")
            return float(v)

        def nonneg(key: str, default: float) -> float:
            v = spec.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= float(v) < 3600:
                raise ValueError(f"faults.{key}: must be a number >= 0")
            return float(v)

        codes = spec.get("codes", [500, 503])
        if not isinstance(codes, list) or not codes or not all(
                isinstance(c, int) and not isinstance(c, bool) and 400 <= c < 600 for c in codes):
            raise ValueError("faults.codes: must be a non-empty list of HTTP error codes (400-599)")
        seed = spec.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("faults.seed: must be an integer")
        self.error_rate, self.codes = rate("error_rate"), list(codes)
        self.slow_ms, self.slow_rate = nonneg("slow_ms", 0.0), rate("slow_rate", 1.0)
        self.drop_watch_rate, self.drop_watch_after_s = rate("drop_watch_rate"), nonneg("drop_watch_after_s", 2.0)
        self.conflict_rate, self.lost_response_rate = rate("conflict_rate"), rate("lost_response_rate")
        self.seed = seed
        self.rng = random.Random(seed)
        self.write_rng = random.Random(f"kubesim-faults-writes:{seed}")
        self.generation = getattr(self, "generation", 0) + 1  # watches under way roll again for a drop
        return self.config()

    def config(self) -> dict:
        return {"error_rate": self.error_rate, "codes": self.codes, "slow_ms": self.slow_ms,
                "slow_rate": self.slow_rate, "drop_watch_rate": self.drop_watch_rate,
                "drop_watch_after_s": self.drop_watch_after_s, "conflict_rate": self.conflict_rate,
                "lost_response_rate": self.lost_response_rate, "seed": self.seed}

    def snapshot(self) -> dict:
        return {"config": self.config(), "injected": dict(self.injected), "total": sum(self.injected.values())}

    def _roll(self, p: float, rng: random.Random | None = None) -> bool:
        return p > 0 and (rng or self.rng).random() < p

    async def before(self, request: web.Request) -> None:
        """Delay and/or refuse a request (raises :class:`ApiError`) before it is handled."""
        if self.slow_ms > 0 and self._roll(self.slow_rate):
            self.injected["slow"] += 1
            await asyncio.sleep(self.slow_ms / 1000.0)
        if self._roll(self.error_rate):
            code = self.rng.choice(self.codes)
            self.injected["error"] += 1
            self.injected[f"error_{code}"] += 1
            reason = {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests"}.get(code, "Fault")
            raise ApiError(code, reason, f"kubesim fault injection: {code} on {request.method} {request.path}",
                           headers={"Retry-After": "1"} if code in (429, 503) else None)
        if request.method in self.WRITES and self._roll(self.conflict_rate, self.write_rng):
            self.injected["conflict"] += 1
            raise ApiError(409, "Conflict", "kubesim fault injection: Operation cannot be fulfilled: the object "
                           "has been modified; please apply your changes to the latest version and try again")

    def lose_response(self, request: web.Request) -> bool:
        """True when this (handled) write's answer is to be replaced by a 503."""
        if request.method in self.WRITES and self._roll(self.lost_response_rate, self.write_rng):
            self.injected["lost_response"] += 1
            return True
        return False

    def watch_drop_deadline(self, now: float) -> float | None:
        """The loop time at which this watch stream is to be dropped, or None."""
        if self._roll(self.drop_watch_rate):
            return now + self.rng.uniform(0.0, self.drop_watch_after_s)
        return None


class KubeSim:
    """kubesim server (aiohttp) + virtual clock around a :class:`Cluster`.

    ``scenario``: a :class:`Scenario`, a scenario name/path, or a ready :class:`Cluster`.
    ``speed``: virtual seconds per real second (0 = manual clock; default: the scenario's).
    ``authenticate(token) -> user|None`` and ``authorize(user, verb, resource, namespace) -> bool``
    are the hooks for auth/RBAC (default: any bearer token, everything allowed).
    """

    def __init__(
        self,
        scenario: Scenario | Cluster | str | Path = "demo",
        *,
        speed: float | None = None,
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "kubesim-token",
        kubeconfig_path: str | Path | None = None,
        history_size: int = 1000,
        bookmark_interval_s: float = 30.0,
        retry_after_s: int = 10,
        authenticate: Authenticator | None = None,
        authorize: Authorizer | None = None,
        access_log: bool = False,
        faults: Mapping[str, Any] | None = None,
    ):
        if isinstance(scenario, Cluster):
            self.cluster = scenario
        else:
            sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
            self.cluster = Cluster(sc, seed=seed, retry_after_s=retry_after_s)
        self.scenario = self.cluster.scenario
        self.speed = self.scenario.speed if speed is None else float(speed)
        self.paused = False
        self.host, self.port = host, port
        self.token = token
        self._kubeconfig_arg = Path(kubeconfig_path) if kubeconfig_path else None
        self.kubeconfig_path: Path | None = None
        self.history_size = history_size
        self.bookmark_interval_s = bookmark_interval_s
        self.authenticate = authenticate or (lambda tok: "kubesim-user" if tok else None)
        self.authorize = authorize or (lambda user, verb, resource, ns: True)
        self.access_log = access_log
        self.events = EventLog(history_size)
        self.events.current_rv = self.events.compacted_rv = self.cluster.rv
        self.cluster.listeners.append(self._on_change)
        self._runner: web.AppRunner | None = None
        self._clock_task: asyncio.Task | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._closing = False
        env_faults = os.environ.get("KUBESIM_FAULTS")
        self.faults = FaultInjector(faults if faults is not None else (orjson.loads(env_faults) if env_faults
                                                                        else None))

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> KubeSim:
        app = self.make_app()
        self._runner = web.AppRunner(app, access_log=log if self.access_log else None,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        if self._kubeconfig_arg is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="kubesim-")
            self.kubeconfig_path = Path(self._tmpdir.name) / "kubeconfig"
        else:
            self.kubeconfig_path = self._kubeconfig_arg
        write_kubeconfig(self.kubeconfig_path, self.url, self.token)
        self._clock_task = asyncio.create_task(self._clock_loop(), name="kubesim-clock")
        log.info("kubesim listening on %s", self.url)
        return self

    async def stop(self) -> None:
        self._closing = True
        self.events.notify()
        if self._clock_task is not None:
            self._clock_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock_task
            self._clock_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    async def __aenter__(self) -> KubeSim:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def advance(self, seconds: float) -> None:
        """Advance the virtual clock (any mode) and let watchers see the events."""
        self.cluster.advance(seconds)
        await asyncio.sleep(0)

    def compact(self, keep: int = 0) -> int:
        """Drop watch history: a watch from an older resourceVersion then gets 410 Expired."""
        return self.events.compact(keep)

    async def _clock_loop(self) -> None:
        loop = asyncio.get_running_loop()
        res = self.scenario.resolution_s
        last = loop.time()
        debt = 0.0
        while True:
            interval = res / self.speed if self.speed > 0 else 0.1
            await asyncio.sleep(min(max(interval, 0.005), 0.1))
            now = loop.time()
            elapsed, last = now - last, now
            if self.paused or self.speed <= 0:
                debt = 0.0
                continue
            debt += elapsed * self.speed
            n = 0
            while debt >= res - 1e-9 and n < 2000:
                self.cluster.step(res)
                debt -= res
                n += 1
            if n >= 2000:
                debt = 0.0

    def _on_change(self, etype: str, resource: str, obj: Any) -> None:
        self.events.append(self.cluster.rv, etype, resource, render.render(resource, obj, self.cluster))

    # ------------------------------------------------------------------ app

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=4 * 2**20)
        app.on_response_prepare.append(self._on_prepare)
        r = app.router
        for slash in ("", "/"):  # kubernetes clients ask for "/api/", "/apis/apps/v1/", ...
            r.add_get("/version" + slash, self._version)
            r.add_get("/api" + slash, self._api_versions)
            r.add_get("/apis" + slash, self._api_groups)
            r.add_get("/api/v1" + slash, self._resource_list("v1"))
            r.add_get("/apis/{group}/{version}" + slash, self._group_resources)
        for res in RESOURCES.values():
            base = f"/api/{res.version}" if not res.group else f"/apis/{res.group}/{res.version}"
            if res.namespaced:
                r.add_get(f"{base}/{res.name}", self._h_list(res))
                r.add_get(f"{base}/namespaces/{{ns}}/{res.name}", self._h_list(res))
                item = f"{base}/namespaces/{{ns}}/{res.name}/{{name}}"
            else:
                r.add_get(f"{base}/{res.name}", self._h_list(res))
                item = f"{base}/{res.name}/{{name}}"
            r.add_get(item, self._h_get(res))
            if "patch" in res.verbs:
                r.add_patch(item, self._h_patch(res))
            if "delete" in res.verbs:
                r.add_delete(item, self._h_delete(res))
        r.add_post("/api/v1/namespaces/{ns}/pods/{name}/eviction", self._evict)
        scale = "/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale"
        r.add_get(scale, self._scale_get)
        r.add_put(scale, self._scale_put)
        r.add_patch(scale, self._scale_patch)
        m = "/apis/metrics.k8s.io/v1beta1"
        r.add_get(f"{m}/nodes", self._metrics_nodes)
        r.add_get(f"{m}/nodes/{{name}}", self._metrics_nodes)
        r.add_get(f"{m}/pods", self._metrics_pods)
        r.add_get(f"{m}/namespaces/{{ns}}/pods", self._metrics_pods)
        r.add_get(f"{m}/namespaces/{{ns}}/pods/{{name}}", self._metrics_pods)
        cm = "/apis/custom.metrics.k8s.io/v1beta2"
        r.add_get(f"{cm}/namespaces/{{ns}}/pods/{{name}}/{{metric}}", self._custom_metrics)
        r.add_get("/kubesim/v1/status", self._ctl_status)
        r.add_get("/kubesim/v1/truth", self._ctl_truth)
        r.add_post("/kubesim/v1/clock", self._ctl_clock)
        r.add_post("/kubesim/v1/compact", self._ctl_compact)
        r.add_get("/kubesim/v1/faults", self._ctl_faults)
        r.add_post("/kubesim/v1/faults", self._ctl_faults)
        r.add_get("/healthz", self._healthz)
        r.add_get("/readyz", self._healthz)
        return app

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = formatdate(self.cluster.t, usegmt=True)
        response.headers.setdefault("Cache-Control", "no-cache, private")

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        try:
            path = request.path
            if path.startswith(("/api", "/apis")) or path == "/version":
                auth = request.headers.get("Authorization", "")
                token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
                user = self.authenticate(token)
                if user is None:
                    raise ApiError(401, "Unauthorized", "Unauthorized")
                request[USER_KEY] = user
                verb = {"GET": "get", "PATCH": "patch", "PUT": "update", "DELETE": "delete",
                        "POST": "create"}.get(request.method, request.method.lower())
                ns = request.match_info.get("ns")
                if not self.authorize(user, verb, path, ns):
                    raise ApiError(403, "Forbidden", f'User "{user}" cannot {verb} {path}')
                await self.faults.before(request)
                response = await handler(request)
                if self.faults.lose_response(request):
                    raise ApiError(503, "ServiceUnavailable", "kubesim fault injection: the answer was lost "
                                   "(the request was handled)", headers={"Retry-After": "1"})
                return response
            return await handler(request)
        except ApiError as e:
            return _json(status_body(e.code, e.reason, e.message, e.details), e.code, e.headers)
        except web.HTTPNotFound:
            return _json(status_body(404, "NotFound", "the server could not find the requested resource",
                                     {}), 404)
        except web.HTTPMethodNotAllowed as e:
            return _json(status_body(405, "MethodNotAllowed",
                                     f"the server does not allow this method on the requested resource "
                                     f"({e.method})", {}), 405)

    # ------------------------------------------------------------------ discovery

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _version(self, request: web.Request) -> web.Response:
        return _json({"major": "1", "minor": "30", "gitVersion": "v1.30.0-kubesim", "gitCommit": "kubesim",
                      "gitTreeState": "clean", "buildDate": "2024-01-01T00:00:00Z", "goVersion": "go1.22.0",
                      "compiler": "gc", "platform": "linux/amd64"})

    async def _api_versions(self, request: web.Request) -> web.Response:
        return _json({"kind": "APIVersions", "versions": ["v1"],
                      "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                      "serverAddress": f"{self.host}:{self.port}"}]})

    _GROUPS = {"apps": ("v1",), "policy": ("v1",), "autoscaling": ("v2", "v1"), "metrics.k8s.io": ("v1beta1",),
               "custom.metrics.k8s.io": ("v1beta2",)}  # preferred version first

    async def _api_groups(self, request: web.Request) -> web.Response:
        groups = []
        for g, vs in self._GROUPS.items():
            gvs = [{"groupVersion": f"{g}/{v}", "version": v} for v in vs]
            groups.append({"name": g, "versions": gvs, "preferredVersion": gvs[0]})
        return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    def _resources_for(self, group_version: str) -> list[dict]:
        out = []
        for res in RESOURCES.values():
            if res.group_version == group_version:
                out.append({"name": res.name, "singularName": res.kind.lower(), "namespaced": res.namespaced,
                            "kind": res.kind, "verbs": list(res.verbs), "shortNames": list(res.short)})
        if group_version == "v1":
            out.append({"name": "pods/eviction", "singularName": "", "namespaced": True, "group": "policy",
                        "version": "v1", "kind": "Eviction", "verbs": ["create"]})
        if group_version == "apps/v1":
            out.append({"name": "deployments/scale", "singularName": "", "namespaced": True,
                        "group": "autoscaling", "version": "v1", "kind": "Scale",
                        "verbs": ["get", "patch", "update"]})
        if group_version == "metrics.k8s.io/v1beta1":
            out += [{"name": "nodes", "singularName": "", "namespaced": False, "kind": "NodeMetrics",
                     "verbs": ["get", "list"]},
                    {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics",
                     "verbs": ["get", "list"]}]
        if group_version == "custom.metrics.k8s.io/v1beta2":
            out += [{"name": f"pods/{m}", "singularName": "", "namespaced": True, "kind": "MetricValueList",
                     "verbs": ["get"]} for m in CUSTOM_METRICS]
        return out

    def _resource_list(self, gv: str):
        async def handler(request: web.Request) -> web.Response:
            return _json({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                          "resources": self._resources_for(gv)})
        return handler

    async def _group_resources(self, request: web.Request) -> web.Response:
        group, version = request.match_info["group"], request.match_info["version"]
        if version not in self._GROUPS.get(group, ()):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return await self._resource_list(f"{group}/{version}")(request)

    # ------------------------------------------------------------------ objects

    def _objects(self, res: Resource) -> list:
        c = self.cluster
        return list({
            "namespaces": c.namespaces, "nodes": c.nodes, "pods": c.pods, "deployments": c.deployments,
            "replicasets": c.replicasets, "poddisruptionbudgets": c.pdbs, "horizontalpodautoscalers": c.hpas,
        }[res.name].values())

    def _lookup(self, res: Resource, ns: str | None, name: str):
        c = self.cluster
        table = {"namespaces": c.namespaces, "nodes": c.nodes, "pods": c.pods, "deployments": c.deployments,
                 "replicasets": c.replicasets, "poddisruptionbudgets": c.pdbs,
                 "horizontalpodautoscalers": c.hpas}[res.name]
        obj = table.get((ns, name) if res.namespaced else name)
        if obj is None:
            raise res.not_found(name)
        return obj

    def _render(self, res: Resource, obj) -> dict:
        return render.render(res.name, obj, self.cluster)

    @staticmethod
    def _filter(request: web.Request, ns: str | None):
        try:
            return make_filter(ns, request.query.get("labelSelector"), request.query.get("fieldSelector"))
        except SelectorError as e:
            raise ApiError(400, "BadRequest", str(e)) from None

    def _h_list(self, res: Resource):
        async def handler(request: web.Request) -> web.StreamResponse:
            ns = request.match_info.get("ns")
            match = self._filter(request, ns)
            if _truthy(request.query.get("watch")):
                return await self._watch(request, res, match)
            items = [self._render(res, o) for o in self._objects(res)]
            items = [i for i in items if match(i)]
            items.sort(key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"]))
            for i in items:
                i.pop("kind", None)
                i.pop("apiVersion", None)
            meta: dict[str, Any] = {"resourceVersion": str(self.cluster.rv)}
            items = self._paginate(request, items, meta)
            return _json({"kind": f"{res.kind}List", "apiVersion": res.group_version, "metadata": meta,
                          "items": items})
        return handler

    def _paginate(self, request: web.Request, items: list, meta: dict) -> list:
        q = request.query
        start = 0
        if q.get("continue"):
            try:
                tok = orjson.loads(base64.urlsafe_b64decode(q["continue"].encode()))
                start = int(tok["start"])
                meta["resourceVersion"] = str(tok["rv"])
            except Exception:
                raise ApiError(400, "BadRequest", "continue key is not valid") from None
            if self.events.is_expired(int(tok["rv"])):
                raise ApiError(410, "Expired", "The provided continue parameter is too old to display a "
                               "consistent list result. You can start a new list without the continue "
                               "parameter.", {})
        limit = int(q.get("limit") or 0)
        if limit > 0 and start + limit < len(items):
            tok = {"rv": int(meta["resourceVersion"]), "start": start + limit}
            meta["continue"] = base64.urlsafe_b64encode(orjson.dumps(tok)).decode()
            meta["remainingItemCount"] = len(items) - start - limit
            return items[start:start + limit]
        return items[start:]

    def _h_get(self, res: Resource):
        async def handler(request: web.Request) -> web.Response:
            obj = self._lookup(res, request.match_info.get("ns"), request.match_info["name"])
            return _json(self._render(res, obj))
        return handler

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise ApiError(400, "BadRequest", f"invalid JSON body: {e}") from None

    async def _patched(self, request: web.Request, current: dict) -> dict:
        body = await self._body(request)
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "json patch must be a list of operations")
            return json_patch(current, body)
        if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "merge patch must be a JSON object")
            return merge_patch(current, body)
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                       f"accepted media types include: application/json-patch+json, "
                       f"application/merge-patch+json, application/strategic-merge-patch+json ({ctype})")

    @staticmethod
    def _str_map(v: Any, field: str) -> dict[str, str]:
        if v is None:
            return {}
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            raise ApiError(422, "Invalid", f"{field}: Invalid value: must be a map of strings")
        return dict(v)

    def _h_patch(self, res: Resource):
        async def handler(request: web.Request) -> web.Response:
            ns, name = request.match_info.get("ns"), request.match_info["name"]
            obj = self._lookup(res, ns, name)
            current = self._render(res, obj)
            new = await self._patched(request, current)
            meta = new.get("metadata") or {}
            if str(meta.get("resourceVersion")) != current["metadata"]["resourceVersion"]:
                # a resourceVersion in the patch is a precondition, as in the apiserver
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": the '
                               "object has been modified; please apply your changes to the latest version and "
                               "try again", {"name": name, "kind": res.name, **({"group": res.group}
                                                                                  if res.group else {})})
            labels = self._str_map(meta.get("labels"), "metadata.labels")
            annotations = self._str_map(meta.get("annotations"), "metadata.annotations")
            c = self.cluster
            if res.name == "nodes":
                spec = new.get("spec") or {}
                taints = []
                for i, t in enumerate(spec.get("taints") or []):
                    if not isinstance(t, dict) or not t.get("key") or t.get("effect") not in (
                            "NoSchedule", "PreferNoSchedule", "NoExecute"):
                        raise ApiError(422, "Invalid", f'Node "{name}" is invalid: spec.taints[{i}]: '
                                       f"Invalid value: {t!r}")
                    taints.append(Taint(str(t["key"]), str(t.get("value") or ""), t["effect"]))
                unsched = spec.get("unschedulable", False)
                if not isinstance(unsched, bool):
                    raise ApiError(422, "Invalid", f'Node "{name}" is invalid: spec.unschedulable: '
                                   f"Invalid value: {unsched!r}")
                c.update_node(name, labels=labels, annotations=annotations, taints=taints,
                              unschedulable=unsched)
            elif res.name == "pods":
                c.update_pod_meta(ns, name, labels=labels, annotations=annotations)
            elif res.name == "namespaces":
                c.update_namespace_meta(name, labels=labels, annotations=annotations)
            elif res.name == "deployments":
                template = self._template_of(name, new)
                c.update_deployment_meta(ns, name, labels=labels, annotations=annotations)
                replicas = (new.get("spec") or {}).get("replicas")
                if replicas is not None:
                    self._set_replicas(ns, name, replicas)
                if template != self._template_of(name, current):
                    c.update_deployment_template(ns, name, labels=template[0], annotations=template[1],
                                                 affinity=template[2])
            return _json(self._render(res, self._lookup(res, ns, name)))
        return handler

    def _template_of(self, name: str, dep: dict) -> tuple[dict[str, str], dict[str, str], dict | None]:
        """(labels, annotations, affinity) of a Deployment's spec.template, validated as the apiserver does
        for the parts kubesim models (other template fields are not modelled and are ignored)."""
        tmpl = (dep.get("spec") or {}).get("template") or {}
        tmeta = tmpl.get("metadata") or {}
        labels = self._str_map(tmeta.get("labels"), "spec.template.metadata.labels")
        annotations = self._str_map(tmeta.get("annotations"), "spec.template.metadata.annotations")
        if not selector_matches((dep.get("spec") or {}).get("selector") or {}, labels):
            raise ApiError(422, "Invalid", f'Deployment.apps "{name}" is invalid: spec.template.metadata.labels: '
                           f"Invalid value: {labels!r}: `selector` does not match template `labels`")
        affinity = (tmpl.get("spec") or {}).get("affinity")
        if affinity is not None and not isinstance(affinity, dict):
            raise ApiError(422, "Invalid", f'Deployment.apps "{name}" is invalid: spec.template.spec.affinity: '
                           f"Invalid value: {affinity!r}")
        for kind in ("podAntiAffinity", "podAffinity"):
            terms = ((affinity or {}).get(kind) or {}).get("preferredDuringSchedulingIgnoredDuringExecution") or []
            for i, t in enumerate(terms):
                where = f"spec.template.spec.affinity.{kind}.preferredDuringSchedulingIgnoredDuringExecution[{i}]"
                w = t.get("weight") if isinstance(t, dict) else None
                if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= 100:
                    raise ApiError(422, "Invalid", f'Deployment.apps "{name}" is invalid: {where}.weight: '
                                   f"Invalid value: {w!r}: must be in the range 1-100")
                if not ((t.get("podAffinityTerm") or {}).get("topologyKey")):
                    raise ApiError(422, "Invalid", f'Deployment.apps "{name}" is invalid: '
                                   f"{where}.podAffinityTerm.topologyKey: Required value: can not be empty")
        return labels, annotations, affinity or None

    def _h_delete(self, res: Resource):
        async def handler(request: web.Request) -> web.Response:
            ns, name = request.match_info.get("ns"), request.match_info["name"]
            obj = self._lookup(res, ns, name)
            body = await self._body(request) or {}
            dry = request.query.get("dryRun") == "All" or "All" in (body.get("dryRun") or [])
            rendered = self._render(res, obj)
            if not dry:
                self.cluster.delete_pod(ns, name)
                rendered["metadata"]["deletionTimestamp"] = render.ts(self.cluster.t)
                rendered["metadata"]["deletionGracePeriodSeconds"] = 0
            return _json(rendered)
        return handler

    # ------------------------------------------------------------------ eviction

    async def _evict(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "not a Eviction object")
        if (body.get("metadata") or {}).get("name") != name:
            raise ApiError(400, "BadRequest", "name in URL does not match name in Eviction object")
        opts = body.get("deleteOptions") or {}
        dry = request.query.get("dryRun") == "All" or "All" in (opts.get("dryRun") or [])
        result = self.cluster.evict(ns, name, dry_run=dry)
        if result.code == 201:
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                          "code": 201}, 201)
        if result.code == 404:
            raise RESOURCES["pods"].not_found(name)
        details: dict[str, Any] = {}
        headers = None
        if result.causes:
            details["causes"] = list(result.causes)
        if result.retry_after_s:
            details["retryAfterSeconds"] = result.retry_after_s
            headers = {"Retry-After": str(result.retry_after_s)}
        raise ApiError(result.code, result.reason, result.message, details or None, headers)

    # ------------------------------------------------------------------ scale

    def _deployment(self, request: web.Request):
        return self._lookup(RESOURCES["deployments"], request.match_info["ns"], request.match_info["name"])

    def _set_replicas(self, ns: str, name: str, replicas: Any) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: '
                           f"Invalid value: {replicas!r}: must be greater than or equal to 0")
        self.cluster.set_replicas(ns, name, replicas)

    async def _scale_get(self, request: web.Request) -> web.Response:
        return _json(render.scale(self._deployment(request)))

    async def _scale_put(self, request: web.Request) -> web.Response:
        dep = self._deployment(request)
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "not a Scale object")
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != str(dep.rv):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on deployments.apps "{dep.name}": '
                           "the object has been modified; please apply your changes to the latest version "
                           "and try again", {"name": dep.name, "group": "apps", "kind": "deployments"})
        self._set_replicas(dep.namespace, dep.name, (body.get("spec") or {}).get("replicas", 0))
        return _json(render.scale(dep))

    async def _scale_patch(self, request: web.Request) -> web.Response:
        dep = self._deployment(request)
        new = await self._patched(request, render.scale(dep))
        self._set_replicas(dep.namespace, dep.name, (new.get("spec") or {}).get("replicas", 0))
        return _json(render.scale(dep))

    # ------------------------------------------------------------------ metrics.k8s.io

    async def _metrics_nodes(self, request: web.Request) -> web.Response:
        c = self.cluster
        name = request.match_info.get("name")
        if name is not None:
            node = c.nodes.get(name)
            if node is None:
                raise ApiError(404, "NotFound", f'nodemetrics.metrics.k8s.io "{name}" not found',
                               {"name": name, "group": "metrics.k8s.io", "kind": "nodemetrics"})
            return _json(render.node_metrics(node, c))
        match = self._filter(request, None)
        items = [render.node_metrics(n, c) for n in sorted(c.nodes.values(), key=lambda n: n.name)]
        return _json({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
                      "items": [i for i in items if match(i)]})

    async def _metrics_pods(self, request: web.Request) -> web.Response:
        c = self.cluster
        ns, name = request.match_info.get("ns"), request.match_info.get("name")
        if name is not None:
            pod = c.pods.get((ns, name))
            if pod is None or pod.node_name is None or pod.phase != "Running":
                raise ApiError(404, "NotFound", f'podmetrics.metrics.k8s.io "{ns}/{name}" not found',
                               {"name": name, "group": "metrics.k8s.io", "kind": "podmetrics"})
            return _json(render.pod_metrics(pod, c))
        match = self._filter(request, ns)
        pods = sorted((p for p in c.pods.values() if p.node_name and p.phase == "Running"),
                      key=lambda p: (p.namespace, p.name))
        items = [render.pod_metrics(p, c) for p in pods]
        return _json({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
                      "items": [i for i in items if match(i)]})

    # ------------------------------------------------------------------ custom.metrics.k8s.io

    async def _custom_metrics(self, request: web.Request) -> web.Response:
        """Per-pod CPI and latency as a custom-metrics adapter (prometheus-adapter) serves them:
        ``GET /apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/{name|*}/{metric}`` with an optional
        ``labelSelector`` (or ``metricLabelSelector``, ignored).  As in the adapter, the namespace is a literal
        (``*`` is not a wildcard for namespaces: it names no pods, so the answer is 404) and a metric with no
        series is a 404 NotFound."""
        c = self.cluster
        ns, name, metric = request.match_info["ns"], request.match_info["name"], request.match_info["metric"]
        attr = CUSTOM_METRICS.get(metric)
        not_found = ApiError(404, "NotFound", f"the server could not find the metric {metric} for pods",
                             {"group": "custom.metrics.k8s.io", "kind": "pods"})
        if attr is None:
            raise not_found
        try:
            lsel = make_filter(ns, request.query.get("labelSelector"), None)
        except SelectorError as e:
            raise ApiError(400, "BadRequest", str(e)) from None
        if name == "*":
            pods = [p for p in c.pods.values() if p.namespace == ns]
        else:
            pod = c.pods.get((ns, name))
            pods = [pod] if pod is not None else []
        pods = [p for p in pods if p.node_name and p.phase == "Running" and not p.daemon
                and lsel({"metadata": {"namespace": p.namespace, "labels": p.labels}})]
        if not pods:
            raise not_found
        stamp = render.ts(c.t)
        window = round(c.scenario.resolution_s)
        items = [{"describedObject": {"kind": "Pod", "namespace": p.namespace, "name": p.name, "apiVersion": "/v1"},
                  "metric": {"name": metric, "selector": None},
                  "timestamp": stamp, "windowSeconds": window,
                  "value": format_milli(getattr(p, attr))}
                 for p in sorted(pods, key=lambda p: p.name)]
        return _json({"kind": "MetricValueList", "apiVersion": "custom.metrics.k8s.io/v1beta2",
                      "metadata": {}, "items": items})

    # ------------------------------------------------------------------ watch

    async def _watch(self, request: web.Request, res: Resource, match) -> web.StreamResponse:
        q = request.query
        rv_param = q.get("resourceVersion") or ""
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else 1800.0
            start_rv = int(rv_param) if rv_param else 0
        except ValueError:
            raise ApiError(400, "BadRequest", "invalid resourceVersion or timeoutSeconds") from None
        bookmarks = _truthy(q.get("allowWatchBookmarks"))
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        drop_at = self.faults.watch_drop_deadline(loop.time())  # fault injection: None, or when to drop
        drop_gen = self.faults.generation
        next_bookmark = loop.time() + self.bookmark_interval_s

        async def send(etype: str, obj: dict) -> None:
            await resp.write(orjson.dumps({"type": etype, "object": obj}) + b"\n")

        try:
            if start_rv == 0:
                objs = [self._render(res, o) for o in self._objects(res)]
                last = self.cluster.rv
                for o in sorted(objs, key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"])):
                    if match(o):
                        await send("ADDED", o)
            else:
                last = start_rv
            while not self._closing:
                waiter = self.events.waiter()
                if self.events.is_expired(last):
                    oldest = self.events.compacted_rv + 1
                    await send("ERROR", status_body(410, "Expired",
                                                    f"too old resource version: {last} ({oldest})"))
                    break
                for ev in self.events.since(last):
                    last = ev.rv
                    if ev.resource != res.name:
                        continue
                    etype = ev.type
                    if etype == "MODIFIED":
                        now_m = match(ev.obj)
                        was_m = match(ev.prev) if ev.prev is not None else now_m
                        etype = ("MODIFIED" if was_m else "ADDED") if now_m else ("DELETED" if was_m else "")
                    elif not match(ev.obj):
                        etype = ""
                    if etype:
                        await send(etype, ev.obj)
                now = loop.time()
                if bookmarks and now >= next_bookmark:
                    await send("BOOKMARK", {"kind": res.kind, "apiVersion": res.group_version,
                                            "metadata": {"resourceVersion": str(last)}})
                    next_bookmark = now + self.bookmark_interval_s
                if drop_gen != self.faults.generation:  # faults configured since this watch started
                    drop_gen, drop_at = self.faults.generation, self.faults.watch_drop_deadline(now)
                if drop_at is not None and now >= drop_at:
                    self.faults.injected["drop_watch"] += 1
                    if request.transport is not None:
                        request.transport.abort()
                    raise ConnectionResetError("kubesim fault injection: watch stream dropped")
                if now >= deadline:
                    break
                wake = min(deadline, next_bookmark) if bookmarks else deadline
                wake = min(wake, drop_at) if drop_at is not None else wake
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), timeout=max(0.0, wake - now))
            await resp.write_eof()
        except ConnectionResetError:
            log.debug("watch client went away")
        return resp

    # ------------------------------------------------------------------ control API

    def status(self) -> dict:
        st = self.cluster.status()
        st.update({"speed": self.speed, "paused": self.paused, "url": self.url,
                   "watch_history": {"events": len(self.events.events), "compacted_rv": self.events.compacted_rv,
                                     "max_events": self.events.max_events}})
        return st

    async def _ctl_status(self, request: web.Request) -> web.Response:
        return _json(self.status())

    async def _ctl_truth(self, request: web.Request) -> web.Response:
        """Interference ground truth (control API only; never served through the Kubernetes API)."""
        return _json(self.cluster.truth)

    async def _ctl_clock(self, request: web.Request) -> web.Response:
        body = await self._body(request) or {}
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "expected a JSON object")
        if "pause" in body:
            self.paused = bool(body["pause"])
        if "speed" in body:
            try:
                speed = float(body["speed"])
            except (TypeError, ValueError):
                raise ApiError(400, "BadRequest", "speed must be a number") from None
            if speed < 0:
                raise ApiError(400, "BadRequest", "speed must be >= 0")
            self.speed = speed
        if "advance_s" in body:
            try:
                secs = float(body["advance_s"])
            except (TypeError, ValueError):
                raise ApiError(400, "BadRequest", "advance_s must be a number") from None
            if secs < 0:
                raise ApiError(400, "BadRequest", "advance_s must be >= 0")
            self.cluster.advance(secs)
        return _json({"virtual_time": self.cluster.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "virtual_ts": self.cluster.t, "tick": self.cluster.tick, "speed": self.speed,
                      "paused": self.paused})

    async def _ctl_compact(self, request: web.Request) -> web.Response:
        body = await self._body(request) or {}
        keep = int(body.get("keep", 0)) if isinstance(body, dict) else 0
        rv = self.compact(keep)
        return _json({"compacted_rv": rv, "resource_version": self.cluster.rv})

    async def _ctl_faults(self, request: web.Request) -> web.Response:
        """GET: the fault injection configuration and counts; POST: replace the configuration."""
        if request.method == "POST":
            body = await self._body(request)
            try:
                self.faults.configure(body if body is not None else {})
            except ValueError as e:
                raise ApiError(400, "BadRequest", str(e)) from None
            log.info("fault injection: %s", self.faults.config())
        return _json(self.faults.snapshot())
